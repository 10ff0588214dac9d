"""The application ``ssegate serve`` runs: one ``Gateway`` (its ``router`` and ``ops_router`` at the root, its
``lifespan``), the chat page's static files, a body limit, CORS when configured, and the exception handlers for
what no route answers (404 for an unknown path, a crash outside a route).

This is the one place where the streaming fast path is switched on: ``SSEGateApp`` keeps the server's own
``receive``/``send`` in the scope (``response.RAW_KEY``), so stream bodies skip the framework's per-message
wrappers and may be written to the transport directly. That is provably safe only here, where the middleware
stack is known (the body limit wraps ``receive`` only; CORS adds headers to the response start, which still goes
through it). Mounted in another application, ``Gateway.router`` uses the plain ASGI ``send`` it is given, unless
the application is wrapped in ``expose_server`` (here, not in the compiled ``response.py``: servers and frameworks
tell an ASGI app by ``iscoroutinefunction``, which a compiled function fails).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..__about__ import __version__
from ..errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge
from ..gateway import Gateway
from ..settings import Settings
from ..sse import dumps
from .direct_routes import DirectRoutes, Front
from .response import json_error_response
from .routes.ops import WEB_DIR
from .routing import validation_error

__all__ = ["SSEGateApp", "create_app", "expose_server"]

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/completions", "/v1/responses")


def uses_openai_errors(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


def expose_server(app: Any) -> Any:
    """Outermost ASGI wrapper: keep the server's own ``receive``/``send`` in the scope (``RAW_KEY``), which turns
    the fast path on (``direct_routes.Front`` without direct routes). Only around an app whose middleware leaves
    body messages alone (FastAPI's own exception wrappers do; ``SSEGateApp`` checks its middleware itself and
    needs no wrapper). An interpreted coroutine function, which servers recognise as an ASGI 3 app."""
    front = Front(app, None, True)

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        await front(scope, receive, send)

    return wrapper


SAFE_MIDDLEWARE = ("BodyLimit", "CORSMiddleware")
"""Middleware known to leave body messages alone: with no other, stream bodies may skip the stack."""


class SSEGateApp(FastAPI):
    """FastAPI, plus the server's own ``receive``/``send`` kept in the scope (see ``response.py``) while every
    middleware of the app is one of ``SAFE_MIDDLEWARE``; add any other and the fast path switches itself off.
    Requests go through ``asgi`` (``direct_routes.Front``, compiled), made at the first one, when the app's
    middleware is final; ``ssegate serve`` gives uvicorn ``asgi`` itself."""

    direct: DirectRoutes | None = None
    """The streaming endpoints answered before the framework (``direct_routes.py``); None when something (CORS)
    must wrap every response."""
    _front: Front | None = None

    @property
    def asgi(self) -> Front:
        """The app's ASGI callable: the direct routes, then FastAPI's."""
        front = self._front
        if front is None:
            raw = all(getattr(m.cls, "__name__", "") in SAFE_MIDDLEWARE for m in self.user_middleware)
            front = self._front = Front(super().__call__, self.direct, raw)
        return front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)


class BodyLimit:
    """413 for request bodies over ``limit`` bytes, by Content-Length or by counting what arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    err = PayloadTooLarge(f"request body is over {self.limit} bytes")
                    body = err.openai_body() if uses_openai_errors(scope["path"]) else err.body()
                    await json_error_response(send, 413, dumps(body), {"Connection": "close"})
                    return
                break
        seen = 0
        limit = self.limit

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body is over {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


def error_response(request: Request, err: GatewayError) -> JSONResponse:
    body = err.openai_body() if uses_openai_errors(request.url.path) else err.body()
    return JSONResponse(body, status_code=err.status, headers=err.headers())


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, validation_error(request, exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err: GatewayError
        if isinstance(exc.__cause__, GatewayError):  # e.g. the body limit, raised while FastAPI read the body
            return error_response(request, exc.__cause__)
        if exc.status_code == 404:
            err = NotFound("no such endpoint")
        else:
            err = InvalidRequest(str(exc.detail), status=exc.status_code)
        resp = error_response(request, err)
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        err = GatewayError("internal error")
        return error_response(request, err)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def create_app(settings: Settings | None = None) -> SSEGateApp:
    settings = settings or Settings()
    gate = Gateway(settings)
    app = SSEGateApp(
        title="ssegate",
        version=__version__,
        description="LLM streaming gateway: tokens over Server-Sent Events.",
        lifespan=gate.lifespan,
        strict_content_type=False,
    )
    app.state.settings = settings
    app.state.gateway = gate
    install_error_handlers(app)
    app.include_router(gate.router)
    app.include_router(gate.ops_router)
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if not settings.cors_origin_list:  # CORS headers go on every response: then the framework answers them all
        app.direct = DirectRoutes(gate, settings.max_body_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-AI-SDK-Version"],
            expose_headers=["X-Stream-Id", "Retry-After", "X-Ssegate-Model", "X-Ssegate-Deployment"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
