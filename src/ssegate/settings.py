"""Every ``SSEGATE_*`` knob, documented in one place.

Settings come from the environment (``SSEGATE_<NAME>``) and, for the ones listed in the CLI, from flags
of ``ssegate serve``. See the README's settings table, which mirrors this module.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import InvalidRequest

__all__ = ["MIN_SECRET_BYTES", "Settings", "check_query", "is_loopback_host"]

MIN_SECRET_BYTES = 32
"""The shortest TOKEN_SECRET accepted (an HMAC key guessable offline is no secret)."""
MIN_QUERY_BYTES = 8 * 1024
"""MAX_QUERY_BYTES may not go below this: browsers send a few KiB of headers with every request."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical", "trace")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SSEGATE_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    # --- serving -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Bind address. A non-loopback address needs API_KEYS (or ALLOW_OPEN=1)."""
    port: int = Field(8000, ge=0, le=65535)
    """Port to serve on."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes (each a full gateway; use REDIS_URL so they share streams)."""

    # --- upstream ------------------------------------------------------------------------------
    config: str = ""
    """Path of the model routing file (TOML, see docs/models.md); reloaded on SIGHUP. Empty: PROVIDER, UPSTREAM_URL,
    UPSTREAM_API_KEY, MODEL and FALLBACK_URLS make one implicit entry."""
    provider: str = "demo"
    """`demo` (embedded, offline), `openai` (any OpenAI-compatible server), `anthropic`, or a plugin's name."""
    upstream_url: str = ""
    """Base URL of the upstream, e.g. `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`."""
    upstream_api_key: str = Field("", repr=False)
    """Upstream key; falls back to `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`."""
    model: str = ""
    """Default model name when a request names none."""
    fallback_urls: str = ""
    """Comma-separated base URLs tried in order, after ``upstream_url``, before the first token."""
    retry_attempts: int = Field(3, ge=1, le=10)
    """Attempts per model before the first token (connection errors, 5xx, 429; a group's deployments share them),
    then the model's fallbacks get as many each."""
    retry_backoff_s: float = Field(0.1, ge=0)
    """First backoff between retries (doubled each try, with jitter; `Retry-After` honoured)."""
    cooldown_failures: int = Field(3, ge=1)
    """Failures (connection errors, 5xx, 429, timeouts) of a deployment within COOLDOWN_WINDOW_S that make it sit
    out COOLDOWN_S (then one trial stream decides)."""
    cooldown_window_s: float = Field(30.0, gt=0)
    """The window in which COOLDOWN_FAILURES failures open a deployment's cooldown."""
    cooldown_s: float = Field(30.0, gt=0)
    """How long a failing deployment is skipped while its model has an alternative; a 429's `Retry-After` sets it."""
    upstream_connect_timeout_s: float = Field(10.0, gt=0)
    """Connect timeout for upstream requests."""
    max_upstream_connections: int = Field(0, ge=0)
    """Most upstream requests in flight at once (more wait for a place); 0 = unlimited."""

    # --- the demo model ------------------------------------------------------------------------
    demo_ttft_s: float = Field(0.3, ge=0)
    """Time to first token of the demo model."""
    demo_tokens_per_s: float = Field(40.0, gt=0)
    """Pace of the demo model."""
    demo_scripts: bool = False
    """Let a last user message `/script {json}` make the demo model play exactly that (for tests)."""

    # --- stream lifecycle ----------------------------------------------------------------------
    heartbeat_s: float = Field(15.0, gt=0)
    """A `: ping` comment is sent whenever no event went out for this long."""
    commit_timeout_s: float = Field(2.0, ge=0)
    """How long the HTTP status may be held waiting for the first upstream event."""
    first_token_timeout_s: float = Field(120.0, gt=0)
    """The upstream has this long to produce its first output: text, reasoning or a tool call (role-only or empty
    chunks do not count)."""
    idle_timeout_s: float = Field(60.0, gt=0)
    """Silence from the upstream (no bytes at all), after its first output, after which the stream fails with
    `upstream_timeout`; a stall is reported this long after the last byte, whatever FIRST_TOKEN_TIMEOUT_S is."""
    send_timeout_s: float = Field(30.0, gt=0)
    """A client that accepts no bytes for this long is dropped (and its generation cancelled)."""
    request_read_timeout_s: float = Field(30.0, gt=0)
    """A client must send its whole request (line, headers, body) within this long of starting it (slowloris guard)."""
    detach_grace_s: float = Field(0.0, ge=0)
    """After the last client leaves, generation goes on this long waiting for a resume; 0 = cancel at once. A
    request may ask for its own grace (`?grace=`, `resume_grace_s`), up to RESUME_GRACE_MAX_S."""
    resume_grace_max_s: float = Field(60.0, ge=0)
    """The longest resume grace a request may ask for (`?grace=` on GET /chat, `resume_grace_s` in a POST body)."""
    shutdown_grace_s: float = Field(10.0, ge=0)
    """On SIGTERM, running streams get this long to finish before they end with `shutting_down`."""
    retry_ms: int = Field(2000, ge=0)
    """The ``retry:`` field sent at the head of every stream (EventSource reconnect delay)."""

    # --- limits --------------------------------------------------------------------------------
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0)
    """Largest accepted request body (413 beyond). 20 MiB fits a conversation with a few images sent as data URLs
    (base64 makes an image a third larger); a body is held in memory while it is read and checked."""
    max_streams: int = Field(10_000, ge=1)
    """Global cap on concurrent streams (503 ``overloaded`` beyond it)."""
    max_streams_per_key: int = Field(0, ge=0)
    """Concurrent streams per client key; 0 = unlimited."""
    requests_per_minute: int = Field(0, ge=0)
    """Requests that start a stream, per minute per client key (429 beyond); 0 = unlimited."""

    # --- event log -----------------------------------------------------------------------------
    redis_url: str = ""
    """Empty: in-process event log. Set: Redis event log and cross-replica resume and cancel."""
    redis_lease_s: float = Field(3.0, ge=0.3, le=60)
    """Redis mode: a replica's lease on its streams; if it dies, followers get `generation_lost` in ~1.4x this."""
    log_ttl_s: float = Field(600.0, gt=0)
    """How long a finished stream's events stay available for resume."""
    log_max_bytes: int = Field(16 << 20, gt=0)
    """Text kept per stream for resume (older events are dropped; a client that far behind is ended)."""
    log_max_events: int = Field(100_000, gt=0)
    """Events kept per stream (older ones are dropped; resuming before them is 404)."""
    log_max_streams: int = Field(100_000, gt=0)
    """Streams kept in the in-process log (the oldest finished ones go first)."""

    # --- security ------------------------------------------------------------------------------
    api_keys: str = Field("", repr=False)
    """Comma-separated client keys; empty = no auth (loopback only unless ALLOW_OPEN=1)."""
    allow_open: bool = False
    """Allow serving a non-loopback address without API keys."""
    cors_origins: str = ""
    """Comma-separated origins allowed to call the API from a browser."""
    token_secret: str = Field("", repr=False)
    """Server secret, at least 32 bytes: it signs stream tokens (EventSource auth) and keys the fingerprints that name
    API keys in logs and stream owners (kept in Redis). Random per process when empty, so replicas (and restarts that
    must resume streams from Redis) need one shared: `python -c "import secrets; print(secrets.token_urlsafe(32))"`."""
    token_ttl_s: float = Field(300.0, gt=0, le=86400)
    """Lifetime of a stream token from `POST /v1/auth/token` (accepted as `?token=` on GET streams)."""
    log_prompts: bool = False
    """Include prompt text in logs."""
    log_level: str = "info"
    """Log level: debug, info, warning, error."""
    log_format: Literal["auto", "text", "json"] = "auto"
    """Log lines on stderr: `text` (one human line per event), `json` (one object per line), or `auto`: text when
    stderr is a terminal, else json. `ssegate serve --log-format` too."""
    max_query_bytes: int = Field(64 * 1024, ge=MIN_QUERY_BYTES)
    """Largest request head (request line with its query string, and headers), so also the longest `q` of GET /chat:
    431 beyond. Longer prompts go in the body of POST /v1/chat/stream (up to MAX_BODY_BYTES). Above 64 KiB it only
    allows more headers: the HTTP parser takes no URL over 65535 bytes."""

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        from .plugins import provider_names

        names = provider_names()
        if v not in names:
            raise ValueError(f"expected one of {', '.join(names)}")
        return v

    @field_validator("upstream_url", "fallback_urls")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return ",".join(u.strip().rstrip("/") for u in v.split(",") if u.strip())

    @field_validator("upstream_url", "fallback_urls", mode="after")
    @classmethod
    def _http_urls(cls, v: str) -> str:
        for url in filter(None, v.split(",")):
            if not url.startswith(("http://", "https://")):
                raise ValueError("expected a URL that starts with http:// or https://, e.g. http://127.0.0.1:11434/v1")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith(REDIS_SCHEMES):
            raise ValueError("expected redis://HOST:PORT/DB (or rediss://, unix://)")
        return v

    @field_validator("token_secret")
    @classmethod
    def _long_secret(cls, v: str) -> str:
        size = len(v.encode())
        if 0 < size < MIN_SECRET_BYTES:
            raise ValueError(
                f"is too short ({size} bytes): use at least {MIN_SECRET_BYTES} random bytes, e.g. "
                f'python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return v

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        level = v.strip().lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS[:4])}")
        return level

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def upstream_urls(self) -> list[str]:
        urls = [self.upstream_url] if self.upstream_url else []
        urls += [u for u in self.fallback_urls.split(",") if u]
        return urls

    def resolved_api_key(self) -> str:
        """The upstream key, falling back to the provider's conventional environment variable."""
        if self.upstream_api_key:
            return self.upstream_api_key
        env = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}.get(self.provider)
        return os.environ.get(env, "") if env else ""


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_query(q: str, settings: Settings) -> None:
    """Refuse a ``q`` (GET /chat) longer than MAX_QUERY_BYTES in UTF-8, with 414 and what to do instead.

    Under ``ssegate serve`` the request head is bounded by the same setting (431), so this catches what another
    ASGI server let through."""
    size = len(q.encode())
    if size > settings.max_query_bytes:
        raise InvalidRequest(
            f"'q' is {size} bytes, over SSEGATE_MAX_QUERY_BYTES ({settings.max_query_bytes}): "
            "send long prompts in the body of POST /v1/chat/stream",
            status=414,
        )
