"""Stream tokens for browsers (``EventSource`` cannot send headers): ``POST /v1/auth/token``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from ..auth import Scope, issue_token
from ..routing import GatewayRoute
from .deps import caller, gateway

__all__ = ["TokenIn", "router"]

router = APIRouter(tags=["auth"], route_class=GatewayRoute)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope = "resume"
    """``resume`` (the default): resume the caller's streams only; ``stream``: also start them on GET /chat."""


@router.post(
    "/v1/auth/token",
    summary="A short-lived stream token, for ?token= on GET /chat and GET /v1/streams/{id}",
)
async def stream_token(request: Request, body: TokenIn | None = None) -> JSONResponse:
    """Needs the API key itself (a token cannot mint tokens). The token names the same owner as the key, so
    streams started with it can be resumed or cancelled with the key, and the other way round. It may only
    resume streams, unless the body asks for ``{"scope": "stream"}``."""
    settings = gateway(request).settings
    owner = caller(request)  # POST: only a real key is accepted here
    scope = body.scope if body is not None else "resume"
    token, exp = issue_token(owner, settings, scope=scope)
    return JSONResponse(
        {"token": token, "token_type": "stream", "scope": scope, "expires_in": int(settings.token_ttl_s),
         "expires_at": exp},
        headers={"Cache-Control": "no-store"},
    )
