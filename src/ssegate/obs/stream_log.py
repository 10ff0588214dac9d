"""One log line per stream at ``info``, when it ends (never per token), and one at its start at ``debug``: a
``core.outcome.Observer``.

The end line carries the model asked for, the caller (a key fingerprint), the outcome (``done``,
``cancelled:<reason>``, ``error:<code>``), the parts relayed, the time to the first output, the duration, the
upstream attempts, and who answered: ``model_entry`` (the routing file's name of the model, wildcards as written,
``*`` without a file) and ``deployment`` (its label, never its key): an access log for streams. The start line
(``debug``) adds the request's size; with ``SSEGATE_LOG_PROMPTS=1`` it is logged at ``info`` and carries the
prompt's text. A log line costs ~30k instructions (``python -m bench.callgrind`` at ``info`` and at ``warning``:
600k and 570k a short stream), so one per stream at ``info``, not two.

Where every handler the line reaches (by the logging module's rules: levels, ``propagate``) is a plain
``StreamHandler`` without filters and with ``JSONFormatter`` (``ssegate serve``'s, to stderr), no record is
made: ``JSONFormatter.line`` makes the line from the fields a record would carry, the same line its ``format``
makes of the record (``tests/test_stream_log.py``), and it is written here, compiled, as the handler would
(``_write_lines``; a record is made only for ``handleError``). That halved the line's cost (52k instructions
before): a record, and reading its ``extra`` back out of it, were half of it. With any other handler or
formatter, a record goes to the logging module's rules (``_handle``), a plain ``StreamHandler`` still written
to here, any other handler through its own ``handle``.

The end line's record is a copy of one the logging module made for this logger, level and message in this
process (``logging.makeRecord``, once), with its time set now and the stream's fields added: ~30% of the line's
cost was making a fresh record whose source, thread and process fields are the same every time. Filters,
handlers and formatters get an ordinary ``LogRecord``; a custom record factory or logger class gets records
made the ordinary way; on Python 3.12+ the copy names the task it was logged from, as a fresh record does.
Where the logging module collects sources (``logging._srcfile``; ``ssegate serve`` turns it off), the record names
this module's source file and the method, at line 0: the module is compiled (``make compile``), and compiled code
has no frames for ``findCaller`` to read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Final

from ..core.outcome import Outcome, Started
from ..core.request import message_text
from .logs import JSONFormatter

__all__ = ["StreamLogger"]

stream_log: Final = logging.getLogger("ssegate.stream")

_templates: Final[dict[tuple[int, str], dict[str, Any]]] = {}
"""Records made the ordinary way once, by level and message: what a copy starts from (this process's only)."""
os.register_at_fork(after_in_child=_templates.clear)


_SOURCE: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_log.py")
"""This module's source file, which the end line's record names (the module docstring)."""


def _log(level: int, msg: str, extra: dict[str, Any], func: str) -> None:
    """``stream_log.log(level, msg, extra=extra)``: the JSON line written without a record where that is all the
    handlers would make of one, else the record copied from a template (the module's docstring)."""
    if (logging.getLogRecordFactory() is not logging.LogRecord
            or type(stream_log).makeRecord is not logging.Logger.makeRecord):
        stream_log.log(level, msg, extra=extra)
        return
    plain = _json_handlers(level)
    if plain is not None:
        _write_lines(plain, level, msg, extra, func)
        return
    _handle(_record(level, msg, extra, func))


def _record(level: int, msg: str, extra: dict[str, Any], func: str) -> logging.LogRecord:
    """The record ``stream_log.log(level, msg, extra=extra)`` makes, copied from a template."""
    template = _templates.get((level, msg))
    if template is None:  # where it was made: this module and ``func``, unless sources are not collected
        where = (_SOURCE, 0, func) if logging._srcfile else ("(unknown file)", 0, "(unknown function)")
        made = stream_log.makeRecord(stream_log.name, level, where[0], where[1], msg, (), None, where[2])
        template = _templates[(level, msg)] = dict(made.__dict__)
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__ = fields = template.copy()  # (a copy of a dict: a third of updating an empty one from it)
    now = time.time()
    fields["created"] = now
    fields["msecs"] = float(int((now - int(now)) * 1000))
    fields["relativeCreated"] = template["relativeCreated"] + (now - template["created"]) * 1000
    if "taskName" in template and getattr(logging, "logAsyncioTasks", False):  # Python 3.12+: the task logging it
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no loop running
            task = None
        fields["taskName"] = task.get_name() if task is not None else None
    fields.update(extra)
    return record


def _json_handlers(level: int) -> list[logging.StreamHandler[Any]] | None:
    """The handlers a line at ``level`` goes to, when each is a plain ``StreamHandler`` (no filters) with
    ``JSONFormatter`` (``ssegate serve``'s) and the logger has no filter or class of its own; else None."""
    logger = stream_log
    if logger.disabled or logger.filters or (type(logger).handle, type(logger).callHandlers) != _STOCK:
        return None
    out: list[logging.StreamHandler[Any]] = []
    found = 0
    c: logging.Logger | None = logger
    while c is not None:
        for handler in c.handlers:
            found += 1
            if level >= handler.level:
                if (type(handler) is not logging.StreamHandler or handler.filters
                        or type(handler.formatter) is not JSONFormatter):
                    return None
                out.append(handler)
        c = c.parent if c.propagate else None
    return out if found else None  # (none at all: the logging module's last resort, which needs a record)


def _write_lines(handlers: list[logging.StreamHandler[Any]], level: int, msg: str, extra: dict[str, Any],
                 func: str) -> None:
    """``_emit`` for each of ``handlers`` (``_json_handlers``'), the line made by ``JSONFormatter.line`` from the
    fields a record would carry; a record is made only for ``handleError``, if a write fails."""
    now = time.time()
    levelname = logging.getLevelName(level)
    name = stream_log.name
    for handler in handlers:
        formatter: Any = handler.formatter
        lock = handler.lock
        if lock:
            lock.acquire()
        try:
            stream: Any = handler.stream
            stream.write(formatter.line(now, levelname, name, msg, extra) + handler.terminator)
            if stream and hasattr(stream, "flush"):
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            handler.handleError(_record(level, msg, extra, func))
        finally:
            if lock:
                lock.release()


_STOCK: Final = (logging.Logger.handle, logging.Logger.callHandlers)


def _handle(record: logging.LogRecord) -> None:
    """``stream_log.handle(record)``, with a plain ``StreamHandler`` (``ssegate serve``'s: stderr) written to here,
    compiled, as its ``handle`` would; any other handler, a filter on the logger or a logger class of its own
    goes the logging module's way."""
    logger = stream_log
    if (logger.disabled or logger.filters
            or (type(logger).handle, type(logger).callHandlers) != _STOCK):
        logger.handle(record)
        return
    level = record.levelno
    found = 0
    c: logging.Logger | None = logger
    while c is not None:
        for handler in c.handlers:
            found += 1
            if level >= handler.level:
                if type(handler) is logging.StreamHandler and not handler.filters:
                    _emit(handler, record)
                else:
                    handler.handle(record)
        c = c.parent if c.propagate else None
    if not found:  # the logging module's last resort, or its warning that there is no handler
        logger.callHandlers(record)


def _emit(handler: logging.StreamHandler[Any], record: logging.LogRecord) -> None:
    """``StreamHandler.handle(record)`` of a handler without filters: its lock, its format, one write, a flush."""
    lock = handler.lock
    if lock:
        lock.acquire()
    try:
        formatter = handler.formatter or logging._defaultFormatter  # type: ignore[attr-defined]
        stream: Any = handler.stream
        stream.write(formatter.format(record) + handler.terminator)
        if stream and hasattr(stream, "flush"):
            stream.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(record)
    finally:
        if lock:
            lock.release()


def _enabled(level: int) -> bool:
    """``stream_log.isEnabledFor(level)`` from the logger's own cache when it has the answer."""
    if stream_log.disabled:
        return False
    cache: dict[int, bool] | None = getattr(stream_log, "_cache", None)
    known = cache.get(level) if cache is not None else None
    return stream_log.isEnabledFor(level) if known is None else known


class StreamLogger:
    def __init__(self, log_prompts: bool = False) -> None:
        self.log_prompts = log_prompts

    def started(self, started: Started) -> None:
        level = logging.INFO if self.log_prompts else logging.DEBUG  # an operator who asked for prompts gets them
        if not _enabled(level):
            return
        request = started.request
        extra: dict[str, Any] = {
            "stream_id": started.stream_id,
            "model": request.model,
            "owner": started.owner,
            "messages": len(request.messages),
            "prompt_chars": sum(len(message_text(m)) for m in request.messages),
        }
        if request.tools:
            extra["tools"] = len(request.tools)
        if self.log_prompts:
            extra["prompt"] = request.prompt_text
        stream_log.log(level, "stream started", extra=extra)

    def ended(self, outcome: Outcome) -> None:
        if not _enabled(logging.INFO):
            return
        extra: dict[str, Any] = {
            "stream_id": outcome.stream_id,
            "model": outcome.model,
            "owner": outcome.owner,
            "outcome": outcome.cause,
            "tokens": outcome.outputs,
            "duration_ms": round(outcome.duration_s * 1000),
            "upstream_attempts": outcome.upstream_attempts,
        }
        if outcome.deployment:
            extra["model_entry"] = outcome.model_entry
            extra["deployment"] = outcome.deployment
        if outcome.ttft_s is not None:
            extra["ttft_ms"] = round(outcome.ttft_s * 1000)
        if outcome.error is not None:
            extra["error"] = outcome.error
        _log(logging.INFO, "stream ended", extra, "ended")
