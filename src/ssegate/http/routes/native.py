"""The native streaming endpoints (CONTRACT §3): ``GET /chat`` and ``POST /v1/chat/stream``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ...core.request import ChatRequest
from ...errors import InvalidRequest
from ...settings import check_query
from ...sse import split_event_id
from ..chat_body import MAX_TEXT, NativeChatIn
from ..response import EventStreamResponse
from ..routing import GatewayRoute
from ..starts import start_stream
from .deps import caller, gateway

__all__ = ["router"]

router = APIRouter(tags=["native"], route_class=GatewayRoute)


@router.get(
    "/chat",
    summary="Stream an answer to one question (EventSource-friendly)",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "stream already delivered"}},
)
async def chat_get(
    request: Request,
    q: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
    model: Annotated[str | None, Query(max_length=256)] = None,
    grace: Annotated[float | None, Query(ge=0, le=86400, description="resume grace in seconds")] = None,
) -> Response | EventStreamResponse:
    gw = gateway(request)
    owner = caller(request)
    last_id = request.headers.get("last-event-id")
    if last_id:
        parsed = split_event_id(last_id)
        if parsed is None:
            raise InvalidRequest("Last-Event-ID must be '<stream_id>:<seq>'")
        return await gw.resume_response(parsed[0], parsed[1], owner)
    if not q:
        raise InvalidRequest("missing query parameter 'q'")
    check_query(q, gw.settings)
    chat = ChatRequest([{"role": "user", "content": q}], gw.default_model(model), resume_grace_s=grace)
    return gw.stream_response(chat, owner)


@router.post(
    "/v1/chat/stream",
    summary="Stream a chat completion as ssegate events",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(body: NativeChatIn, request: Request) -> EventStreamResponse:
    return start_stream(gateway(request), body.__dict__, await request.json(), caller(request))
