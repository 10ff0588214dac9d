"""The native streaming endpoints (CONTRACT §3): ``GET /chat`` and ``POST /v1/chat/stream``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ...errors import InvalidRequest
from ...sse import split_event_id
from ...upstream import ChatRequest, Message
from ..response import EventStreamResponse
from .deps import caller, gateway

__all__ = ["ChatMessageIn", "ChatStreamIn", "router"]

router = APIRouter(tags=["native"])

MAX_TEXT = 1_000_000


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Annotated[str, Field(max_length=MAX_TEXT)]


class ChatStreamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=2000)]
    model: Annotated[str | None, Field(max_length=256)] = None
    max_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    resume_grace_s: Annotated[float | None, Field(ge=0, le=86400)] = None
    """Keep generating this long after the client drops, for a resume (capped by RESUME_GRACE_MAX_S)."""

    def to_request(self, model: str) -> ChatRequest:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        messages: list[Message] = [{"role": m.role, "content": m.content} for m in self.messages]
        return ChatRequest(messages, model, self.max_tokens, self.temperature, stop, resume_grace_s=self.resume_grace_s)


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
    chat = ChatRequest([{"role": "user", "content": q}], gw.default_model(model), resume_grace_s=grace)
    return gw.stream_response(chat, owner)


@router.post(
    "/v1/chat/stream",
    summary="Stream a chat completion as ssegate events",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(body: ChatStreamIn, request: Request) -> EventStreamResponse:
    gw = gateway(request)
    owner = caller(request)
    return gw.stream_response(body.to_request(gw.default_model(body.model)), owner)
