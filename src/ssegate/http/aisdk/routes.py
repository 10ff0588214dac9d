"""The AI SDK's endpoints (CONTRACT §11): ``POST /api/chat``, ``GET /api/chat/{id}/stream``, ``POST .../cancel``.

``POST /api/chat`` is what ``useChat`` (``DefaultChatTransport``) sends: a generation like every other (commit
rule, retries, heartbeats, the stream's resume grace, the log), followed with the UI message stream encoder. Before
it starts, a stream still running for the same chat is cancelled: a chat has one answer in progress, and the SDK
sends the next request only once it gave up on the previous one (``stop()``, a new message, regenerate).

``GET /api/chat/{id}/stream`` is the SDK's ``reconnectToStream`` (``useChat({resume: true})`` on mount): the chat's
running answer replayed from its ``start`` (the client rebuilds the message from the start chunks), then followed
live; ``204`` when nothing is running for that chat (and caller). ``POST /api/chat/{id}/cancel`` stops it (``202``,
or ``204`` when nothing is running): ``stop()`` only aborts the fetch, which the server cannot tell from a page
reload, so an app whose requests ask for a resume grace calls this when the person presses stop.

Errors on the two endpoints the transport calls are plain text (``<code>: <message>``), with the real status: the
transport throws ``new Error(await response.text())``, so that text is what ``useChat``'s ``error.message`` says.
"""

from __future__ import annotations

import asyncio
import secrets

import orjson
from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from ...errors import GatewayError, InvalidRequest, NotFound
from ..response import EventStreamResponse, Follows
from ..routes.deps import caller, gateway
from ..routing import GatewayRoute
from .chats import ChatStream
from .encoder import HEADER, VERSION_HEADER, ClientVersion, UIMessageStreamEncoder, text_error
from .messages import ChatId, describe, ui_chat_request

__all__ = ["router"]

router = APIRouter(tags=["ai-sdk"], route_class=GatewayRoute)

_CHAT_ID: TypeAdapter[str] = TypeAdapter(ChatId)
CANCEL_WAIT_S = 2.0
"""How long a new answer waits for the chat's previous one (cancelled) to end here, so that it no longer holds the
caller's concurrency slot."""
STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the UI message stream"},
    400: {"content": {"text/plain": {}}, "description": "`<code>: <message>` (every error status)"},
}


def _error(err: GatewayError) -> Response:
    status, body, headers = text_error(err)
    return Response(body, status_code=status, headers=headers)


def _chat_id(value: str) -> str:
    try:
        return _CHAT_ID.validate_python(value)
    except ValidationError as exc:
        raise InvalidRequest(f"chat id: {describe(exc)}") from exc


async def _body(request: Request) -> object:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except ValueError as exc:
        raise InvalidRequest("request body is not valid JSON") from exc


@router.post("/api/chat", summary="Answer a chat as the AI SDK's UI message stream (useChat)",
             response_class=Response, response_model=None, responses=STREAM_RESPONSES)
async def chat(request: Request) -> Response:
    gw = gateway(request)
    try:
        owner = caller(request)
        client = ClientVersion.parse(request.headers.get(VERSION_HEADER))
        ui, chat_request = ui_chat_request(await _body(request), gw.default_model)
        chats = gw.chats
        previous = await chats.lookup(owner, ui.chat_id)
        if previous is not None:
            await _cancel_previous(request, previous, owner)
        gen = gw.start_generation(chat_request, owner)
        message_id = ui.continues or "msg-" + secrets.token_urlsafe(16)
        try:
            await chats.register(owner, ui.chat_id, gen.stream_id, message_id)
        except GatewayError:
            gen.cancel("request")  # nobody could resume or cancel it by chat id: do not leave it running
            raise
        response = gw.follow(gen, UIMessageStreamEncoder(message_id, client))
        response.extra_headers.append(HEADER)
        return response
    except GatewayError as err:
        return _error(err)


async def _cancel_previous(request: Request, previous: ChatStream, owner: str) -> None:
    gw = gateway(request)
    gen = gw.hub.live.get(previous.stream_id)
    try:
        await gw.cancel(previous.stream_id, owner)
    except NotFound:
        return
    if gen is not None and not gen.task.done():
        await asyncio.wait([gen.task], timeout=CANCEL_WAIT_S)


@router.get("/api/chat/{chat_id}/stream", summary="Resume a chat's running answer from its start (204: none)",
            response_class=Response, response_model=None,
            responses={**STREAM_RESPONSES, 204: {"description": "nothing is running for this chat"}})
async def resume(chat_id: str, request: Request) -> Response:
    gw = gateway(request)
    try:
        owner = caller(request)
        client = ClientVersion.parse(request.headers.get(VERSION_HEADER))
        running = await gw.chats.lookup(owner, _chat_id(chat_id))
        if running is None:
            return Response(status_code=204)
        follows: Follows | None
        try:
            if gw.replicas is not None and gw.eventlog.get(running.stream_id) is None:
                remote = await gw.replicas.open(running.stream_id, owner)
                log, follows = remote.log, remote
            else:
                log = gw.hub.get_log(running.stream_id, owner)
                follows = gw.hub.live.get(running.stream_id)
        except NotFound:
            return Response(status_code=204)  # expired, or failed before it started streaming
        if log.finished:
            return Response(status_code=204)
        if log.first_seq != 1:
            raise NotFound("the start of this answer was dropped from the event log: it cannot be replayed")
        s = gw.settings
        response = EventStreamResponse(
            log, UIMessageStreamEncoder(running.message_id, client), follows=follows, after=0,
            heartbeat_s=s.heartbeat_s, send_timeout_s=s.send_timeout_s,
        )
        response.extra_headers.append(HEADER)
        return response
    except GatewayError as err:
        return _error(err)


@router.post("/api/chat/{chat_id}/cancel", summary="Stop a chat's running answer (204: none running)",
             status_code=202, response_model=None,
             responses={204: {"description": "nothing is running for this chat"}})
async def cancel(chat_id: str, request: Request) -> Response:
    gw = gateway(request)
    owner = caller(request)
    running = await gw.chats.lookup(owner, _chat_id(chat_id))
    if running is None:
        return Response(status_code=204)
    local = gw.eventlog.get(running.stream_id)
    if local is not None and local.finished:
        return Response(status_code=204)
    try:
        await gw.cancel(running.stream_id, owner)
    except NotFound:
        return Response(status_code=204)
    return JSONResponse({"chat_id": chat_id, "stream_id": running.stream_id, "status": "cancelling"},
                        status_code=202)
