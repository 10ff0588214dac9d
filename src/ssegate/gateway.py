"""``Gateway``: ssegate as one object: what ``ssegate serve`` runs, and what an application mounts (CONTRACT §10).

```python
gate = ssegate.Gateway()                          # Settings from SSEGATE_* unless one is passed
app = FastAPI(lifespan=gate.lifespan)             # starts and stops the gateway with the app
app.include_router(gate.router, prefix="/llm")    # the endpoints of §3, §5, §7, §11
return gate.stream(request, my_parts())           # an app's own async iterator of parts, as the §3 stream
async for part in gate.complete(messages): ...    # one upstream call, with retries and fallbacks
```

It holds the process's state (the model router and its providers, the upstream connection pool, the event log, live
generations, limits, metrics, the Redis replicas when configured) and the operations the routes call:
``start_generation`` (route the request to its model's upstreams, admit it, start it), ``follow`` (a response that
applies the commit rule), ``resume_response``, ``cancel``. ``router`` and ``ops_router`` bind ssegate's route
modules to this gateway (a dependency puts it in each request's scope), and every route answers its own errors
(``http/routing.py``), so they behave the same in ``ssegate serve`` and under an application's own middleware and
exception handlers.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import cached_property
from types import FrameType
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from .cluster.replicas import Replicas
from .core.entries import DELTA, DONE, ERROR, REASONING, TOOL_ARGS, TOOL_CALL
from .core.generation import Generation, StreamHub
from .core.limits import Limits
from .core.log import MemoryEventLog
from .core.request import ChatRequest
from .core.source import SourceProducer
from .errors import NotFound, error_from_code
from .http import starts
from .http.aisdk.chats import ChatStreams
from .http.auth import fingerprint, identity
from .http.chat_body import ChatCompletionIn
from .http.encoders import NativeEncoder
from .http.response import EventStreamResponse, Follows, StreamEncoder, following
from .http.routes.deps import SCOPE_KEY
from .obs.logs import redact_also
from .obs.metrics import Metrics
from .obs.stream_log import StreamLogger
from .parts import Finish, Part, Reasoning, ToolCallDelta, ToolCallStart, Usage
from .routing import Router
from .settings import Settings
from .upstream import Provider
from .upstream.httpclient import Pool

__all__ = ["Gateway"]


APP_OWNER = "app"
"""The owner of streams an application starts with ``complete()`` (no client request to name one)."""


class Gateway:
    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings if settings is not None else Settings()
        self.settings = settings
        self.pool = Pool(limit=settings.max_upstream_connections, connect_timeout=settings.upstream_connect_timeout_s)
        self.routing = Router(settings, self.pool, lambda key: fingerprint(key, settings), redact=redact_also)
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
        self._router: APIRouter | None = None
        self._ops_router: APIRouter | None = None

    # --- the public surface (CONTRACT §10) -----------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=gate.lifespan)``: start the gateway with the app, stop it (streams ended) after."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def _bind(self, request: HTTPConnection) -> None:
        """The routers' dependency: this gateway serves the request (async: FastAPI runs sync ones in a thread)."""
        request.scope[SCOPE_KEY] = self

    @property
    def router(self) -> APIRouter:
        """The endpoints of CONTRACT §3 (native streams), §5 (resume, cancel), §7 (OpenAI), §11 and stream tokens,
        bound to this gateway: ``app.include_router(gate.router, prefix="/llm")``."""
        if self._router is None:
            from .http import aisdk, responses
            from .http.routes import native, openai_chat, streams, tokens

            router = APIRouter(dependencies=[Depends(self._bind)])
            for module in (native, streams, openai_chat, responses, tokens, aisdk):
                router.include_router(module.router)
            self._router = router
        return self._router

    @property
    def ops_router(self) -> APIRouter:
        """``/healthz``, ``/readyz``, ``/metrics`` and the chat page at ``/`` (CONTRACT §8), bound to this gateway."""
        if self._ops_router is None:
            from .http.routes import ops

            router = APIRouter(dependencies=[Depends(self._bind)])
            router.include_router(ops.router)
            self._ops_router = router
        return self._ops_router

    def stream(self, request: Request, source: AsyncIterator[Part | Finish], *,
               resume_grace_s: float | None = None, model: str = "app") -> EventStreamResponse:
        """The native stream (CONTRACT §3-§5) of an application's own async iterator of parts: ids, the commit rule,
        heartbeats, the event log, resume and cancel through ``router``'s endpoints, exactly one terminal event.
        A disconnect (without a grace) or a cancel closes ``source``; a ``GatewayError`` it raises is its typed
        error, any other exception ``internal_error`` with no detail."""
        owner = identity(request, self.settings, self.routing.client_keys)
        starts.admit(self, owner)
        chat = ChatRequest([], model, resume_grace_s=resume_grace_s)
        gen = self.hub.start(chat, owner, SourceProducer(source))
        return self.follow(gen, NativeEncoder(gen.stream_id, self.settings.retry_ms))

    async def complete(self, messages: Iterable[Mapping[str, Any]], *, model: str | None = None,
                       **fields: Any) -> AsyncIterator[Part | Finish]:
        """One upstream call through this gateway's models, with retries and fallbacks: its parts as they arrive
        (``str`` text, ``Reasoning``, ``ToolCallStart``, ``ToolCallDelta``), then one ``Finish``. ``fields`` are
        those of OpenAI's chat request (``tools``, ``response_format``, ``max_tokens``, ...). Closing the iterator
        (or breaking out of the loop) cancels the upstream. Failures raise ``ssegate.GatewayError`` subclasses."""
        raw = {**fields, "messages": [dict(m) for m in messages]}
        if model is not None:
            raw["model"] = model
        body = ChatCompletionIn.model_validate(raw)
        chat = starts.chat_request(body.__dict__, raw, starts.default_model(self, model), True)
        gen = starts.start_generation(self, chat, APP_OWNER)
        gen.committed = True  # no HTTP status to hold: retries may use the first-token deadline
        log = gen.log
        cursor = 1
        try:
            while True:
                new = log.since(cursor)
                if new is None:  # a reader slower than the log's bounds (LOG_MAX_EVENTS, LOG_MAX_BYTES)
                    raise NotFound("the answer outgrew the event log: parts were dropped before they were read")
                for kind, payload in zip(*new, strict=True):
                    if kind == DELTA:
                        yield payload
                    elif kind == REASONING:
                        yield Reasoning(payload)
                    elif kind == TOOL_CALL:
                        yield ToolCallStart(payload["index"], payload["id"], payload["name"])
                    elif kind == TOOL_ARGS:
                        yield ToolCallDelta(payload["index"], payload["arguments"])
                    elif kind == DONE:
                        u = payload["usage"]
                        yield Finish(payload["finish_reason"],
                                     Usage(u["prompt_tokens"], u["completion_tokens"], u["estimated"]),
                                     payload.get("provider_data"))
                        return
                    elif kind == ERROR:
                        if gen.error is not None:
                            raise gen.error
                        e = payload["error"]
                        raise error_from_code(e["code"], e["message"], e["retryable"])
                cursor = log.last_seq
                fut = log.waiter()
                try:
                    await fut
                finally:
                    log.discard_waiter(fut)
        finally:
            gen.cancel("request")

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

    # (the steps of a stream's start are compiled functions: ``http/starts.py``)
    def default_model(self, model: str | None) -> str:
        return starts.default_model(self, model)

    def start_generation(self, request: ChatRequest, owner: str) -> Generation:
        return starts.start_generation(self, request, owner)

    def stream_response(self, request: ChatRequest, owner: str) -> EventStreamResponse:
        return starts.stream_response(self, request, owner)

    def follow(self, gen: Generation, encoder: StreamEncoder) -> EventStreamResponse:
        """The response that follows ``gen`` (every stream's, ``starts.py``'s too: where an application or a test
        may watch the responses made)."""
        s = self.settings
        return following(gen, encoder, s.heartbeat_s, s.send_timeout_s, self.hub.discard)

    async def resume_response(self, stream_id: str, after: int, owner: str) -> Response | EventStreamResponse:
        """Replay the events after ``after``, then follow live; ``204`` when the client already has the terminal
        event. A stream this process does not have is read from Redis (another replica's), when configured."""
        follows: Follows | None
        if self.replicas is not None and self.eventlog.get(stream_id) is None:
            remote = await self.replicas.open(stream_id, owner, seen=after)
            log, follows = remote.log, remote
            # (still) short of what the client has: the generating replica's writer is slow to put it in Redis
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

    @cached_property
    def chats(self) -> ChatStreams:
        """The AI SDK's chats: which stream answers each chat id now (``http/aisdk/chats.py``)."""
        return ChatStreams(self.hub, self.replicas)

    async def cancel(self, stream_id: str, owner: str) -> dict[str, Any]:
        """Cancel a stream here, or (Redis mode) on the replica generating it."""
        if self.replicas is not None and self.eventlog.get(stream_id) is None:
            await self.replicas.cancel(stream_id, owner)
        else:
            self.hub.cancel(stream_id, owner)
        return {"stream_id": stream_id, "status": "cancelling"}
