"""Structured logs: one JSON object per line on stderr, for the gateway's and the server's (uvicorn's) loggers.

Every line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, and whatever the call passed as
``extra``. Lines logged from inside a generation's task carry its ``stream_id`` without being told (the task is
named after the stream). Each stream logs two lines at ``info`` (``stream_log.py``), once at its start and once at
its end (never per token)::

    {"ts": "...", "level": "info", "logger": "ssegate.stream", "msg": "stream started", "stream_id": "...",
     "model": "...", "owner": "key:1f2e...", "messages": 1, "prompt_chars": 42}
    {"ts": "...", "level": "info", "logger": "ssegate.stream", "msg": "stream ended", "stream_id": "...",
     "outcome": "done", "tokens": 87, "ttft_ms": 312, "duration_ms": 2450, "upstream_attempts": 1}

Prompt text is logged (``"prompt"``) only with ``SSEGATE_LOG_PROMPTS=1``. API keys are never logged: callers
are named by a fingerprint (``auth.fingerprint``), and as a safety net every configured client and upstream key
is replaced by ``[redacted]`` in any line that would contain it (the routing file's keys too: ``redact_also``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JSONFormatter", "log_config", "redact_also"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}
_TASK_PREFIX = "ssegate-gen-"
REDACTED = "[redacted]"
_also: list[str] = []


def redact_also(secrets: list[str]) -> None:
    """Keys read from elsewhere than the environment names above (the routing file's): redacted from now on."""
    found = {s for s in secrets if len(s) >= 8} | set(_also)
    _also[:] = sorted(found, key=len, reverse=True)


def _secrets_from_env() -> list[str]:
    """The keys that must never appear in a log line (read from the environment, as the settings are)."""
    found: list[str] = []
    for name in ("SSEGATE_API_KEYS", "SSEGATE_UPSTREAM_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                 "SSEGATE_TOKEN_SECRET"):
        found += [k.strip() for k in os.environ.get(name, "").split(",") if len(k.strip()) >= 8]
    return sorted(set(found), key=len, reverse=True)


def _current_stream_id() -> str | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    if task is None:
        return None
    name = task.get_name()
    return name[len(_TASK_PREFIX) :] if name.startswith(_TASK_PREFIX) else None


class JSONFormatter(logging.Formatter):
    def __init__(self, redact: list[str] | None = None) -> None:
        super().__init__()
        self.redact = _secrets_from_env() if redact is None else redact

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if "stream_id" not in out:
            sid = _current_stream_id()
            if sid is not None:
                out["stream_id"] = sid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(out, default=str).decode()
        for secret in (*self.redact, *_also) if _also else self.redact:
            if secret in line:
                line = line.replace(secret, REDACTED)
        return line


def log_config(level: str) -> dict[str, Any]:
    """``logging.config.dictConfig`` for ``ssegate serve`` (uvicorn's ``log_config``): JSON lines on stderr."""
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "ssegate": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            "uvicorn.access": {"handlers": ["stderr"], "level": lvl, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
