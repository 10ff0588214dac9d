"""Resume and cancel (CONTRACT §5): ``GET /v1/streams/{id}``, ``POST /v1/streams/{id}/cancel``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from ...errors import InvalidRequest
from ...sse import split_event_id
from ..response import EventStreamResponse
from ..routing import GatewayRoute
from .deps import caller, gateway

__all__ = ["router"]

router = APIRouter(tags=["streams"], route_class=GatewayRoute)

StreamId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get(
    "/v1/streams/{stream_id}",
    summary="Replay a stream after a seq, then follow it live",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "nothing left to send"}},
)
async def resume(
    stream_id: StreamId,
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=10**12)] = None,
) -> Response | EventStreamResponse:
    gw = gateway(request)
    owner = caller(request)
    seq = after
    last_id = request.headers.get("last-event-id")
    if seq is None and last_id:
        parsed = split_event_id(last_id)
        if parsed is None or parsed[0] != stream_id:
            raise InvalidRequest("Last-Event-ID must be '<stream_id>:<seq>' of this stream")
        seq = parsed[1]
    return await gw.resume_response(stream_id, seq or 0, owner)


@router.post("/v1/streams/{stream_id}/cancel", status_code=202, summary="Stop a generation")
async def cancel(stream_id: StreamId, request: Request) -> dict[str, Any]:
    gw = gateway(request)
    return await gw.cancel(stream_id, caller(request))
