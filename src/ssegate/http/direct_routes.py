"""The two streaming endpoints answered without the framework's routing, in ``ssegate serve``'s own app.

``POST /v1/chat/stream`` and ``POST /v1/chat/completions`` are most of a gateway's traffic, and FastAPI's
middleware stack, routing and dependency solving cost more CPU per request than ssegate's own work of starting a
stream (docs/benchmarks.md, setup cost). ``SSEGateApp`` hands these two paths to ``DirectRoutes`` before the
framework sees them, when nothing needs to wrap them (no CORS configured). It does what the FastAPI routes and
middleware do, with the same parts: the body limit (``MAX_BODY_BYTES``, 413; a body that arrived with its head is
taken from ``ssegate serve``'s request cycle, ``uvicorn_glue.whole_body``, not awaited), the body parsed and
checked with the very models the routes declare (so errors are worded the same and the OpenAPI docs stay true; a
plain body, text messages and scalar options, is checked by msgspec against a subset of its model that reads the
same values: ``plain_body.py``, a third of the model's cost), the caller
identified (``auth.identity``), the same endpoint functions (``starts.py``), and an unexpected exception answered
as ``internal_error`` without detail. The two headers it reads (``Content-Length``, ``Content-Type``) are looked
up in the scope's raw list, and the models' validator is called directly: with ``starts.py`` compiled, only
``Gateway.follow`` (and starlette's ``HTTPConnection``, with client keys configured) run in the interpreter from
here to the generation. ``Front`` is ``SSEGateApp``'s ASGI callable, which sends requests here. Mounted in another
application, ``Gateway.router`` serves these paths through FastAPI as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from operator import methodcaller
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
import orjson
from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import GatewayError, PayloadTooLarge
from ..sse import dumps
from .auth import ANONYMOUS, identity
from .chat_body import ChatCompletionIn, NativeChatIn
from .plain_body import Plain, PlainChatCompletion, PlainNativeChat
from .response import RAW_KEY, json_error_response
from .routes.deps import SCOPE_KEY
from .routing import invalid_request
from .starts import start_completion, start_stream
from .uvicorn_glue import whole_body

if TYPE_CHECKING:
    from ..gateway import Gateway

__all__ = ["DirectRoutes", "Front", "plain_fields"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_loads: Final = orjson.loads
_convert: Final = msgspec.convert
_asdict: Final = msgspec.structs.asdict
_Invalid: Final = msgspec.ValidationError

logger: Final = logging.getLogger("ssegate.http")

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class DirectRoutes:
    def __init__(self, gate: Gateway, max_body: int) -> None:
        self.gate = gate
        self.max_body = max_body
        self.paths: dict[str, Handler] = {
            "/v1/chat/stream": self._endpoint(NativeChatIn, PlainNativeChat, start_stream, methodcaller("body")),
            "/v1/chat/completions": self._endpoint(ChatCompletionIn, PlainChatCompletion, start_completion,
                                                   methodcaller("openai_body")),
        }

    def handler(self, scope: Scope) -> Handler | None:
        """The direct handler of this request, or None for the framework."""
        handler = self.paths.get(scope["path"]) if scope["method"] == "POST" else None
        if handler is not None:
            scope[SCOPE_KEY] = self.gate  # what Gateway.router's dependency does for its routes
        return handler

    def _endpoint(self, model: Any, plain: type[Plain], start: Callable[..., Response],
                  error_body: Callable[[GatewayError], dict[str, Any]]) -> Handler:
        """The handler of one route: its body model, the model's subset that msgspec checks (``plain_body.py``),
        its endpoint function, the shape of its errors."""
        validate = model.__pydantic_validator__.validate_python  # what ``model_validate`` calls

        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                length, ctype = _body_headers(scope["headers"])
                raw = await self._json_body(length, ctype, receive)
                fields = plain_fields(raw, plain)
                if fields is None:  # not a plain body: the model decides, and words what it refuses
                    try:  # (from_attributes: the framework's wording for a body that is not an object)
                        fields = validate(raw, from_attributes=True).__dict__
                    except ValidationError as exc:
                        raise invalid_request(exc.errors(), "POST", ctype) from None
                gw = self.gate
                keys = gw.routing.client_keys  # (without keys everyone is anonymous: no connection object to read)
                owner = identity(HTTPConnection(scope), gw.settings, keys) if keys else ANONYMOUS
                response = start(gw, fields, raw, owner)
            except Exception as exc:  # answered here: no framework around to do it
                err = _as_gateway_error(exc)
                status, content, headers = err.status, dumps(error_body(err)), _headers(err)
                del err  # its traceback holds this frame: kept, they would be a reference cycle per bad request
                await json_error_response(send, status, content, headers)
                return
            await response(scope, receive, send)

        return handle

    async def _json_body(self, length: str | None, ctype: str, receive: Receive) -> Any:
        """The request body as JSON; ``PayloadTooLarge`` past ``MAX_BODY_BYTES`` (by Content-Length, or counted)."""
        limit = self.max_body
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise PayloadTooLarge(f"request body is over {limit} bytes")
        whole = whole_body(receive)  # (all of it arrived with the head: ssegate serve's cycle hands it over)
        chunks: list[bytes] = [] if whole is None else [whole]
        seen = 0 if whole is None else len(whole)
        more = whole is None
        while True:
            if seen > limit:
                raise PayloadTooLarge(f"request body is over {limit} bytes")
            if not more:
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return _parse(ctype, b"".join(chunks))


class Front:
    """``SSEGateApp``'s ASGI callable (``SSEGateApp.asgi``): with ``raw`` (every middleware of the app leaves body
    messages alone), an HTTP request keeps the server's own ``receive``/``send`` in the scope (``RAW_KEY``: the
    streaming fast path) and goes to its direct route, if it has one; everything else goes to ``framework``
    (FastAPI's own ``__call__`` of the app). Compiled: a request's task resumes through this coroutine at each of
    its steps (an interpreted ``__call__`` cost ~5k instructions a stream)."""

    def __init__(self, framework: Handler, direct: DirectRoutes | None, raw: bool) -> None:
        self.framework: Final = framework
        self.direct: Final = direct
        self.raw: Final = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.raw or scope["type"] != "http":
            await self.framework(scope, receive, send)
            return
        scope[RAW_KEY] = (receive, send)
        try:
            direct = self.direct
            handler = direct.handler(scope) if direct is not None else None
            if handler is not None:
                await handler(scope, receive, send)
            else:
                await self.framework(scope, receive, send)
        finally:
            scope.pop(RAW_KEY, None)  # the server's request cycle holds the scope: no cycle left for the GC


def _as_gateway_error(exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    logger.exception("POST direct route failed")
    return GatewayError("internal error")


def _headers(err: GatewayError) -> dict[str, str]:
    headers = err.headers()
    if isinstance(err, PayloadTooLarge):
        headers["Connection"] = "close"  # the rest of the body is not read
    return headers


def plain_fields(raw: Any, kind: type[Plain]) -> dict[str, Any] | None:
    """The values of a plain body's fields by name (what its model's ``__dict__`` holds, for the fields
    ``starts.py`` reads), or None where ``kind`` (``plain_body.py``) refuses it: its model decides."""
    if type(raw) is not dict:
        return None
    try:
        body = _convert(raw, kind)
    except _Invalid:
        return None
    return _asdict(body)


def _body_headers(headers: Any) -> tuple[str | None, str]:
    """``Content-Length`` (None when absent) and ``Content-Type`` (empty when absent) from the scope's raw header
    list: the first of each, as latin-1, as starlette's ``Headers.get`` reads them."""
    length: str | None = None
    ctype: str | None = None
    for header in headers:  # (pairs, by index: tuples here, lists under some servers)
        if type(header) is tuple:  # (read as a typed pair: an item of an object of no known type is a generic lookup)
            pair = cast(tuple[bytes, bytes], header)
            name, value = pair[0], pair[1]
        else:
            name, value = header[0], header[1]
        if name == b"content-length":
            if length is None:
                length = value.decode("latin-1")
        elif name == b"content-type" and ctype is None:
            ctype = value.decode("latin-1")
    return length, ctype or ""


def _parse(ctype: str, raw: bytes) -> Any:
    if not raw:
        raise invalid_request([{"type": "missing", "loc": ("body",), "msg": "Field required"}], "POST", ctype)
    try:
        return _loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}], "POST",
                              ctype) from None
