"""The Server-Sent Events wire format: encoding ssegate's events and parsing anybody's.

Encoding is on the hot path (one token in, one event out), so it works on bytes with ``orjson``: every
``data:`` payload is one line of JSON, which escapes CR and LF, so model output can never break the framing
or forge an event. Ids are ``<stream_id>:<seq>``.

``SSEDecoder`` is an incremental, spec-correct parser (WHATWG HTML §9.2.6): CR, LF and CRLF line ends,
also split across chunks, multi-line ``data``, comments, ``id``, ``event`` and ``retry`` fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "PING",
    "SSEDecoder",
    "ServerSentEvent",
    "dumps",
    "encode",
    "encode_delta",
    "retry_field",
    "split_event_id",
]

PING: Final = b": ping\n\n"

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_dumps: Final = orjson.dumps
_loads: Final = orjson.loads


def dumps(obj: Any) -> bytes:
    """One line of JSON. Lone surrogates (which UTF-8 cannot carry) become U+FFFD instead of failing."""
    try:
        return _dumps(obj)
    except TypeError:
        return _dumps(_scrub(obj))


def scrub_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _scrub(obj: Any) -> Any:
    if isinstance(obj, str):
        return scrub_text(obj)
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    return obj


def retry_field(ms: int) -> bytes:
    return b"retry: %d\n" % ms


def encode(prefix: bytes, seq: int, event: bytes | None, data: bytes) -> bytes:
    """``id: <prefix><seq>`` (prefix is ``b"<stream_id>:"``), optional ``event:``, one ``data:`` line."""
    if event is None:
        return b"id: %s%d\ndata: %s\n\n" % (prefix, seq, data)
    return b"id: %s%d\nevent: %s\ndata: %s\n\n" % (prefix, seq, event, data)


def encode_delta(prefix: bytes, seq: int, text: str) -> bytes:
    return b"id: %s%d\ndata: %s\n\n" % (prefix, seq, dumps({"delta": text}))


def split_event_id(value: str) -> tuple[str, int] | None:
    """``"<stream_id>:<seq>"`` → ``(stream_id, seq)``; ``None`` for anything else."""
    sid, sep, seq = value.rpartition(":")
    if not sep or not sid or not (seq.isascii() and seq.isdigit()) or len(seq) > 12 or len(sid) > 128:
        return None
    return sid, int(seq)


@dataclass(slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None
    retry: int | None

    def __init__(self, event: str = "message", data: str = "", id: str | None = None,
                 retry: int | None = None) -> None:
        # written out: mypyc compiles it, where @dataclass's own would run in the interpreter (one per event read)
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def json(self) -> Any:
        return _loads(self.data)


class SSEDecoder:
    """Feed it text (or bytes, decoded as UTF-8 incrementally); it yields complete events."""

    __slots__ = ("_buf", "_data", "_event", "_last_id", "_pending_cr", "_retry", "_started", "comments")

    def __init__(self) -> None:
        self._buf = ""
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._started = False
        self.comments = 0

    @property
    def last_event_id(self) -> str | None:
        return self._last_id

    def feed(self, chunk: str) -> Iterator[ServerSentEvent]:
        if not chunk:
            return
        if not self._started:
            self._started = True
            if chunk[0] == "\ufeff":
                chunk = chunk[1:]
        if self._pending_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        buf = self._buf + chunk
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            else:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == "\n" else cr + 1
                else:
                    nxt = cr + 1
                    self._pending_cr = True
            event = self._line(buf[start:end])
            start = nxt
            if event is not None:
                yield event
        self._buf = buf[start:]

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            ev = ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id, self._retry)
            self._data = []
            self._event = ""
            return ev
        if line[0] == ":":
            self.comments += 1
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():  # ASCII digits only, as the spec says ("²".isdigit())
                self._retry = int(value)
        return None
