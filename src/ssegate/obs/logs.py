"""Logs on stderr, for the gateway's and the server's (uvicorn's) loggers: JSON lines, or human text on a terminal.

``SSEGATE_LOG_FORMAT`` (``ssegate serve --log-format``) picks the format: ``json`` (one object per line, for log
collectors), ``text`` (one short line per event, for people), or ``auto`` (the default): text when stderr is a
terminal, else JSON. Both carry the same fields.

A JSON line has ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, and whatever the call passed as
``extra``. Lines logged from inside a generation's task carry its ``stream_id`` without being told (the task is
named after the stream). Each stream logs one line at ``info`` when it ends (``stream_log.py``; with ``debug``, one
more at its start), never one per token::

    {"ts": "...", "level": "info", "logger": "ssegate.stream", "msg": "stream ended", "stream_id": "...",
     "model": "...", "owner": "key:1f2e...", "outcome": "done", "tokens": 87, "duration_ms": 2450,
     "upstream_attempts": 1, "ttft_ms": 312}

The same as text (local time; ``stream_id`` shortened to ``id``; values with spaces are JSON strings)::

    12:00:03 INFO stream ended id=... model=ssegate-demo owner=anonymous outcome=done tokens=87 duration_ms=2450
    upstream_attempts=1 ttft_ms=312

Prompt text is logged (``"prompt"``) only with ``SSEGATE_LOG_PROMPTS=1``. API keys are never logged: callers
are named by a fingerprint (``auth.fingerprint``, an HMAC under the server secret), and as a safety net every
configured client and upstream key, and the token secret, is replaced by ``[redacted]`` in any line of either
format that would contain it (the routing file's keys too: ``redact_also``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = ["JSONFormatter", "TextFormatter", "json_line", "log_config", "redact_also"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_dumps: Final = orjson.dumps

_STANDARD: Final = (frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
                    | {"message", "asctime", "color_message"})
_TASK_PREFIX: Final = "ssegate-gen-"
REDACTED: Final = "[redacted]"
_also: Final[list[str]] = []


def redact_also(secrets: list[str]) -> None:
    """Keys read from elsewhere than the environment names above (the routing file's): redacted from now on."""
    found = {s for s in secrets if len(s) >= 8} | set(_also)
    _also[:] = sorted(found, key=len, reverse=True)


def _secrets_from_env() -> list[str]:
    """The keys that must never appear in a log line (read from the environment, as the settings are)."""
    found: list[str] = []
    for name in ("SSEGATE_API_KEYS", "SSEGATE_UPSTREAM_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        found += [k.strip() for k in os.environ.get(name, "").split(",") if len(k.strip()) >= 8]
    secret = os.environ.get("SSEGATE_TOKEN_SECRET", "")
    if len(secret) >= 8:
        found.append(secret)
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


_MILLIS: Final = tuple(f".{ms:03d}+00:00" for ms in range(1000))
"""A timestamp's end by its milliseconds (formatting them per line was a sixth of the JSON formatter's cost)."""

_LATE: Final = frozenset({"message", "asctime", "color_message"})
"""Standard attributes a formatter adds to a record after it was made (so after its ``extra``)."""
_MADE: Final = _STANDARD - _LATE
"""Standard attributes a record has when made (so before its ``extra``)."""


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    """What the call passed as ``extra``.

    A record's ``extra`` is set after its standard attributes, so its keys are the last ones (before anything a
    formatter or filter added later): they are read from the end, back to the first standard attribute, instead
    of testing every attribute of the record."""
    attrs = record.__dict__
    keys = list(attrs)
    first = len(keys)
    while first > 0 and keys[first - 1] not in _MADE:
        first -= 1
    return {key: attrs[key] for key in keys[first:] if key not in _LATE and not key.startswith("_")}


def _add_stream_id(out: dict[str, Any], extra: dict[str, Any]) -> None:
    """The ``stream_id`` of the generation the line is logged from, when ``extra`` does not name one."""
    if "stream_id" not in extra:
        sid = _current_stream_id()
        if sid is not None:
            out["stream_id"] = sid


def _redact(line: str, secrets: list[str]) -> str:
    for secret in (*secrets, *_also) if _also else secrets:
        if secret in line:
            line = line.replace(secret, REDACTED)
    return line


class _Stamps:
    """A line's timestamp: ISO 8601 in UTC with milliseconds, the part down to the second made once a second (kept
    as one pair, replaced whole: a formatter may write from several threads)."""

    def __init__(self) -> None:
        self.memo: tuple[int, str] = (-1, "")

    def of(self, created: float) -> str:
        second = int(created)
        memo = self.memo
        if memo[0] != second:
            memo = self.memo = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        return memo[1] + _MILLIS[int((created - second) * 1000)]


_STAMPS: Final = _Stamps()

_OPEN: Final = '{"ts":"'
"""Every line's first text: its timestamp follows (a timestamp needs no escaping)."""
_heads: Final[dict[tuple[str, str, str], str]] = {}
"""The text of a line from its timestamp to its fields, by level, logger and message (bounded)."""


def _head(levelname: str, logger: str, msg: str) -> str:
    """``","level":...,"logger":...,"msg":...,``: the text between a line's timestamp and its fields, kept for the
    next line of the same level, logger and message."""
    made = _dumps({"ts": "", "level": levelname.lower(), "logger": logger, "msg": msg}).decode()
    head = made[len(_OPEN):-1] + ","
    if len(_heads) < 256:  # (messages are constants, but a caller's may not be)
        _heads[(levelname, logger, msg)] = head
    return head


class JSONFormatter(logging.Formatter):
    def __init__(self, redact: list[str] | None = None) -> None:
        super().__init__()
        self.redact = _secrets_from_env() if redact is None else redact

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.created, record.levelname, record.name,
                         record.msg if not record.args and type(record.msg) is str else record.getMessage(),
                         _extra(record), self.formatException(record.exc_info) if record.exc_info else None)

    def line(self, created: float, levelname: str, logger: str, msg: str, extra: dict[str, Any],
             exc: str | None = None) -> str:
        """The line of a record with these fields (``json_line``)."""
        return json_line(self, created, levelname, logger, msg, extra, exc)


def json_line(formatter: JSONFormatter, created: float, levelname: str, logger: str, msg: str,
              extra: dict[str, Any], exc: str | None = None) -> str:
    """``formatter``'s line of a record with these fields: its ``format``'s, and ``stream_log.py``'s, which has no
    record to give when every handler its line goes to is a plain one with this formatter (and calls this
    function, compiled, rather than the method: ~1k instructions a line).

    Most lines (``stream ended``'s: one a stream) name their stream and have fields of their own and none of the
    four first keys: they are the timestamp, the text kept for their level, logger and message (``_head``),
    then the fields as one JSON object without its brace, instead of one object of them all. The text is the same
    either way (``tests/test_logs.py``)."""
    ts = _STAMPS.of(created)
    if exc is None and extra and "stream_id" in extra and "ts" not in extra and "level" not in extra \
            and "logger" not in extra and "msg" not in extra:
        head = _heads.get((levelname, logger, msg))
        if head is None:
            head = _head(levelname, logger, msg)
        body: str = _dumps(extra, default=str).decode()
        return _redact(_OPEN + ts + head + body[1:], formatter.redact)
    out: dict[str, Any] = {"ts": ts, "level": levelname.lower(), "logger": logger, "msg": msg}
    out.update(extra)
    _add_stream_id(out, extra)
    if exc is not None:
        out["exc"] = exc
    return _redact(_dumps(out, default=str).decode(), formatter.redact)


_LEVEL_COLORS: Final = {"DEBUG": "\x1b[2m", "WARNING": "\x1b[33m", "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
_RESET: Final = "\x1b[0m"


def _text_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    if isinstance(value, (int, float)):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if text and not any(c.isspace() or c in '"=\\' for c in text) and text.isprintable():
        return text
    return orjson.dumps(text).decode()


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO stream ended id=... outcome=done tokens=87 ttft_ms=312``: local time, level, message, then
    the fields as ``key=value``; the level in colour when ``colors``."""

    def __init__(self, redact: list[str] | None = None, colors: bool = False) -> None:
        super().__init__()
        self.redact = _secrets_from_env() if redact is None else redact
        self.colors = colors

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname
        if self.colors and level in _LEVEL_COLORS:
            level = _LEVEL_COLORS[level] + level + _RESET
        parts = [time.strftime("%H:%M:%S", time.localtime(record.created)), level, record.getMessage()]
        fields = _extra(record)
        _add_stream_id(fields, fields)
        for key, value in fields.items():
            parts.append(f"{'id' if key == 'stream_id' else key}={_text_value(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _redact(line, self.redact)


def log_config(level: str, fmt: str = "json", *, colors: bool = False) -> dict[str, Any]:
    """``logging.config.dictConfig`` for ``ssegate serve`` (uvicorn's ``log_config``): ``fmt`` ``json`` or ``text``
    (resolved from ``auto`` by the caller, who knows whether stderr is a terminal) on stderr."""
    lvl = level.upper()
    formatter: dict[str, Any] = {"()": JSONFormatter} if fmt == "json" else {"()": TextFormatter, "colors": colors}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}},
        "loggers": {
            "ssegate": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            "uvicorn.access": {"handlers": ["stderr"], "level": lvl, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
