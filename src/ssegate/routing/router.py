"""The process's router: the current routing table, each stream's route, and reloads on SIGHUP.

``Router.route(request, owner)`` resolves the request's model for the caller (``ModelNotFound`` when it is not
served or not theirs), checks that the model's deployments can honour the request (the 400 naming the field comes
from the first that cannot, when none can) and returns the stream's producer (``chain.Route``).

``SIGHUP`` (with a routing file) reloads it in a worker thread (file I/O stays off the event loop): a file that
does not load is refused with an ``error`` log line and the old table stays; one that loads replaces the table
for new streams, while running streams finish on the deployments they started on (their ``Route`` holds them).
Deployments found in both tables keep their provider, streams in flight and cooldown; the others are retired and
their provider is closed when their last stream ends. Under ``ssegate serve --workers N`` the supervisor forwards
``SIGHUP`` to every worker (``http/uvicorn_glue.py``), and each reloads on its own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final

from ..core.request import ChatRequest
from ..errors import ConfigError
from ..plugins import provider_names
from ..settings import Settings
from ..upstream import Provider, make_provider
from ..upstream.httpclient import Pool
from .chain import Route, Step, usable
from .config import Deployment, RoutingConfig, implicit_config, load_config
from .table import Deployed, DeploymentStats, HealthPolicy, RoutingTable

__all__ = ["DEMO_MODEL", "Router", "settings_config"]

log: Final = logging.getLogger("ssegate.routing")

DEMO_MODEL: Final = "ssegate-demo"
"""The default model name of the embedded demo model, without a routing file."""


def settings_config(settings: Settings) -> RoutingConfig:
    """The routing file named by ``CONFIG``, or the implicit entry that the other settings make
    (``ConfigError`` for a file that does not load)."""
    if settings.config:
        return load_config(settings.config, provider_names())
    default = settings.model or (DEMO_MODEL if settings.provider == "demo" else None)
    return implicit_config(settings.provider, settings.upstream_urls, settings.resolved_api_key(), default)


class Router:
    """``redact`` is told every key a routing table holds, when it is built (at start and at each reload), so that
    the logs can hide them (``obs.logs.redact_also``; the routing layer does not import the logging one)."""

    def __init__(self, settings: Settings, pool: Pool, fingerprint: Callable[[str], str], *,
                 redact: Callable[[list[str]], None]) -> None:
        self.settings = settings
        self.pool = pool
        self.fingerprint = fingerprint
        self.redact = redact
        self.policy = HealthPolicy(settings.cooldown_failures, settings.cooldown_window_s, settings.cooldown_s)
        self.table = self._build(settings_config(settings), None)
        if settings.config:
            ignored = [name for name, set_ in (
                ("PROVIDER", settings.provider != "demo"), ("UPSTREAM_URL", settings.upstream_url),
                ("UPSTREAM_API_KEY", settings.upstream_api_key), ("MODEL", settings.model),
                ("FALLBACK_URLS", settings.fallback_urls)) if set_]
            if ignored:
                log.warning("%s ignored: the routing file %s names the models and their upstreams",
                            ", ".join(f"SSEGATE_{n}" for n in ignored), settings.config)
        self.reloads = 0
        self.reload_failures = 0
        self._retired: list[Deployed] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _make(self, dep: Deployment) -> Provider:
        return make_provider(dep.provider, self.settings, dep.url, dep.api_key, self.pool)

    def _build(self, config: RoutingConfig, previous: RoutingTable | None) -> RoutingTable:
        self.redact([m.deployment.api_key for m in config.models] + [d.api_key for d in config.chained]
                    + [k.key for k in config.keys])
        return RoutingTable(config, self._make, self.policy, self.fingerprint,
                            reuse=previous.deployed if previous is not None else None,
                            settings_keys=self.settings.api_key_list)

    # --- streams ---------------------------------------------------------------------------------------------
    def route(self, request: ChatRequest, owner: str) -> Route:
        """The producer for ``request`` (see the module's docstring)."""
        table = self.table
        group = table.resolve(request.model, owner)
        candidates, refusal = usable(group, request.model, request)
        if not candidates:
            assert refusal is not None
            raise refusal
        steps = [Step(group, request.model, candidates)]
        steps += [Step(g, asked or request.model) for g, asked in group.fallbacks]
        return Route(steps, self.settings, self._retire_done)

    def default_model(self, model: str | None) -> str | None:
        return self.table.default_model(model)

    @property
    def client_keys(self) -> tuple[str, ...]:
        return self.table.client_keys

    def stats(self) -> list[DeploymentStats]:
        loop = self._loop
        now = loop.time() if loop is not None else asyncio.get_running_loop().time()
        return self.table.stats(now)

    # --- reload ----------------------------------------------------------------------------------------------
    def watch_sighup(self) -> None:
        """Reload the routing file on SIGHUP (main thread, with a file only: without one SIGHUP keeps its default)."""
        self._loop = asyncio.get_running_loop()
        if not self.settings.config or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - platforms without signals
            log.warning("SIGHUP cannot be handled here: the routing file is not reloaded on signals")

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading the routing file %s", self.settings.config)
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Load the routing file again; False (old table kept, error logged) when it does not load."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                config = await asyncio.to_thread(settings_config, self.settings)
            except ConfigError as exc:
                self.reload_failures += 1
                log.error("routing file not reloaded (the previous table stays in use): %s", exc)
                return False
            old = self.table
            self.table = new = self._build(config, old)
            kept = {id(d) for d in new.deployed.values()}
            for d in old.deployed.values():
                if id(d) not in kept and not d.retired:
                    d.retired = True
                    self._retired.append(d)
                    if not d.in_flight:
                        self._retire_done(d)
            self.reloads += 1
            log.info("routing file reloaded: %d models, %d deployments", len(new.groups), len(new.deployed),
                     extra={"config": config.source, "reloads": self.reloads})
            return True

    def _retire_done(self, d: Deployed) -> None:
        """A retired deployment's last stream ended: close its provider."""
        if d in self._retired:
            self._retired.remove(d)
            self._spawn(d.provider.aclose())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task: asyncio.Task[None] = loop.create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Stop watching SIGHUP; close every provider (the current table's and retired ones')."""
        loop = self._loop
        if loop is not None and self.settings.config and threading.current_thread() is threading.main_thread():
            try:
                loop.remove_signal_handler(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                pass
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        providers = {id(d.provider): d.provider for d in [*self.table.deployed.values(), *self._retired]}
        self._retired.clear()
        for p in providers.values():
            await p.aclose()
