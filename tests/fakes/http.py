"""A tiny HTTP/1.1 server on a raw :class:`asyncio.Protocol`, so the fakes control every byte and know the
exact moment a connection closes.

Supported: request line, headers, a ``Content-Length`` or chunked request body, keep-alive (one request at a
time; pipelined bytes wait in the buffer), responses with ``Content-Length`` or ``Transfer-Encoding: chunked``.
Every response write is handed to the transport at once (no buffering) and honours flow control: when the
peer stops reading, :meth:`HttpConnection.drain` waits until the kernel takes more.

A connection counts as closed at the first sign of it: EOF or a reset from the peer (``closed_by="client"``;
half-closed connections are not supported, EOF means the client went away) or our own close or abort
(``closed_by="server"``). The handler task is cancelled when the client goes.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from itertools import count
from typing import Literal

__all__ = ["ClosedBy", "ConnectionClosed", "HttpConnection", "HttpServer", "Request"]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024

ClosedBy = Literal["client", "server"]


class ConnectionClosed(Exception):
    """The connection is gone (either side closed it); the handler should stop."""


class BadRequest(Exception):
    pass


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


def _chunked_body(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; ``(body, end)`` or None when incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise BadRequest("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # no trailers expected: "0\r\n\r\n"
            return (bytes(body), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2
        if len(body) > MAX_BODY:
            raise BadRequest("body too large")


def parse_request(buf: bytearray) -> Request | None:
    """Take one complete request off the front of ``buf``; None while it is incomplete."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest("request head too large")
        return None
    lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"bad header line {line!r}")
        headers[name.lower()] = value.strip()
    start = head_end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _chunked_body(buf, start)
        if decoded is None:
            return None
        body, end = decoded
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            raise BadRequest("bad content-length") from exc
        if length < 0 or length > MAX_BODY:
            raise BadRequest("bad content-length")
        if len(buf) < start + length:
            return None
        body, end = bytes(buf[start:start + length]), start + length
    del buf[:end]
    return Request(parts[0], parts[1], parts[2], headers, body)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


Handler = Callable[[Request, "HttpConnection"], Awaitable[None]]
_ids = count(1)


class HttpConnection(asyncio.Protocol):
    """One TCP connection: parses requests, runs the handler for each, frames its response."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.id = next(_ids)
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.closed_by: ClosedBy | None = None
        self.on_closed: list[Callable[[HttpConnection], None]] = []
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._lost = asyncio.Event()
        self._chunked = False
        self._response_started = False
        self._response_complete = False

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.opened_at = time.monotonic()
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._next_request()

    def eof_received(self) -> bool:
        self._mark_closed("client")
        if self._transport is not None:
            self._transport.abort()  # EOF means gone: do not wait to flush to a peer that left
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed("client")
        self._can_write.set()
        self._lost.set()
        self.server.connections.discard(self)
        self.server.lost.discard(self)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- state ------------------------------------------------------------------------------------------
    @property
    def closing(self) -> bool:
        return self.closed_at is not None or self._transport is None or self._transport.is_closing()

    def _mark_closed(self, by: ClosedBy) -> None:
        if self.closed_at is not None:
            return
        self.closed_at = time.monotonic()
        self.closed_by = by
        self.server.connections.discard(self)
        self.server.lost.add(self)
        if by == "client" and self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        for callback in self.on_closed:
            callback(self)

    async def wait_closed(self) -> None:
        """Until the connection is gone (a stalled response waits here for the client to leave)."""
        await self._lost.wait()

    # -- requests ---------------------------------------------------------------------------------------
    def _next_request(self) -> None:
        if self._task is not None or self.closing:
            return
        try:
            request = parse_request(self._buf)
        except BadRequest as exc:
            self.write_head(400, {"content-type": "text/plain", "content-length": str(len(str(exc)))})
            self.write(str(exc).encode())
            self.close()
            return
        if request is not None:
            self._task = asyncio.get_running_loop().create_task(self._serve(request))

    async def _serve(self, request: Request) -> None:
        self._chunked = self._response_started = self._response_complete = False
        try:
            await self.server.handler(request, self)
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.server.on_error(exc)
            if not self.closing and not self._response_started:
                self.write_head(500, {"content-length": "0"})
                self._response_complete = True
            elif not self.closing:
                self.abort()
        finally:
            self._task = None
        if self.closing:
            return
        if self._response_complete and request.keep_alive:
            self._next_request()
        else:
            self.close()

    # -- responses --------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closing or self._transport is None:
            raise ConnectionClosed
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait while the peer reads nothing; always yields to the loop, so a close is seen between writes."""
        if self.closing:
            raise ConnectionClosed
        if self._can_write.is_set():
            await asyncio.sleep(0)
        else:
            await self._can_write.wait()
        if self.closing:
            raise ConnectionClosed

    def write_head(self, status: int, headers: Mapping[str, str]) -> None:
        """Status line and headers; ``transfer-encoding: chunked`` in ``headers`` selects chunked framing."""
        self._response_started = True
        self._chunked = "chunked" in {v.lower() for k, v in headers.items() if k.lower() == "transfer-encoding"}
        lines = [f"HTTP/1.1 {status} {_reason(status)}"] + [f"{k}: {v}" for k, v in headers.items()]
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body, as one socket write."""
        assert self._chunked
        if data:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.drain()

    async def end_chunks(self) -> None:
        self.write(b"0\r\n\r\n")
        self._response_complete = True
        await self.drain()

    async def respond(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """A whole response with ``Content-Length``."""
        self.write_head(status, {**headers, "content-length": str(len(body))})
        self.write(body)
        self._response_complete = True
        await self.drain()

    def close(self) -> None:
        """Close after flushing what was written (FIN)."""
        self._mark_closed("server")
        if self._transport is not None:
            self._transport.close()

    def abort(self, *, rst: bool = True) -> None:
        """Drop the connection now; with ``rst`` the peer gets a TCP RST (SO_LINGER 0), not a FIN."""
        self._mark_closed("server")
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if rst and sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # already closed by the peer: nothing left to reset
        self._transport.abort()


class HttpServer:
    """Listens on ``host:port`` in the running loop and serves each request with ``handler``."""

    def __init__(self, handler: Handler, on_error: Callable[[BaseException], None]) -> None:
        self.handler = handler
        self.on_error = on_error
        self.connections: set[HttpConnection] = set()  # open: not closed by either side
        self.lost: set[HttpConnection] = set()  # marked closed, transport not yet gone
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpConnection(self), host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, abort every connection, and wait until every transport is gone."""
        if self._server is not None:
            self._server.close()
        pending = self.connections | self.lost
        for conn in pending:
            conn.abort(rst=False)
            if conn._transport is not None:
                conn._transport.abort()  # also the ones closing gracefully towards a peer that reads nothing
        tasks = [c._task for c in pending if c._task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.wait_closed() for c in pending))
        if self._server is not None:
            await self._server.wait_closed()
