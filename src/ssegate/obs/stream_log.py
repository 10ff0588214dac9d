"""One log line per stream at ``info``, when it ends (never per token), and one at its start at ``debug``: a
``core.outcome.Observer``.

The end line carries the model asked for, the caller (a key fingerprint), the outcome (``done``,
``cancelled:<reason>``, ``error:<code>``), the parts relayed, the time to the first output, the duration, the
upstream attempts, and who answered: ``model_entry`` (the routing file's name of the model, wildcards as written,
``*`` without a file) and ``deployment`` (its label, never its key): an access log for streams. The start line
(``debug``) adds the request's size; with ``SSEGATE_LOG_PROMPTS=1`` it is logged at ``info`` and carries the
prompt's text. A log line costs ~23k instructions (``python -m bench.callgrind`` at ``info`` and at ``warning``:
392k and 369k a short stream), so one per stream at ``info``, not two.

Where every handler the line reaches (by the logging module's rules: levels, ``propagate``) is a plain
``StreamHandler`` without filters and with ``JSONFormatter`` (``ssegate serve``'s, to stderr), no record is made:
the formatter's ``line`` (``logs.json_line``) makes the line from the fields a record would carry, the same line its
``format`` makes of the record (``tests/test_stream_log.py``), and it is written here, compiled, as the handler
would (``_emit``; a record is made only for ``handleError``). That halved the line's cost (52k instructions before):
a record, and reading its ``extra`` back out of it, were half of it. With any other handler or formatter among them,
a record: a plain ``StreamHandler`` is still written to here, any other handler through its own ``handle``; a logger
the logging module must decide for (disabled, filtered, of a class of its own, without handlers) gets it through
``handle``. One walk of the handlers (``_reached``) serves both.

Those record-less lines, logged in a running event loop, are written together: each handler's lines of one pass of
the loop go out at its next pass, in one write and one flush (``_Pass``), instead of a write and a flush each (~4k
instructions and a system call a stream; in a burst, many streams end in one pass). A line reaches its stream a pass
later, and after what other loggers wrote in that pass; lines whose loop never ran again are written at the
interpreter's exit. Outside a loop, and through records, each line is written at once.

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
import atexit
import logging
import os
import time
from typing import Any, Final, TypeGuard, cast

from ..core.outcome import Outcome, Started
from ..core.per_loop import kept
from ..core.request import message_text
from .logs import JSONFormatter, json_line

__all__ = ["StreamLogger"]

stream_log: Final = logging.getLogger("ssegate.stream")

_templates: Final[dict[tuple[int, str], dict[str, Any]]] = {}
"""Records made the ordinary way once, by level and message: what a copy starts from (this process's only)."""
os.register_at_fork(after_in_child=_templates.clear)


_SOURCE: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stream_log.py")
"""This module's source file, which the end line's record names (the module docstring)."""

# (the logging module's names kept as C statics: compiled code looks up a module's attribute by name at each use)
_LOGGING: Final[dict[str, Any]] = vars(logging)
"""The logging module's globals: its record factory and level names read here without a call of its (interpreted)
``getLogRecordFactory`` and ``getLevelName`` per line; a name missing (another Python) reads as a custom factory,
which takes the logging module's own path."""
_LogRecord: Final = logging.LogRecord
_MAKE_RECORD: Final = logging.Logger.makeRecord
_StreamHandler: Final = logging.StreamHandler
_level_name: Final = logging.getLevelName
_NO_NAMES: Final[dict[int, str]] = {}
_now: Final = time.time
_get_running_loop: Final = asyncio._get_running_loop


def _log(level: int, msg: str, extra: dict[str, Any], func: str) -> None:
    """``stream_log.log(level, msg, extra=extra)``: the JSON line written without a record where that is all the
    handlers would make of one, else the record copied from a template (the module's docstring)."""
    if _LOGGING.get("_logRecordFactory") is not _LogRecord or type(stream_log).makeRecord is not _MAKE_RECORD:
        stream_log.log(level, msg, extra=extra)
        return
    handlers = _reached(level)
    if handlers is None:
        stream_log.handle(_record(level, msg, extra, func))
        return
    if all(_plain(h) and type(h.formatter) is JSONFormatter for h in handlers):
        now = _now()
        loop = _get_running_loop()
        for handler in handlers:
            plain = cast(logging.StreamHandler[Any], handler)
            if loop is None:
                _emit(plain, None, now, level, msg, extra, func)
            else:  # written with the other lines of this pass of the loop, at its next pass
                _pass_of(loop).add(loop, plain, _json_line(plain, now, level, msg, extra))
        return
    record = _record(level, msg, extra, func)
    for handler in handlers:
        if _plain(handler):
            _emit(handler, record, record.created, level, msg, extra, func)
        else:
            handler.handle(record)


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


_STOCK: Final = (logging.Logger.handle, logging.Logger.callHandlers)


def _reached(level: int) -> list[logging.Handler] | None:
    """The handlers a line at ``level`` reaches by the logging module's rules (each one's level, ``propagate``),
    or None where the logging module must decide: a disabled logger, a filter on it, a logger class of its own,
    or no handler at all (its last resort, or its warning that there is none)."""
    logger = stream_log
    if logger.disabled or logger.filters or (type(logger).handle, type(logger).callHandlers) != _STOCK:
        return None
    out: list[logging.Handler] = []
    found = 0
    c: logging.Logger | None = logger
    while c is not None:
        for handler in c.handlers:
            found += 1
            if level >= handler.level:
                out.append(handler)
        c = c.parent if c.propagate else None
    return out if found else None


def _plain(handler: logging.Handler) -> TypeGuard[logging.StreamHandler[Any]]:
    """A ``StreamHandler`` without filters: written to here (``_emit``) as its ``handle`` would."""
    return type(handler) is _StreamHandler and not handler.filters


def _emit(handler: logging.StreamHandler[Any], record: logging.LogRecord | None, now: float, level: int, msg: str,
          extra: dict[str, Any], func: str) -> None:
    """``StreamHandler.handle`` of a plain handler: its lock, the line, one write, a flush. The line is its
    formatter's of ``record`` or, without one, ``JSONFormatter.line`` of the fields a record would carry (a
    record is then made only for ``handleError``, if the write fails)."""
    lock = handler.lock
    if lock:
        lock.acquire()
    try:
        if record is None:
            line = _json_line(handler, now, level, msg, extra)
        else:
            formatter: Any = handler.formatter
            line = (formatter or logging._defaultFormatter).format(record)  # type: ignore[attr-defined]
        stream: Any = handler.stream
        stream.write(line + handler.terminator)
        if stream and hasattr(stream, "flush"):
            stream.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(record if record is not None else _record(level, msg, extra, func))
    finally:
        if lock:
            lock.release()


def _json_line(handler: logging.StreamHandler[Any], now: float, level: int, msg: str, extra: dict[str, Any]) -> str:
    """The line of a handler whose formatter is a ``JSONFormatter``, made from the fields a record would carry."""
    name = _LOGGING.get("_levelToName", _NO_NAMES).get(level)
    return json_line(cast(JSONFormatter, handler.formatter), now, name if name is not None else _level_name(level),
                     stream_log.name, msg, extra)


class _Pass:
    """The lines of one pass of one event loop, by handler: each handler's are written at the loop's next pass, in
    one write and one flush (a line each, then a write each, was ~4k instructions and a system call a stream)."""

    __slots__ = ("handlers", "lines")

    def __init__(self) -> None:  # (kept per loop, which ``per_loop`` holds weakly: no reference to it here)
        self.handlers: list[logging.StreamHandler[Any]] = []
        self.lines: list[list[str]] = []

    def add(self, loop: asyncio.AbstractEventLoop, handler: logging.StreamHandler[Any], line: str) -> None:
        """``line`` for ``handler``, written at ``loop``'s next pass (this pass's ``_Pass``)."""
        handlers = self.handlers
        if not handlers:
            loop.call_soon(self.write)
            _unwritten.add(self)
        for i in range(len(handlers)):
            if handlers[i] is handler:
                self.lines[i].append(line)
                return
        handlers.append(handler)
        self.lines.append([line])

    def write(self) -> None:
        """Each handler's lines, in one write and one flush (the loop's next pass, or the interpreter's exit)."""
        handlers, lines = self.handlers, self.lines
        self.handlers, self.lines = [], []
        _unwritten.discard(self)
        for i in range(len(handlers)):
            handler = handlers[i]
            _write(handler, handler.terminator.join(lines[i]) + handler.terminator)


def _write(handler: logging.StreamHandler[Any], text: str) -> None:
    """``StreamHandler.emit``'s write of ``text`` (lines), under the handler's lock."""
    lock = handler.lock
    if lock:
        lock.acquire()
    try:
        stream: Any = handler.stream
        stream.write(text)
        if stream and hasattr(stream, "flush"):
            stream.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(logging.makeLogRecord({"name": stream_log.name, "msg": text.rstrip("\n")}))
    finally:
        if lock:
            lock.release()


_unwritten: Final[set[_Pass]] = set()
"""The passes with lines not yet written: written at the interpreter's exit if their loop never ran again."""


def _pass_of(loop: asyncio.AbstractEventLoop) -> _Pass:
    objects = kept(loop)
    found = objects.get(_Pass)
    if found is None:
        found = objects[_Pass] = _Pass()
    return cast(_Pass, found)


def _write_unwritten() -> None:
    for unwritten in list(_unwritten):
        unwritten.write()


atexit.register(_write_unwritten)
os.register_at_fork(after_in_child=_unwritten.clear)


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
            "duration_ms": int(outcome.duration_s * 1000 + 0.5),  # (rounded: ``round`` is a call by name, compiled)
            "upstream_attempts": outcome.upstream_attempts,
        }
        if outcome.deployment:
            extra["model_entry"] = outcome.model_entry
            extra["deployment"] = outcome.deployment
        ttft = outcome.ttft_s
        if ttft is not None:
            extra["ttft_ms"] = int(ttft * 1000 + 0.5)
        if outcome.error is not None:
            extra["error"] = outcome.error
        _log(logging.INFO, "stream ended", extra, "ended")
