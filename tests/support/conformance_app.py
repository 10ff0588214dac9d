"""One small upstream written against other people's servers, for the upstream client's conformance tests.

The same endpoints as an ASGI app (run by uvicorn, with its h11 or its httptools protocol) and as an
``aiohttp.web`` app; each answer carries ``X-Conn``, the client's port as the server saw it, so a test can tell
a reused connection from a new one.

- ``GET /v1/chat/stream?n=N``: N SSE events, one write each, 5 ms apart, chunked (no length);
- ``GET /v1/chat/gzip-stream?n=N``: the same, gzip-compressed, flushed after each event;
- ``GET /fixed?size=N``: N bytes with ``Content-Length``;
- ``GET /gzip?size=N``: N bytes, gzip-compressed (by the app for ASGI, by aiohttp itself for aiohttp);
- ``GET /v1/chat/early``: three events of a chunked stream, then the connection is dropped;
- ``GET /early-fixed``: ``Content-Length: 1000``, ten bytes, then the connection is dropped.

``python -m tests.support.conformance_app {uvicorn-h11|uvicorn-httptools|aiohttp} PORT`` serves it on loopback.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

__all__ = ["app", "event", "fixed_body"]


def event(i: int) -> bytes:
    return b'data: {"i": %d, "text": "token %d"}\n\n' % (i, i)


def fixed_body(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    """The ASGI app."""
    if scope["type"] != "http":
        return
    query = {k: int(v[0]) for k, v in parse_qs(scope["query_string"].decode()).items()}
    conn = str(scope["client"][1]).encode()
    path = scope["path"]

    async def start(*headers: tuple[bytes, bytes]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-conn", conn), *headers]})

    if path in ("/v1/chat/stream", "/v1/chat/gzip-stream", "/v1/chat/early"):
        zipped = path == "/v1/chat/gzip-stream"
        z = zlib.compressobj(wbits=31)
        await start((b"content-type", b"text/event-stream"), *([(b"content-encoding", b"gzip")] if zipped else []))
        for i in range(3 if path == "/v1/chat/early" else query.get("n", 10)):
            piece = z.compress(event(i)) + z.flush(zlib.Z_SYNC_FLUSH) if zipped else event(i)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.005)
        if path == "/v1/chat/early":
            raise ConnectionAbortedError("the upstream drops the connection mid-stream (on purpose)")
        await send({"type": "http.response.body", "body": z.flush() if zipped else b"", "more_body": False})
    elif path in ("/fixed", "/gzip"):
        body = fixed_body(query.get("size", 1000))
        extra = []
        if path == "/gzip":
            body = zlib.compress(body, wbits=31)
            extra = [(b"content-encoding", b"gzip")]
        await start((b"content-length", str(len(body)).encode()), *extra)
        await send({"type": "http.response.body", "body": body})
    elif path == "/early-fixed":
        await start((b"content-length", b"1000"))
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        raise ConnectionAbortedError("the upstream drops the connection mid-body (on purpose)")
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def aiohttp_app() -> Any:
    from aiohttp import web

    def transport(request: web.Request) -> asyncio.Transport:
        assert request.transport is not None
        return request.transport

    async def stream(request: web.Request) -> web.StreamResponse:
        zipped = request.path == "/v1/chat/gzip-stream"
        resp = web.StreamResponse(headers={"X-Conn": str(transport(request).get_extra_info("peername")[1]),
                                           "Content-Type": "text/event-stream"})
        if zipped:
            resp.headers["Content-Encoding"] = "gzip"
        z = zlib.compressobj(wbits=31)
        await resp.prepare(request)
        for i in range(3 if request.path == "/v1/chat/early" else int(request.query.get("n", 10))):
            await resp.write(z.compress(event(i)) + z.flush(zlib.Z_SYNC_FLUSH) if zipped else event(i))
            await asyncio.sleep(0.005)
        if request.path == "/v1/chat/early":
            transport(request).close()  # dropped mid-stream
            return resp
        if zipped:
            await resp.write(z.flush())
        await resp.write_eof()
        return resp

    async def fixed(request: web.Request) -> web.StreamResponse:
        conn = str(transport(request).get_extra_info("peername")[1])
        if request.path == "/early-fixed":
            resp = web.StreamResponse(headers={"X-Conn": conn, "Content-Length": "1000"})
            await resp.prepare(request)
            await resp.write(b"0123456789")
            transport(request).close()
            return resp
        r = web.Response(body=fixed_body(int(request.query.get("size", 1000))), headers={"X-Conn": conn})
        if request.path == "/gzip":
            r.enable_compression(force=web.ContentCoding.gzip)  # aiohttp's own gzip (the client asks for identity)
        return r

    web_app = web.Application()
    for path in ("/v1/chat/stream", "/v1/chat/gzip-stream", "/v1/chat/early"):
        web_app.router.add_get(path, stream)
    for path in ("/fixed", "/gzip", "/early-fixed"):
        web_app.router.add_get(path, fixed)
    return web_app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "aiohttp":
        from aiohttp import web

        web.run_app(aiohttp_app(), host="127.0.0.1", port=port, print=None, access_log=None)
        return
    import uvicorn

    http = kind.removeprefix("uvicorn-")
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, loop="asyncio", log_level="critical")


if __name__ == "__main__":
    main()
