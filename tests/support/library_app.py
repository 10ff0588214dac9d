"""An application of its own that uses ssegate as a library, for tests/test_library.py (run by real uvicorn).

``LIBRARY_APP_STACK`` picks its shape: ``middleware`` (a FastAPI app with ``@app.middleware("http")``
(BaseHTTPMiddleware), ``GZipMiddleware``, ``CORSMiddleware`` and a pure-ASGI tracing middleware that wraps
``send`` the way OpenTelemetry's does), ``plain`` (a FastAPI app with no middleware) or ``fast`` (ssegate's own
``SSEGateApp`` with no middleware: the direct-to-transport fast path). Its sources record when their ``finally``
ran (``GET /probe``), with the same monotonic clock the test reads.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import ssegate
from ssegate.http.standalone import SSEGateApp

STACK = os.environ.get("LIBRARY_APP_STACK", "middleware")
closed: dict[str, float] = {}
"""Source name -> when its ``finally`` ran (time.monotonic)."""


class Tracing:
    """A pure-ASGI middleware that wraps ``send`` (as OpenTelemetry's ASGI instrumentation does) and counts bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def traced_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-traced", b"1")]}
            await send(message)

        await self.app(scope, receive, traced_send)


def create_app() -> FastAPI:
    gate = ssegate.Gateway(ssegate.Settings(demo_ttft_s=0.05, demo_tokens_per_s=200, heartbeat_s=0.5,
                                            commit_timeout_s=0.5, send_timeout_s=2.0, demo_scripts=True))
    app = (SSEGateApp if STACK == "fast" else FastAPI)(lifespan=gate.lifespan)
    app.include_router(gate.router, prefix="/llm")
    app.include_router(gate.ops_router, prefix="/ops")

    def paced(name: str, n: int, delay: float, fail: str | None = None) -> AsyncIterator[Any]:
        async def source() -> AsyncIterator[Any]:
            try:
                for i in range(n):
                    if fail is not None and i == 2:
                        if fail == "timeout":
                            raise ssegate.UpstreamTimeout("the tool took too long")
                        raise ValueError("a secret detail that must not leak")
                    if i:
                        await asyncio.sleep(delay)
                    yield ssegate.Reasoning(f"r{i} ") if i == 0 else f"t{i} "
                yield ssegate.Finish("stop", ssegate.Usage(3, n))
            finally:
                closed[name] = time.monotonic()

        return source()

    @app.get("/paced")
    async def paced_stream(request: Request, name: str, n: int = 20, delay: float = 0.05,
                           fail: str | None = None, grace: float | None = None) -> Response:
        return gate.stream(request, paced(name, n, delay, fail), resume_grace_s=grace)

    @app.post("/ask")
    async def ask(request: Request, q: str) -> Response:
        async def answer() -> AsyncIterator[Any]:
            yield "Context: notes. "
            async for part in gate.complete([{"role": "user", "content": q}], reasoning_effort="low"):
                yield part

        return gate.stream(request, answer())

    @app.get("/probe")
    async def probe() -> dict[str, float]:
        return closed

    if STACK == "middleware":
        @app.middleware("http")
        async def seen(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            response = await call_next(request)
            response.headers["X-Seen"] = "1"
            return response

        app.add_middleware(GZipMiddleware, minimum_size=10)
        app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"], expose_headers=["X-Stream-Id"])
        app.add_middleware(Tracing)
    return app
