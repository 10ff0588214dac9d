"""A small HTTP/1.1 client for upstream requests: one asyncio protocol per connection, httptools' C parser.

The gateway's hot path is an upstream body read: one network read carries one model token. A general
client (aiohttp, httpx) hands each read through a buffer object, a future and a task switch before the
provider sees it; here the connection's ``data_received`` parses the chunk (llhttp, in C) and hands the body
bytes straight to the consumer's callback, in that same callback of the event loop. That is the whole reason
for this module; everything else is the least an upstream client must do:

- ``Pool``: keep-alive connections per origin (a response read to its end goes back to the pool), TLS with the
  system's trust store, a connect timeout, at most ``limit`` requests at once (0 = no limit);
- ``Pool.request()`` sends one request and returns the ``Response`` once its head arrived (a reused connection
  that the server had closed meanwhile is retried once on a new one);
- ``Response.read()`` reads a short body (error details, ``/models``); ``Response.stream(on_body)`` pushes body
  bytes to ``on_body`` as they arrive and ``await Response.finished()`` waits for the end of the body (or
  raises the failure, including one raised by ``on_body``);
- ``Response.close()`` returns a fully read connection to the pool, else closes it; ``Response.abort()`` shuts
  the socket down at once (the upstream sees the FIN before anything else runs), for cancel and disconnect.

gzip/deflate bodies are decoded (we ask for ``identity``, but a server may not listen); no proxies, no HTTP/2,
no redirects: an upstream is a configured base URL, and a redirect is an error worth seeing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httptools

from ..__about__ import __version__
from ..errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["Pool", "Response"]

USER_AGENT = f"ssegate/{__version__}"
MAX_HEAD = 64 << 10
"""Largest response head accepted (status line and headers)."""
MAX_IDLE_PER_ORIGIN = 256
KEEPALIVE_S = 15.0
"""An idle connection is closed after this long (servers drop theirs after 5-75 s)."""


class _Connection(asyncio.Protocol):
    """One upstream TCP connection; it carries one response at a time."""

    __slots__ = ("idle_since", "origin", "pool", "response", "reused", "transport")

    def __init__(self, pool: Pool, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.reused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None:  # bytes on an idle connection: not a server to keep talking to
            assert self.transport is not None
            self.transport.abort()
            return
        resp._feed(data)

    def eof_received(self) -> bool | None:
        resp = self.response
        if resp is not None:
            resp._eof()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._forget(self)
        resp = self.response
        if resp is not None:
            resp._eof(exc)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class Response:
    """One upstream response. ``status`` and ``headers`` (lower-case names) are set once ``Pool.request``
    returns it; the body is read with ``read()`` or pushed with ``stream()``. Whoever got it closes it."""

    __slots__ = (
        "_body",
        "_conn",
        "_decoder",
        "_error",
        "_head",
        "_header_bytes",
        "_keep_alive",
        "_parser",
        "_raw_headers",
        "_seen",
        "_sink",
        "_slot",
        "_stopped",
        "_until_eof",
        "_waiter",
        "complete",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        """The whole body arrived."""
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._sink: Callable[[bytes], None] | None = None
        self._error: BaseException | None = None
        self._decoder: Any = None
        self._until_eof = False
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._seen = False
        """Some of the response arrived."""
        self._stopped = False
        self._keep_alive = False
        self._slot = False
        """This response holds one of the pool's ``limit`` places (given back at ``close``)."""

    # --- what a provider calls ----------------------------------------------------------------------
    async def read(self, limit: int = 1 << 20) -> bytes:
        """The body (at most ``limit`` bytes of it: reading stops there)."""
        while not self.complete and self._error is None and sum(map(len, self._body)) < limit:
            await self._wait()
        if self._error is not None and not self._body:
            raise self._error
        return b"".join(self._body)[:limit]

    async def chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); ``b""`` at the end."""
        while not self._body and not self.complete and not self._stopped and self._error is None:
            await self._wait()
        if self._body:
            body = b"".join(self._body)
            self._body = []
            return body
        if self._error is not None:
            raise self._error
        return b""

    def stream(self, on_body: Callable[[bytes], None]) -> None:
        """From now on, hand every piece of body to ``on_body`` as it arrives (what already arrived, at once).
        An exception from ``on_body`` fails the response: the connection is closed and ``finished`` raises it."""
        body, self._body = self._body, []
        self._sink = on_body
        for piece in body:  # already decoded
            self._hand(piece)

    async def finished(self) -> None:
        """Wait for the end of the body (or ``stop``); raise what failed it."""
        while not self.complete and not self._stopped and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """The consumer has all it wants (an end marker in the body): ``finished`` returns now."""
        self._stopped = True
        self._sink = None
        self._wake()

    def close(self) -> None:
        """Give the connection back to the pool when the body was read to its end, else close it."""
        self._sink = None
        self._parser = None  # it calls this response back: a cycle the GC would have to find
        conn = self._conn
        if conn.response is not self:
            return
        conn.response = None
        pool = conn.pool
        if self._slot:
            self._slot = False
            pool._leave()
        if self.complete and self._error is None and self._keep_alive and conn.usable:
            pool._keep(conn)
        elif conn.transport is not None:
            conn.transport.abort()

    def abort(self) -> None:
        """Tear the connection down now: the socket is shut down right here, so the upstream sees the FIN
        before the event loop runs anything else (the transport's own close waits for the next loop pass,
        behind the unwinding of every other generation that a storm of disconnects cancelled at once)."""
        self._sink = None
        self._stopped = True  # never sent again
        transport = self._conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as dup:
                dup.shutdown(socket.SHUT_RDWR)
        if self._error is None:
            self._fail(UpstreamError("the upstream request was aborted"))
        self.close()

    # --- the protocol's side ------------------------------------------------------------------------
    async def _wait(self) -> None:
        fut = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await fut
        finally:
            self._waiter = None

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _feed(self, data: bytes) -> None:
        parser = self._parser
        if self._error is not None or parser is None:
            return
        self._seen = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # our own callback failed: keep what it raised
            self._fail(exc.__context__ or exc)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(UpstreamProtocolError(f"the upstream sent a malformed HTTP response ({exc})"))

    def _eof(self, exc: Exception | None = None) -> None:
        if self.complete or self._error is not None:
            return
        if self._until_eof and self._head.done() and exc is None:
            self._message_done()  # a body without length or chunking ends with the connection
            return
        what = "before answering" if not self._head.done() else "before the answer was complete"
        err = UpstreamError(f"the upstream closed the connection {what}")
        if exc is not None:
            err.__cause__ = exc
        self._fail(err)

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        self._sink = None
        transport = self._conn.transport
        if transport is not None:
            transport.abort()
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: whoever waits sees it; nobody waiting is fine too
        self._wake()

    def _deliver(self, piece: bytes) -> None:
        if self._decoder is not None:
            piece = self._decoder.decompress(piece)
            if not piece:
                return
        self._hand(piece)

    def _hand(self, piece: bytes) -> None:
        sink = self._sink
        if sink is None:
            self._body.append(piece)
            self._wake()
            return
        try:
            sink(piece)
        except BaseException as exc:  # the consumer's failure (bad upstream data, usually) ends this response
            self._fail(exc)

    def _message_done(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            self._decoder = None
            if rest:
                self._deliver(rest)
        self.complete = True
        self._wake()

    # --- httptools callbacks ------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEAD:
            raise UpstreamProtocolError("the upstream sent a response head over 64 KiB")
        if name:
            self._raw_headers.append((name, value))
        elif self._raw_headers:  # a header value split across reads
            n, v = self._raw_headers[-1]
            self._raw_headers[-1] = (n, v + value)

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        headers = self.headers
        for name, value in self._raw_headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._raw_headers = []
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            self._decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, detected from the header
        elif encoding not in ("identity", ""):
            raise UpstreamProtocolError(f"the upstream answered in an encoding it was not asked for: {encoding}")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._until_eof = not chunked and "content-length" not in headers and self.status not in (204, 304)
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is None or self._decoder is not None:
            self._deliver(body)
            return
        try:  # the hot path: one network read of a stream, straight to its consumer
            sink(body)
        except BaseException as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()  # asked now: the parser forgets once it returns
        self._message_done()


class Pool:
    """Keep-alive connections to upstreams, created lazily inside the running loop."""

    def __init__(
        self, *, limit: int = 0, connect_timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy = 0
        self._queue: list[asyncio.Future[None]] = []
        self._ssl = ssl_context
        """For ``https``: the system's trust store (made at the first use) unless one is given."""
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def active(self) -> int:
        """Requests in flight (responses not closed yet)."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Requests waiting for a place under ``limit``."""
        return len(self._queue)

    @property
    def idle(self) -> int:
        """Connections kept for the next request."""
        return sum(map(len, self._idle.values()))

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes = b"",
        sent: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send a request; return its response once the head arrived (the caller closes it). ``sent`` is
        called with the response as soon as the request is written, so it can be aborted while its head
        is awaited."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        default = 443 if scheme == "https" else 80
        port = parts.port or default
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = (f"[{host}]" if ":" in host else host) + ("" if port == default else f":{port}")
        raw = _encode_request(method, target, authority, headers, body)
        origin = (scheme, host, port)
        await self._admit()
        try:
            conn = await self._connection(origin)
            resp = await self._exchange(conn, raw, sent)
            if resp is None:  # a kept-alive connection the server had closed meanwhile: once more, on a new one
                resp = await self._exchange(await self._connection(origin, reuse=False), raw, sent)
            assert resp is not None
        except BaseException:
            self._leave()
            raise
        resp._slot = True
        return resp

    async def _exchange(
        self, conn: _Connection, raw: bytes, sent: Callable[[Response], None] | None
    ) -> Response | None:
        """Write the request, wait for the response head. None when a reused connection turns out closed
        before any byte of an answer (the request may be sent again)."""
        resp = Response(conn)
        conn.response = resp
        assert conn.transport is not None
        conn.transport.write(raw)
        if sent is not None:
            sent(resp)
        try:
            await resp._head
        except UpstreamError:
            resp.close()
            if conn.reused and not resp._seen and not resp._stopped:
                return None
            raise
        except BaseException:
            resp.close()
            raise
        return resp

    async def _admit(self) -> None:
        while self.limit and self._busy >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._queue.append(fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._queue.remove(fut)
        self._busy += 1

    def _leave(self) -> None:
        self._busy -= 1
        while self._queue:
            fut = self._queue.pop(0)
            if not fut.done():
                fut.set_result(None)
                break

    async def _connection(self, origin: tuple[str, str, int], reuse: bool = True) -> _Connection:
        idle = self._idle.get(origin)
        loop = asyncio.get_running_loop()
        while reuse and idle:
            conn = idle.pop()
            if conn.usable and loop.time() - conn.idle_since < KEEPALIVE_S:
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        scheme, host, port = origin
        ctx = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        conn = _Connection(self, origin)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: conn, host, port, ssl=ctx,
                                             server_hostname=host if ctx is not None else None)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to the upstream at {host}:{port} timed out") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS
            raise UpstreamError(f"cannot connect to the upstream at {host}:{port}") from exc
        return conn

    def _keep(self, conn: _Connection) -> None:
        """A response read to its end: keep its connection for the next request."""
        idle = self._idle.setdefault(conn.origin, [])
        if self._closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            assert conn.transport is not None
            conn.transport.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(KEEPALIVE_S, self._expire)

    def _expire(self) -> None:
        """Close connections idle for ``KEEPALIVE_S``; look again later while some are left."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for idle in self._idle.values():
            for conn in [c for c in idle if now - c.idle_since >= KEEPALIVE_S]:
                idle.remove(conn)
                if conn.transport is not None:
                    conn.transport.close()
        if any(self._idle.values()):
            self._sweep = loop.call_later(KEEPALIVE_S, self._expire)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()


def _encode_request(method: str, target: str, authority: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    names = set()
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0"):
            raise UpstreamError(f"the upstream header {name!r} holds a line break (check the configured key)")
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
