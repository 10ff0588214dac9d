"""Running the gateway under uvicorn (``ssegate serve``), with graceful shutdown on SIGTERM.

On SIGTERM/SIGINT the server stops accepting, running streams get ``SHUTDOWN_GRACE_S`` to finish, then
each still running ends with ``event: error`` code ``shutting_down`` and its upstream is closed; the
process exits within grace + 2 s. The shutdown is owned by the app's lifespan (``Gateway.start`` chains
a handler in front of the server's own), never by patching signal handlers at import time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from .logs import log_config
from .settings import Settings, is_loopback_host

__all__ = ["app_factory", "free_port", "serve"]

log = logging.getLogger("ssegate.server")


def app_factory() -> ASGIApp:
    """The ASGI app, configured from the environment (used by every worker process)."""
    from .app import create_app

    return create_app(Settings())


def serve(overrides: dict[str, Any] | None = None) -> int:
    for key, value in (overrides or {}).items():
        os.environ[f"SSEGATE_{key.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"ssegate: invalid settings: {exc}", file=sys.stderr)
        return 2
    if not is_loopback_host(settings.host) and not settings.api_key_list and not settings.allow_open:
        print(
            f"ssegate: refusing to serve on {settings.host} without SSEGATE_API_KEYS "
            "(set SSEGATE_ALLOW_OPEN=1 to serve an open gateway)",
            file=sys.stderr,
        )
        return 2
    if settings.workers > 1 and not settings.token_secret:
        # one random secret for every worker of this server, so that a stream token works on any of them
        os.environ["SSEGATE_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    config = uvicorn.Config(
        "ssegate.server:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http=bounded_http_protocol(settings.request_read_timeout_s) if _has("httptools") else "h11",
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        lifespan="on",
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s + 2),
        timeout_keep_alive=75,
        backlog=4096,
        server_header=False,
    )
    if settings.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
        return 0
    uvicorn.Server(config).run()
    return 0


MAX_HEAD_BYTES = 64 * 1024
"""Bytes read of a request head (request line and headers) still incomplete, beyond which the answer is 431."""


def bounded_http_protocol(read_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the request head bounded in size, and the request in time.

    Plain uvicorn buffers a request line or headers of any size (one 200 MB header costs 200 MB of RSS, kept
    after) and waits forever for a request that never completes (slowloris). Here a head still incomplete after
    ``MAX_HEAD_BYTES`` gets ``431`` and the connection is closed (so a head costs at most that plus one socket
    read), and a connection whose request (head and body) is not complete ``read_timeout_s`` after it opened
    (or after the request began, on a kept-alive connection) is closed."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from .errors import InvalidRequest
    from .sse import dumps

    body = dumps(InvalidRequest(f"the request line and headers are over {MAX_HEAD_BYTES} bytes").body())
    refusal = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))

    class BoundedRequestProtocol(HttpToolsProtocol):
        _in_head = False
        _head_bytes = 0
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_read_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_read_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head:  # all of this chunk went into a head that is still incomplete
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                    self._in_head = False
                    self.transport.write(refusal)
                    self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0
            self._arm_read_timer()

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm_read_timer()
            super().on_message_complete()

        def _arm_read_timer(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _disarm_read_timer(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return BoundedRequestProtocol


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
