"""The gateway's state for one process: settings, the model router, the event log, live generations, metrics.

Routers ask it for responses: ``stream_response`` starts a generation and follows it under the commit
rule; ``resume_response`` follows an existing stream from a seq. Admission control lives here; which upstream
answers is the model router's (``routing/``).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Any

from starlette.responses import Response

from .cluster.replicas import Replicas
from .core.generation import Generation, StreamHub
from .core.limits import Limits
from .core.log import MemoryEventLog
from .core.request import ChatRequest
from .errors import InvalidRequest, NotFound, ShuttingDown
from .http.auth import fingerprint
from .http.encoders import NativeEncoder
from .http.response import EventStreamResponse, Follows, StreamEncoder
from .obs.metrics import Metrics
from .obs.stream_log import StreamLogger
from .routing import Router
from .settings import Settings
from .upstream import Provider
from .upstream.httpclient import Pool

__all__ = ["Gateway"]


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = Pool(limit=settings.max_upstream_connections, connect_timeout=settings.upstream_connect_timeout_s)
        self.routing = Router(settings, self.pool, fingerprint)
        self.metrics = Metrics()
        self.metrics.watch_routing(self.routing)
        self.replicas = Replicas(settings) if settings.redis_url else None
        self.eventlog: MemoryEventLog = (
            self.replicas.eventlog
            if self.replicas is not None
            else MemoryEventLog(
                ttl_s=settings.log_ttl_s, max_streams=settings.log_max_streams, max_events=settings.log_max_events,
                max_bytes=settings.log_max_bytes
            )
        )
        self.hub = StreamHub(settings, self.eventlog)
        self.limits = Limits(settings, lambda code: self.metrics.rejected.labels(code).inc())
        self.hub.observers += [self.limits, self.metrics, StreamLogger(settings.log_prompts)]
        if self.replicas is not None:
            self.replicas.bind(self.hub)
        self._shutdown_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._chain_signals()
        self.routing.watch_sighup()
        if self.replicas is not None:
            await self.replicas.start()

    def _chain_signals(self) -> None:
        """Learn of SIGTERM/SIGINT before the server does, in the main thread only (``ssegate serve``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.begin_shutdown)
                previous(signum, frame)

            signal.signal(sig, handler)

    def begin_shutdown(self) -> None:
        """SIGTERM: refuse new streams, let running ones finish for the grace period, then end them."""
        if self._shutdown_task is None:
            self.hub.shutting_down = True
            if self.replicas is not None:  # their streams go on elsewhere: let those clients resume there now
                self.replicas.release_followers()
            self._shutdown_task = asyncio.get_running_loop().create_task(
                self.hub.shutdown(self.settings.shutdown_grace_s)
            )

    async def stop(self) -> None:
        if self._shutdown_task is not None:
            await self._shutdown_task
        await self.hub.shutdown(0)
        if self.replicas is not None:
            await self.replicas.stop()
        await self.routing.aclose()
        await self.pool.aclose()
        self.eventlog.clear()

    # --- requests -----------------------------------------------------------------------------------
    @property
    def providers(self) -> list[Provider]:
        """Every deployment's provider in the current routing table, the default model's first."""
        return self.routing.table.providers

    def default_model(self, model: str | None) -> str:
        chosen = self.routing.default_model(model)
        if not chosen:
            where = "the routing file's first model is a wildcard" if self.settings.config else "set SSEGATE_MODEL"
            raise InvalidRequest(f"no model given: pass 'model' (GET /v1/models lists them; {where})")
        return chosen

    def admit(self, owner: str) -> None:
        """Refuse a new stream when shutting down, without Redis, at the global cap or over the key's limits
        (``limits.py``)."""
        if self.hub.shutting_down:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ShuttingDown("the server is shutting down", retry_after=1.0)
        if self.replicas is not None and not self.replicas.healthy:
            self.metrics.rejected.labels("overloaded").inc()
            self.replicas.require()
        self.limits.admit(owner)

    def start_generation(self, request: ChatRequest, owner: str) -> Generation:
        """Route the request (404 ``model_not_found``; a 400 naming a field its upstream cannot honour), admit it,
        start it."""
        route = self.routing.route(request, owner)
        self.admit(owner)
        return self.hub.start(request, owner, route)

    def stream_response(self, request: ChatRequest, owner: str) -> EventStreamResponse:
        gen = self.start_generation(request, owner)
        return self.follow(gen, NativeEncoder(gen.stream_id, self.settings.retry_ms))

    def follow(self, gen: Generation, encoder: StreamEncoder) -> EventStreamResponse:
        s = self.settings
        return EventStreamResponse(
            gen.log, encoder, gen=gen, commit=True, heartbeat_s=s.heartbeat_s, send_timeout_s=s.send_timeout_s,
            on_discard=self.hub.discard,
        )

    async def resume_response(self, stream_id: str, after: int, owner: str) -> Response | EventStreamResponse:
        """Replay the events after ``after``, then follow live; ``204`` when the client already has the terminal
        event. A stream this process does not have is read from Redis (another replica's), when configured."""
        follows: Follows | None
        if self.replicas is not None and self.eventlog.get(stream_id) is None:
            remote = await self.replicas.open(stream_id, owner)
            log, follows = remote.log, remote
            # the generating replica may have sent an event that its writer has not put in Redis yet
            ahead_ok = not log.finished
        else:
            log = self.hub.get_log(stream_id, owner)
            follows = self.hub.live.get(stream_id)
            ahead_ok = False
        if after > log.last_seq and not ahead_ok:
            raise NotFound("no such event in this stream")
        if log.finished and after >= log.last_seq:
            return Response(status_code=204)
        if after < log.last_seq and log.since(after) is None:
            raise NotFound("those events have expired")
        s = self.settings
        return EventStreamResponse(
            log, NativeEncoder(stream_id, s.retry_ms), follows=follows, after=after,
            heartbeat_s=s.heartbeat_s, send_timeout_s=s.send_timeout_s,
        )

    async def cancel(self, stream_id: str, owner: str) -> dict[str, Any]:
        """Cancel a stream here, or (Redis mode) on the replica generating it."""
        if self.replicas is not None and self.eventlog.get(stream_id) is None:
            await self.replicas.cancel(stream_id, owner)
        else:
            self.hub.cancel(stream_id, owner)
        return {"stream_id": stream_id, "status": "cancelling"}
