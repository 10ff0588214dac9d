"""A loopback HTTP server whose every answer is a script of raw bytes, for the upstream client's tests.

``servers()`` gives ``serve(handler)`` (each test module wraps it in a ``serve`` fixture), which starts an
``asyncio`` server on a free port in the test's loop. Each request's head and body (``Content-Length`` only) are
read and handed to ``handler`` with the connection's streams, and the handler writes whatever bytes the test
wants, in as many writes as it wants. ``Server`` counts connections, records requests and sets ``closed`` each
time a client's connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Handler", "Serve", "Server", "fixed", "raw", "servers"]

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request (its head and body already read); returns whether the connection stays open."""


@dataclass
class Server:
    handler: Handler
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set each time a client's connection reaches its end (EOF or reset)."""
    peers: list[tuple[str, int]] = field(default_factory=list)
    """The client address of each connection, in order."""

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.peers.append(writer.get_extra_info("peername")[:2])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                if not await self.handler(request, reader, writer):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            writer.close()


Serve = Callable[..., Awaitable[Server]]


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[Serve]:
    """``serve(handler, tls=None, host="127.0.0.1")`` for the length of the block; the servers stop at its end."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Server:
        srv = Server(handler)
        s = await asyncio.start_server(srv.serve, host, 0, ssl=tls)
        srv.port = s.sockets[0].getsockname()[1]
        servers.append(s)
        return srv

    try:
        yield start
    finally:
        for s in servers:
            s.close()


def raw(answer: bytes, *, keep: bool = True) -> Handler:
    """Answer every request with these bytes; then keep the connection open or close it."""

    async def handler(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        await writer.drain()
        return keep

    return handler


def fixed(body: bytes, *headers: str) -> Handler:
    """Answer every request ``200`` with this body (``Content-Length``) and these extra header lines."""
    extra = "".join(f"{h}\r\n" for h in headers).encode("latin-1")
    return raw(b"HTTP/1.1 200 X\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
