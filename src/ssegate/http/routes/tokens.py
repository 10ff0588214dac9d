"""Stream tokens for browsers (``EventSource`` cannot send headers): ``POST /v1/auth/token``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from ..auth import issue_token
from .deps import caller, gateway

__all__ = ["router"]

router = APIRouter(tags=["auth"])


@router.post(
    "/v1/auth/token",
    summary="A short-lived stream token, for ?token= on GET /chat and GET /v1/streams/{id}",
)
async def stream_token(request: Request) -> JSONResponse:
    """Needs the API key itself (a token cannot mint tokens). The token names the same owner as the key, so
    streams started with it can be resumed or cancelled with the key, and the other way round."""
    settings = gateway(request).settings
    owner = caller(request)  # POST: only a real key is accepted here
    token, exp = issue_token(owner, settings)
    return JSONResponse(
        {"token": token, "token_type": "stream", "expires_in": int(settings.token_ttl_s), "expires_at": exp},
        headers={"Cache-Control": "no-store"},
    )
