"""The pooled HTTP client that remote providers share, and a fast reader of upstream event streams.

One ``aiohttp.ClientSession`` per process (aiohttp measured fastest here for relaying: see
docs/benchmarks.md). ``EventSplitter`` splits an upstream ``text/event-stream`` body into
``(event, data)`` pairs at the byte level, without building an object per line.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from ..errors import UpstreamProtocolError, map_upstream_errors, upstream_status_error
from .base import ChatRequest

__all__ = ["MAX_LINE", "EventSplitter", "UpstreamSession", "abort", "check_models", "open_stream", "read_events"]

MAX_LINE = 8 << 20
"""Longest upstream SSE line accepted: a bound on what one endless line can make the gateway buffer."""


class UpstreamSession:
    """A lazily created, pooled ``aiohttp.ClientSession`` (it must be made inside the running loop)."""

    def __init__(self, *, limit: int = 0, connect_timeout: float = 10.0) -> None:
        self._limit = limit
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300, enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=True, trust_env=False
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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


async def read_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[bytes, bytes]]:
    """Yield ``(event_name, data)`` for each event of an SSE body (an ``EventSplitter`` over the body)."""
    split = EventSplitter()
    async for chunk in resp.content.iter_any():
        for item in split.feed(chunk):
            yield item
    for item in split.end():
        yield item


async def open_stream(
    session: UpstreamSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    request: ChatRequest,
    error_message: Callable[[str], str],
) -> aiohttp.ClientResponse:
    """POST a streaming request; return the ``200`` response, registered as ``request.abort`` (the caller
    closes it), or close it and raise the upstream's error (``error_message`` reads the provider's body)."""
    resp = await session.session.post(url, data=orjson.dumps(body), headers=headers)
    request.abort = functools.partial(abort, resp)
    if resp.status != 200:
        try:
            detail = (await resp.content.read(4096)).decode("utf-8", "replace")
        finally:
            resp.close()
        raise upstream_status_error(resp.status, error_message(detail), resp.headers.get("Retry-After"))
    return resp


def abort(resp: aiohttp.ClientResponse) -> None:
    """Close an upstream request at once. Its socket is shut down right here, so the upstream sees the FIN before
    anything else runs: the transport's own close waits for the next loop pass, behind the unwinding of every
    other generation that a storm of disconnects cancelled in the same pass. Then the response is closed."""
    conn = resp.connection
    transport = conn.transport if conn is not None else None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as dup:  # the same TCP socket
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected
    resp.close()


async def check_models(session: UpstreamSession, url: str, headers: dict[str, str]) -> None:
    """``/readyz``: the upstream answers its models endpoint with anything but a 5xx."""
    with map_upstream_errors():
        async with session.session.get(url, headers=headers) as resp:
            if resp.status >= 500:
                raise upstream_status_error(resp.status, "models endpoint failed")
