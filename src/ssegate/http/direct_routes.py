"""The two streaming endpoints answered without the framework's routing, in ``ssegate serve``'s own app.

``POST /v1/chat/stream`` and ``POST /v1/chat/completions`` are most of a gateway's traffic, and FastAPI's routing,
dependency solving and exception middleware cost more CPU per request than ssegate's own work of starting a stream
(docs/benchmarks.md, setup cost). ``DirectRoutes`` is the innermost middleware of the standalone app: it answers
those two paths itself and passes everything else on. It does what the FastAPI routes do, with the same parts:
the body is read through the app's body limit, parsed and checked with the very models the routes declare (so
errors are worded the same and the OpenAPI docs stay true), the caller is identified, and the request goes to
the same endpoint functions (``routes/native.py``, ``routes/openai_chat.py``). CORS and the body limit still wrap
it. Mounted in another application, ``Gateway.router`` serves these paths through FastAPI as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import GatewayError
from ..sse import dumps
from .chat_body import ChatCompletionIn, NativeChatIn
from .response import json_error_response
from .routes import native, openai_chat
from .routes.deps import SCOPE_KEY, caller
from .routing import invalid_request

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["DirectRoutes"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class DirectRoutes:
    def __init__(self, app: ASGIApp, gate: Gateway) -> None:
        self.app = app
        self.gate = gate
        self.paths: dict[str, Handler] = {"/v1/chat/stream": self._native, "/v1/chat/completions": self._openai}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.paths.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = self.gate
        await handler(scope, receive, send)

    async def _native(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            conn = HTTPConnection(scope)
            raw = await _json_body(conn, receive)
            body = _validate(NativeChatIn, raw, conn)
            response = native.start_stream(self.gate, body, raw, caller(conn))
        except GatewayError as err:
            await json_error_response(send, err.status, dumps(err.body()), err.headers())
            return
        await response(scope, receive, send)

    async def _openai(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            conn = HTTPConnection(scope)
            raw = await _json_body(conn, receive)
            body = _validate(ChatCompletionIn, raw, conn)
            response = openai_chat.start_completion(self.gate, body, raw, caller(conn))
        except GatewayError as err:
            await json_error_response(send, err.status, dumps(err.openai_body()), err.headers())
            return
        await response(scope, receive, send)


async def _json_body(conn: HTTPConnection, receive: Receive) -> Any:
    """The request body as JSON (read through the body limit, which raises ``PayloadTooLarge`` past it)."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            more = False
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    if not raw:
        raise _invalid(conn, [{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid(conn, [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}]) from None


def _validate(model: type[NativeChatIn] | type[ChatCompletionIn], raw: Any, conn: HTTPConnection) -> Any:
    try:
        return model.model_validate(raw, from_attributes=True)  # the framework's wording for a non-object
    except ValidationError as exc:
        raise _invalid(conn, exc.errors()) from None


def _invalid(conn: HTTPConnection, errors: Any) -> GatewayError:
    return invalid_request(errors, conn.scope["method"], conn.headers.get("content-type", ""))
