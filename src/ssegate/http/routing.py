"""Routes that answer their own errors, so that ssegate's endpoints behave the same inside anybody's FastAPI app.

FastAPI's exception handlers belong to the application, and ``Gateway.router`` is mounted in applications ssegate
does not own. ``GatewayRoute`` (the ``route_class`` of every ssegate router) therefore turns what its endpoint
raises into the contract's JSON error answer itself (CONTRACT §4): a ``GatewayError`` by its code, status and
headers (``Retry-After``, ``x-should-retry``), a validation error as ``invalid_request`` (400 for a body that is
not JSON, 422 for a wrong field, with the fields named). ``OpenAIRoute`` answers in OpenAI's error shape (§7).
Errors raised while a stream is running are the stream's business (``event: error``), not this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import GatewayError, InvalidRequest

__all__ = ["GatewayRoute", "OpenAIRoute", "describe_validation", "error_body", "invalid_request", "validation_error"]


def error_body(err: GatewayError, openai: bool) -> dict[str, Any]:
    return err.openai_body() if openai else err.body()


def describe_validation(errors: Any) -> str:
    """The first few validation errors, each as ``field.path: what is wrong``."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def invalid_request(errors: Any, method: str, ctype: str) -> InvalidRequest:
    """The ``invalid_request`` for a body's validation errors: 400 for a body that is not JSON, else 422 naming the
    fields; a POST sent as another content type is told to send JSON."""
    bad_json = any(e.get("type") == "json_invalid" for e in errors)
    msg = "request body is not valid JSON" if bad_json else describe_validation(errors)
    if method == "POST" and ctype and "json" not in ctype:
        msg = f"send the body as JSON with 'Content-Type: application/json' (got {ctype!r}): {msg}"
    return InvalidRequest(msg, status=400 if bad_json else 422)


def validation_error(request: Request, exc: RequestValidationError) -> InvalidRequest:
    return invalid_request(exc.errors(), request.method, request.headers.get("content-type", ""))


class GatewayRoute(APIRoute):
    openai_errors = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()
        openai = self.openai_errors

        # An error answered here drops its traceback first: FastAPI keeps the validation error it raises in a local
        # of the frame that raised it, and the traceback holds that frame, a reference cycle (with the request, its
        # scope and the server's request cycle) left for the garbage collector by every refused request.
        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except GatewayError as err:
                err.__traceback__ = None
                return JSONResponse(error_body(err, openai), status_code=err.status, headers=err.headers())
            except RequestValidationError as exc:
                exc.__traceback__ = None
                invalid = validation_error(request, exc)
                return JSONResponse(error_body(invalid, openai), status_code=invalid.status, headers=invalid.headers())
            except HTTPException as exc:  # FastAPI's wrapper of a failed body read (e.g. the body limit)
                cause = exc.__cause__
                if not isinstance(cause, GatewayError):
                    raise
                exc.__traceback__ = cause.__traceback__ = None
                return JSONResponse(error_body(cause, openai), status_code=cause.status, headers=cause.headers())

        return handler


class OpenAIRoute(GatewayRoute):
    openai_errors = True
