"""The ASGI application: routers, error handlers, limits, and the lifespan that owns the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from .response import RAW_KEY, json_error_response
from .routes import native, openai_chat, ops, streams, tokens
from .routes.ops import WEB_DIR

__all__ = ["SSEGateApp", "create_app"]

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models", "/v1/completions")


def uses_openai_errors(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


class SSEGateApp(FastAPI):
    """FastAPI, plus the server's own ``receive``/``send`` kept in the scope (see ``response.py``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_KEY] = (receive, send)
        await super().__call__(scope, receive, send)


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


def _describe(errors: Any) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        bad_json = any(e.get("type") == "json_invalid" for e in errors)
        status = 400 if bad_json else 422
        msg = "request body is not valid JSON" if bad_json else _describe(errors)
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and ctype and "json" not in ctype:
            msg = f"send the body as JSON with 'Content-Type: application/json' (got {ctype!r}): {msg}"
        return error_response(request, InvalidRequest(msg, status=status))

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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = Gateway(settings)
        app.state.gateway = gw
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = SSEGateApp(
        title="ssegate",
        version=__version__,
        description="LLM streaming gateway: tokens over Server-Sent Events.",
        lifespan=lifespan,
        strict_content_type=False,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(native.router)
    app.include_router(streams.router)
    app.include_router(openai_chat.router)
    app.include_router(ops.router)
    app.include_router(tokens.router)
    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["X-Stream-Id", "Retry-After", "X-Ssegate-Model", "X-Ssegate-Deployment"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
