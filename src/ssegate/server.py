"""Running the gateway under uvicorn (``ssegate serve``), with graceful shutdown on SIGTERM.

On SIGTERM/SIGINT the server stops accepting, running streams get ``SHUTDOWN_GRACE_S`` to finish, then
each still running ends with ``event: error`` code ``shutting_down`` and its upstream is closed; the
process exits within grace + 2 s. The shutdown is owned by the app's lifespan (``Gateway.start`` chains
a handler in front of the server's own), never by patching signal handlers at import time.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp

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
    config = uvicorn.Config(
        "ssegate.server:app_factory",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        lifespan="on",
        log_level=settings.log_level,
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
