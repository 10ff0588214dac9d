"""``ssegate serve``: settings checked, the socket bound, a banner, then uvicorn; graceful shutdown on SIGTERM.

Start-up refuses what would run but be wrong, each time with ONE line on stderr naming the ``SSEGATE_``
variable (or the flag) and what is expected, exit status 2, no traceback:

- a setting that does not parse or is out of range (``SSEGATE_PROVIDER='foo' is not valid: expected one of
  demo, openai, anthropic``), a TOKEN_SECRET under 32 bytes;
- a public address without API_KEYS (unless ALLOW_OPEN=1);
- ``--workers`` > 1 without REDIS_URL: each worker would keep its own streams, and a resume or cancel that
  the kernel hands to another worker would be 404;
- REDIS_URL with API_KEYS but no TOKEN_SECRET: stream owners are key fingerprints under the secret, so
  replicas (and a restarted one) with their own random secrets would not recognise each other's owners.

The listening socket is bound here, before the app is built or uvicorn says "startup complete", and handed to
uvicorn (one worker) or to its supervisor (``--workers N``): a port in use is one line and exit status 1.
An ``openai`` or ``anthropic`` upstream without a key is one warning line (a local server needs none).

On a terminal (``SSEGATE_LOG_FORMAT=auto`` and stderr a TTY, or ``text``) a short banner goes to stderr
first: version, upstreams, the chat page, the OpenAI base URL and where the docs are; log lines are then
text. Otherwise logs are JSON lines and the banner is one ``serving`` line among them (``obs/logs.py``).

On SIGTERM or Ctrl-C the server stops accepting, running streams get ``SHUTDOWN_GRACE_S`` to finish, then
each still running ends with ``event: error`` code ``shutting_down`` and its upstream is closed; the
process exits within grace + 2 s (after Ctrl-C with status 0 and no traceback). The shutdown is owned by the
app's lifespan (``Gateway.start`` chains a handler in front of the server's own), never by patching signal
handlers at import time.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import secrets
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import uvicorn
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from starlette.types import ASGIApp

from .__about__ import __version__
from .errors import ConfigError
from .http.uvicorn_glue import PROTOCOL
from .obs.logs import log_config
from .routing import DEMO_MODEL, settings_config
from .routing.config import RoutingConfig
from .settings import Settings, is_loopback_host
from .upstream.base import public_url

__all__ = [
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "Upstream",
    "app_factory",
    "banner",
    "bind",
    "free_port",
    "refusal",
    "serve",
    "settings_problem",
    "upstreams",
]

log = logging.getLogger("ssegate.serve")

EXIT_REFUSED = 2
"""A setting (or a combination of them) was refused."""
EXIT_UNAVAILABLE = 1
"""The address could not be bound (in use, not ours, not allowed)."""

Upstream = tuple[str, str, str]
"""One line of the banner: (model name, provider, upstream URL)."""

DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com/v1"}
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
SECRET_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def app_factory() -> ASGIApp:
    """The ASGI app, configured from the environment (used by every worker process)."""
    from .http.standalone import create_app

    app = create_app(Settings())
    # Everything imported so far lives as long as the process: move it out of the collector's sight, and
    # collect the young generation less often. Full collections then scan only what streams allocate,
    # instead of pausing the event loop for tens of milliseconds under load (measured with make bench).
    # A stream leaves no reference cycle (tests/test_garbage.py) and a finished one keeps nothing the collector
    # walks (core/log.py): what it walks is the objects of live streams. A generation-1 collection comes after 10
    # of generation 0 (not 50), so that it walks what a few seconds of traffic left, not a minute's: measured
    # with bench/gc_pauses.py, 0.3 ms (generation 0) and 9 ms (generation 1) in 20,000 short streams.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 100)
    # Our log lines name no source file, thread or process: skip collecting them for every record (the logging
    # HOWTO's "Optimization" section), a few µs off each of a stream's two log lines.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return app


def _served_app() -> ASGIApp:
    """What ``ssegate serve``'s uvicorn runs: ``app_factory``'s app through its compiled ASGI callable
    (``SSEGateApp.asgi``), which uvicorn is told is ASGI 3 (it tells an app's interface by
    ``iscoroutinefunction``, which a compiled coroutine method fails)."""
    from .http.standalone import SSEGateApp

    app = app_factory()
    return app.asgi if isinstance(app, SSEGateApp) else app


# --- settings, in one line each -------------------------------------------------------------------------------
def _named(name: str, flags: Mapping[str, str]) -> str:
    return flags.get(name) or f"SSEGATE_{name.upper()}"


def _bounds(field: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for meta in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            value = getattr(meta, attr, None)
            if value is not None:
                found[attr] = value
    return found


def _expected(err: Mapping[str, Any], field: FieldInfo | None) -> str:
    kind = err["type"]
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if field is None:
        return str(err["msg"])
    if kind == "literal_error":
        return "expected one of " + ", ".join(str(c) for c in get_args(field.annotation))
    if kind == "bool_parsing":
        return "expected true or false (1 or 0)"
    whole = field.annotation is int
    what = "a whole number" if whole else "a number"
    b = _bounds(field)
    if "ge" in b and "le" in b:
        return f"expected {what} from {b['ge']} to {b['le']}"
    limits = [f"at least {b['ge']}" if "ge" in b else "", f"above {b['gt']}" if "gt" in b else "",
              f"at most {b['le']}" if "le" in b else "", f"below {b['lt']}" if "lt" in b else ""]
    shown = " and ".join(part for part in limits if part)
    return f"expected {what}" + (f" {shown}" if shown else "")


def settings_problem(exc: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """A settings error as one line: the variable (or the ``flags`` that set it) with its value, and what is
    expected. Secrets (fields with ``repr=False``) are named, never shown."""
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        field = Settings.model_fields.get(name)
        where = _named(name, flags or {})
        if field is not None and field.repr is False:
            shown = where
        elif where.startswith("--"):
            shown = f"{where} {err['input']!r}"
        else:
            shown = f"{where}={err['input']!r}"
        reason = _expected(err, field)
        problems.append(f"{shown} {reason}" if reason.startswith("is ") else f"{shown} is not valid: {reason}")
    return "; ".join(problems)


def refusal(settings: Settings, flags: Mapping[str, str] | None = None, *, file_keys: bool = False) -> str | None:
    """Why these settings must not be served, in one line; ``None`` when they may be (``file_keys``: the routing
    file lists client keys of its own)."""
    flags = flags or {}
    if not is_loopback_host(settings.host) and not (settings.api_key_list or file_keys) and not settings.allow_open:
        return (f"refusing to serve on {settings.host} without SSEGATE_API_KEYS "
                "(set SSEGATE_ALLOW_OPEN=1 to serve an open gateway)")
    if settings.workers > 1 and not settings.redis_url:
        workers = f"--workers {settings.workers}" if "workers" in flags else f"SSEGATE_WORKERS={settings.workers}"
        return (f"{workers} needs SSEGATE_REDIS_URL: without it each worker "
                "keeps its own streams, and a resume or cancel that lands on another worker fails "
                "(run one worker, or set SSEGATE_REDIS_URL=redis://HOST:6379/0)")
    if settings.redis_url and (settings.api_key_list or file_keys) and not settings.token_secret:
        return ("SSEGATE_REDIS_URL with SSEGATE_API_KEYS needs SSEGATE_TOKEN_SECRET, the same on every replica "
                "(stream owners are key fingerprints under it): make one with " + SECRET_HINT)
    return None


def startup_warning(settings: Settings) -> str | None:
    """One line about an upstream that will probably refuse every request; ``None`` when nothing looks wrong."""
    if settings.provider not in KEY_VARIABLES or settings.resolved_api_key():
        return None
    url = public_url(settings.upstream_url or DEFAULT_URLS[settings.provider])
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host == "localhost" or is_loopback_host(host):
        return None  # a local server (Ollama, vLLM, llama.cpp) usually needs no key
    return (f"provider {settings.provider} has no API key (set SSEGATE_UPSTREAM_API_KEY or "
            f"{KEY_VARIABLES[settings.provider]}): {url} will probably answer 401")


# --- the socket ---------------------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening (uvicorn does that), inheritable by workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _bind_problem(exc: OSError, host: str, port: int, flags: Mapping[str, str]) -> str:
    port_hint = f"set {flags['port']}" if "port" in flags else "set --port or SSEGATE_PORT"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use ({port_hint})"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (ports below 1024 need privileges: {port_hint})"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"cannot listen on {host}: not an address of this machine (set --host or SSEGATE_HOST)"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}"


# --- the banner ---------------------------------------------------------------------------------------------
def base_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a server bound to (host, port)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host.strip("[]") == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{port}"


def upstreams(settings: Settings, routes: RoutingConfig | None = None) -> list[Upstream]:
    """The banner's upstream lines: the routing file's models, else PROVIDER/MODEL/UPSTREAM_URL."""
    if settings.config and routes is not None:
        return [(m.name, m.deployment.provider, m.deployment.label) for m in routes.models]
    if settings.provider == "demo":
        return [(settings.model or DEMO_MODEL, "demo", "embedded, offline")]
    model = settings.model or "(named by each request)"
    urls = settings.upstream_urls or [DEFAULT_URLS.get(settings.provider, "(the plugin's own)")]
    return [(model, settings.provider, " then ".join(public_url(u) for u in urls))]


def banner(url: str, lines: Sequence[Upstream], *, workers: int = 1, listening: str = "") -> str:
    """The human banner of ``ssegate serve`` on a terminal (stderr; stdout stays empty)."""
    width = max(len(name) for name, _, _ in lines) if lines else 0
    out = [f"ssegate {__version__}" + (f" · {workers} workers" if workers > 1 else "")
           + (f" · listening on {listening}" if listening else "")]
    for i, (name, provider, where) in enumerate(lines):
        out.append(f"  {'model' if i == 0 else '':9} {name:<{width}}  {provider} ({where})")
    out += [
        f"  {'chat page':9} {url}/",
        f"  {'OpenAI':9} {url}/v1  (base_url for OpenAI SDKs)",
        f"  {'docs':9} ssegate --help · {url}/docs (the API) · README.md",
        "  Ctrl-C stops the server.",
    ]
    return "\n".join(out)


def compiled() -> bool:
    """Whether the hot modules run compiled (``make compile``, scripts/compile.py) or from their source."""
    from .http import response

    return not response.__file__.endswith(".py")


# --- serve ----------------------------------------------------------------------------------------------------
def serve(overrides: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> int:
    """Run the gateway; the exit status. ``overrides`` are settings from flags (names without ``SSEGATE_``),
    ``flags`` the flag each came from, for messages."""
    flags = flags or {}
    for key, value in (overrides or {}).items():
        os.environ[f"SSEGATE_{key.upper()}"] = str(value)  # worker processes read the same environment
    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(settings_problem(exc, flags), EXIT_REFUSED)
    try:
        routes = settings_config(settings)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_REFUSED)
    problem = refusal(settings, flags, file_keys=bool(routes.keys))
    if problem is not None:
        return _fail(problem, EXIT_REFUSED)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        return _fail(_bind_problem(exc, settings.host, settings.port, flags), EXIT_UNAVAILABLE)
    try:
        return _run(settings, sock, routes)
    finally:
        sock.close()


def _fail(message: str, code: int) -> int:
    print(f"ssegate: {message}", file=sys.stderr, flush=True)
    return code


def _run(settings: Settings, sock: socket.socket, routes: RoutingConfig) -> int:
    if settings.workers > 1 and not settings.token_secret:
        # one random secret for every worker of this server, so that tokens and owners agree across them
        os.environ["SSEGATE_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    config = uvicorn.Config(
        "ssegate.serve:_served_app",
        factory=True,
        interface="asgi3",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="ssegate.http.listener:new_event_loop" if _has("uvloop") else "asyncio",
        http=PROTOCOL,
        lifespan="on",
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, fmt, colors=fmt == "text" and sys.stderr.isatty()),
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s + 2),
        timeout_keep_alive=75,
        backlog=4096,
        server_header=False,
    )  # configures logging
    url = base_url(settings.host, int(sock.getsockname()[1]))
    lines = upstreams(settings, routes)
    public = "" if is_loopback_host(settings.host) else f"{settings.host} port {sock.getsockname()[1]}"
    if fmt == "text":
        print(banner(url, lines, workers=settings.workers, listening=public), file=sys.stderr, flush=True)
    else:
        log.info("serving", extra={"url": url, "version": __version__, "compiled": compiled(),
                                   "workers": settings.workers,
                                   "upstreams": [{"model": m, "provider": p, "url": u} for m, p, u in lines]})
    warning = startup_warning(settings)
    if warning is not None:
        log.warning(warning)
    if settings.workers > 1:
        from .http.uvicorn_glue import ReloadingMultiprocess

        ReloadingMultiprocess(config, sockets=[sock]).run()
        return 0
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down gracefully, then raised it again for us
        pass
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
