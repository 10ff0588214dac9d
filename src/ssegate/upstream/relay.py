"""The upstream connections remote providers share, and a fast reader of upstream event streams.

One ``wire.Pool`` per process carries the built-in providers' requests: its connections hand each network
read of a body to the provider's parser inside the event loop's callback (no task switch per token; see
``wire.py`` and docs/benchmarks.md). ``EventSplitter`` splits an upstream ``text/event-stream`` body into
``(event, data)`` pairs at the byte level, without building an object per line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson

from ..errors import UpstreamProtocolError, upstream_status_error
from .base import ChatRequest, map_upstream_errors
from .httpclient import Pool, Response

__all__ = [
    "MAX_LINE",
    "EventReader",
    "EventSplitter",
    "UpstreamSession",
    "check_models",
    "open_stream",
    "pulled",
    "relay",
    "relay_body",
    "unset_emit",
]

MAX_LINE = 8 << 20
"""Longest upstream SSE line accepted: a bound on what one endless line can make the gateway buffer."""


class UpstreamSession:
    """The process's upstream connections: one keep-alive ``Pool`` for every provider."""

    def __init__(self, *, limit: int = 0, connect_timeout: float = 10.0) -> None:
        self.pool = Pool(limit=limit, connect_timeout=connect_timeout)

    async def aclose(self) -> None:
        await self.pool.aclose()


class EventSplitter:
    """Splits an SSE body into ``(event_name, data)`` pairs chunk by chunk (``event_name`` is b"" when unnamed).

    A plain object, not a coroutine: the provider's read loop calls ``feed`` on each chunk it awaits, so a
    token costs no extra generator switch. Lines may end with LF or CRLF (what upstream servers send);
    multi-line data is joined with LF; comments and fields other than ``event``/``data`` are skipped; a line
    longer than ``MAX_LINE`` is an ``UpstreamProtocolError``.
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\n" not in chunk:
            if len(buf) > MAX_LINE:
                raise UpstreamProtocolError(f"the upstream sent a line over {MAX_LINE >> 20} MiB")
            self._buf = buf
            return []
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[tuple[bytes, bytes]] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    out.append((self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self._data = []
                self._event = b""
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
        return out

    def end(self) -> list[tuple[bytes, bytes]]:
        """At the end of the body: the last event, if its blank line never came."""
        data, self._data = self._data, []
        return [(self._event, data[0] if len(data) == 1 else b"\n".join(data))] if data else []


async def open_stream(
    session: UpstreamSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    request: ChatRequest,
    error_message: Callable[[str], str],
) -> Response:
    """POST a streaming request; return the ``200`` response (the caller closes it), or close it and raise the
    upstream's error (``error_message`` reads the provider's body). From the moment the request is written,
    ``request.abort`` tears its connection down (cancel, disconnect)."""

    def sent(resp: Response) -> None:
        request.abort = resp.abort

    resp = await session.pool.request("POST", url, headers, orjson.dumps(body), sent)
    if resp.status != 200:
        try:
            detail = (await resp.read(4096)).decode("utf-8", "replace")
        finally:
            resp.close()
        raise upstream_status_error(resp.status, error_message(detail), resp.headers.get("retry-after"))
    return resp


async def relay_body(resp: Response, on_event: Callable[[bytes, bytes], None]) -> None:
    """Call ``on_event(event_name, data)`` for every event of an SSE body, from the connection's callback as
    the bytes arrive, until the body ends or ``on_event`` calls ``resp.stop()``; what ``on_event`` raises
    ends the relay and is raised here."""
    split = EventSplitter()

    def on_body(chunk: bytes) -> None:
        for event, data in split.feed(chunk):
            on_event(event, data)

    resp.stream(on_body)
    await resp.finished()
    if resp.complete:
        for event, data in split.end():
            on_event(event, data)


def unset_emit(text: str) -> None:
    """An ``EventReader``'s ``emit`` until ``relay`` sets it."""
    raise RuntimeError("relay() sets the reader's emit before any event")


class EventReader(Protocol):
    """A provider's parser of its upstream events: text deltas go to ``emit`` (set by ``relay``)."""

    emit: Callable[[str], None]

    def on_event(self, event: bytes, data: bytes) -> None: ...


async def relay(resp: Response, request: ChatRequest, reader: EventReader) -> AsyncIterator[str]:
    """A provider's read of its upstream body. With ``request.sink`` set, the reader's deltas go to the sink as
    they arrive (``relay_body``) and nothing is yielded; without, they are yielded a network read at a time."""
    if request.sink is not None:
        reader.emit = request.sink
        await relay_body(resp, reader.on_event)
        return
    pending: list[str] = []
    reader.emit = pending.append
    async for text in pulled(resp, reader.on_event, pending):
        yield text


async def pulled(
    resp: Response, on_event: Callable[[bytes, bytes], None], pending: list[str]
) -> AsyncIterator[str]:
    """``relay_body`` for a caller that set no ``request.sink``: ``on_event`` fills ``pending``, and its texts
    are yielded a network read at a time."""
    split = EventSplitter()
    while True:
        raw = await resp.chunk()
        for event, data in split.feed(raw) if raw else split.end():
            on_event(event, data)
        if pending:
            texts = pending[:]
            pending.clear()
            for text in texts:
                yield text
        if not raw:
            return


async def check_models(session: UpstreamSession, url: str, headers: dict[str, str]) -> None:
    """``/readyz``: the upstream answers its models endpoint with anything but a 5xx."""
    with map_upstream_errors():
        resp = await session.pool.request("GET", url, headers)
        try:
            await resp.read(64 << 10)
        finally:
            resp.close()
        if resp.status >= 500:
            raise upstream_status_error(resp.status, "models endpoint failed")
