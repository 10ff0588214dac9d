"""Running the gateway under uvicorn (``ssegate serve``), with graceful shutdown on SIGTERM.

On SIGTERM/SIGINT the server stops accepting, running streams get ``SHUTDOWN_GRACE_S`` to finish, then
each still running ends with ``event: error`` code ``shutting_down`` and its upstream is closed; the
process exits within grace + 2 s. The shutdown is owned by the app's lifespan (``Gateway.start`` chains
a handler in front of the server's own), never by patching signal handlers at import time.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import secrets
import socket
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import InvalidRequest
from .logs import log_config
from .response import DISCONNECT_HOOK
from .settings import Settings, is_loopback_host
from .sse import dumps

__all__ = ["BoundedRequestProtocol", "app_factory", "free_port", "head_limit", "serve"]

log = logging.getLogger("ssegate.server")


def app_factory() -> ASGIApp:
    """The ASGI app, configured from the environment (used by every worker process)."""
    from .app import create_app

    app = create_app(Settings())
    # Everything imported so far lives as long as the process: move it out of the collector's sight, and
    # collect the young generation less often. Full collections then scan only what streams allocate,
    # instead of pausing the event loop for tens of milliseconds under load (measured with make bench).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    return app


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
        http=BoundedRequestProtocol,
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


MIN_HEAD_BYTES = 64 * 1024


def head_limit(settings: Settings) -> int:
    """Bytes of a request head (request line and headers) read before it is refused with 431: as much as a body
    may be (``MAX_BODY_BYTES``, so that ``GET /chat?q=`` takes as long a prompt as a POST), at least 64 KiB."""
    return max(MIN_HEAD_BYTES, settings.max_body_bytes)


@functools.cache
def _limits() -> tuple[float, int, bytes]:
    """The read timeout, the head limit and the 431 answer, from this process's settings (every worker process
    imports this module afresh and reads the same environment)."""
    settings = Settings()
    limit = head_limit(settings)
    body = dumps(InvalidRequest(f"the request line and headers are over {limit} bytes").body())
    refusal = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
    return settings.request_read_timeout_s, limit, refusal


class BoundedRequestProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded in size, and the request in time.

    Plain uvicorn buffers a request line or headers of any size (one 200 MB header costs 200 MB of RSS, kept
    after) and waits forever for a request that never completes (slowloris). Here a head still incomplete after
    ``head_limit()`` bytes gets ``431`` and the connection is closed (so a head costs at most that plus one socket
    read), and a connection whose request (head and body) is not complete ``REQUEST_READ_TIMEOUT_S`` after it
    opened (or after the request began, on a kept-alive connection) is closed. A streaming response learns of
    its client's disconnect inside ``connection_lost`` (``response.DISCONNECT_HOOK``), not a task later."""

    _in_head = False
    _head_bytes = 0
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        _client_gone(cycle)

    def eof_received(self) -> None:
        # uvicorn closes the connection at the client's EOF, and the loop reports connection_lost a pass later,
        # behind whatever is queued (in a storm of disconnects: the unwinding of every stream cancelled so far)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # as connection_lost will say: the app's receive() gets http.disconnect
        _client_gone(cycle)
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:  # all of this chunk went into a head that is still incomplete
            self._head_bytes += len(data)
            _, limit, refusal = _limits()
            if self._head_bytes > limit and not self.transport.is_closing():
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
            self._read_timer = self.loop.call_later(_limits()[0], self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _client_gone(cycle: object) -> None:
    """A streaming response's client closed: stop its generation now (``response.DISCONNECT_HOOK``)."""
    hook = getattr(cycle, DISCONNECT_HOOK, None)
    if hook is not None:
        hook()


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
