"""Running the gateway under uvicorn (``ssegate serve``), with graceful shutdown on SIGTERM.

On SIGTERM/SIGINT the server stops accepting, running streams get ``SHUTDOWN_GRACE_S`` to finish, then
each still running ends with ``event: error`` code ``shutting_down`` and its upstream is closed; the
process exits within grace + 2 s. The shutdown is owned by the app's lifespan (``Gateway.start`` chains
a handler in front of the server's own), never by patching signal handlers at import time.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import socket
import sys
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from .errors import ConfigError
from .http.uvicorn_glue import BoundedRequestProtocol
from .obs.logs import log_config
from .routing import settings_config
from .settings import Settings, is_loopback_host

__all__ = ["app_factory", "free_port", "serve"]

log = logging.getLogger("ssegate.serve")


def app_factory() -> ASGIApp:
    """The ASGI app, configured from the environment (used by every worker process)."""
    from .http.standalone import create_app

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
    try:
        routes = settings_config(settings)
    except ConfigError as exc:
        print(f"ssegate: {exc}", file=sys.stderr)
        return 2
    has_keys = bool(settings.api_key_list or routes.keys)
    if not is_loopback_host(settings.host) and not has_keys and not settings.allow_open:
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
        "ssegate.serve:app_factory",
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
        from .http.uvicorn_glue import ReloadingMultiprocess

        sock = config.bind_socket()
        ReloadingMultiprocess(config, sockets=[sock]).run()
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
