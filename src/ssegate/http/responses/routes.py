"""OpenAI's Responses API (CONTRACT §11): create, retrieve (and resume), cancel, over the same generations and log.

``POST /v1/responses`` translates the request (``request.py``) and starts a generation like every other endpoint
(admission, retries, timeouts, the commit rule); ``encoder.py`` writes its log as Responses events.

- ``stream: true``: the event stream. A failure before the first output is a plain HTTP error in OpenAI's shape
  (the commit rule); after it, ``error`` + ``response.failed``. Closing the stream cancels the generation (after
  ``DETACH_GRACE_S``, as for every OpenAI-compatible client, which cannot ask for a grace of its own).
- ``stream`` false: the whole response object once the generation ends (the HTTP error for a failure); leaving
  meanwhile cancels it.
- ``background: true``: the generation belongs to nobody's connection. It runs to its end (or its timeouts, a
  cancel, shutdown) whatever its clients do; only a client that leaves before the stream is committed (before it
  could learn the response's id) stops it. Not streamed, the answer is the ``queued`` object at once.

``GET /v1/responses/{id}`` rebuilds the object from the log (``queued``/``in_progress`` while it runs);
``?stream=true[&starting_after=N]`` replays the events after N (all of them without it: what the SDK's
``responses.stream(response_id=...)`` asks for) and follows the rest live, on any replica (Redis mode reads the
log there, as ``GET /v1/streams/{id}`` does). ``POST /v1/responses/{id}/cancel`` is the generation's cancel; it
waits (a few seconds at most) for the log's end and answers the object, ``cancelled``, or as it ended when it had
already ended. Any response can be cancelled (OpenAI allows it only in background mode; a superset). Ids are
``resp_<stream id>``; only the key that created a response sees it; a response is kept ``LOG_TTL_S`` after its
end; ``store: false`` makes it unknown to retrieve and cancel at once (its events still serve the open stream).

``previous_response_id`` names a response to continue (``_previous``): one this key created, stored, and ended
(one still running is a 400 saying so), found like a retrieve, on any replica. Its log keeps what it sent
upstream without its instructions (``StreamLog.history``; Redis mode keeps it in the stream's meta hash, with
the same expiry as its events), and its output is rebuilt from its events; ``request.py`` puts them before the
new input. Anything else (unknown, expired, another key's, ``store: false``) is a 400 ``invalid_request`` with
``param: "previous_response_id"``, as OpenAI answers a previous response it does not find.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse, Response

from ...core.entries import START, TERMINAL
from ...errors import InvalidRequest, NotFound
from ...sse import dumps
from ..response import EventStreamResponse, Follows
from ..routes.deps import caller, gateway
from ..routing import OpenAIRoute
from ..whole_answer import WholeAnswerResponse
from .encoder import ResponsesEncoder, ResponseState, stream_id_of
from .request import ECHO_API, PREVIOUS, Previous, ResponsesIn, parse_body, responses_request

if TYPE_CHECKING:
    from ...core.generation import Generation
    from ...core.log import StreamLog
    from ...gateway import Gateway

__all__ = ["router"]

router = APIRouter(tags=["responses"], route_class=OpenAIRoute)

ResponseId = Annotated[str, Path(min_length=6, max_length=140, pattern=r"^resp_[A-Za-z0-9_-]+$")]

CANCEL_WAIT_S = 5.0
"""How long a cancel waits for the generation's end before it answers the object as it is."""

PREVIOUS_WAIT_S = 1.0
"""How long a request continuing another replica's response waits for that response's end to reach Redis: its
replica writes what it streamed a few milliseconds later, and a client may send the next request the moment it
read ``response.completed``."""

_RESPONSE_ID = re.compile(r"^resp_[A-Za-z0-9_-]{1,135}$")


class _Background:
    """What a background response's stream follows instead of its generation: leaving does not stop it, unless
    the client left before the commit (it never learned the id, so nobody could ever read the rest)."""

    __slots__ = ("gen",)

    def __init__(self, gen: Generation) -> None:
        self.gen = gen

    def attach(self) -> None:
        return None

    def detach(self) -> None:
        if not self.gen.committed:
            self.gen.cancel("disconnect")


class ResponseObjectResponse(WholeAnswerResponse[ResponseState]):
    """``stream`` false: the response object once the generation ends (``whole_answer.py``)."""

    def new_state(self) -> ResponseState:
        return ResponseState(self.gen.stream_id)

    def feed(self, state: ResponseState, kinds: list[int], payloads: list[Any]) -> None:
        state.feed_all(kinds, payloads)

    def success(self, state: ResponseState) -> tuple[bytes, dict[str, str]]:
        return dumps(state.response()), {"X-Stream-Id": self.gen.stream_id}


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise InvalidRequest("request body is not valid JSON") from None


@router.post(
    "/v1/responses",
    summary="OpenAI Responses API: create a response (streamed, or not, or in the background)",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}},
    # the body is read by hand (every problem a 400 naming the field, as OpenAI answers); its schema for the docs
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ResponsesIn.model_json_schema()}}}},
)
async def create_response(request: Request) -> Response:
    gw = gateway(request)
    owner = caller(request)
    body = parse_body(await _body(request))
    previous = None if body.previous_response_id is None else await _previous(gw, body.previous_response_id, owner)
    chat, origins = responses_request(body, gw.default_model(body.model), previous)
    if previous is not None and chat.history is not None and len(chat.history) > gw.settings.log_max_bytes:
        raise InvalidRequest(f"{PREVIOUS}: the conversation would be larger than a response keeps (LOG_MAX_BYTES); "
                             "start another one (send the items that matter in 'input')", param=PREVIOUS)
    try:
        gen = gw.start_generation(chat, owner)
    except InvalidRequest as exc:  # a field the upstream cannot honour: named as the client sent it
        raise InvalidRequest(origins.translate(exc.message), status=exc.status) from exc
    s = gw.settings
    if body.stream:
        encoder = ResponsesEncoder(ResponseState(gen.stream_id))
        if not body.background:
            return gw.follow(gen, encoder)
        return EventStreamResponse(gen.log, encoder, gen=gen, commit=True, follows=_Background(gen),
                                   heartbeat_s=s.heartbeat_s, send_timeout_s=s.send_timeout_s,
                                   on_discard=gw.hub.discard)
    # no commit rule without a stream: the status goes out at the end (or, in the background, at once)
    gen.committed = True
    if body.background:
        state = ResponseState(gen.stream_id)
        state.feed_all(gen.log.kinds, gen.log.payloads)
        return JSONResponse(state.response(), headers={"X-Stream-Id": gen.stream_id})
    return ResponseObjectResponse(gen, gw.hub.discard, s.send_timeout_s)


async def _open(gw: Gateway, rid: str, owner: str, *, history: bool = False
                ) -> tuple[StreamLog, Follows | None, bool]:
    """The log of a response: here, or (Redis mode) a copy of another replica's (with its ``history`` when asked
    for); what a follower attaches to (the generation here, the reader of a copy); whether the log is a copy that
    may lag behind its replica."""
    sid = stream_id_of(rid)
    if sid is None:
        raise NotFound("no such response")
    if gw.replicas is not None and gw.eventlog.get(sid) is None:
        remote = await gw.replicas.open(sid, owner, history=history)
        return remote.log, remote, True
    return gw.hub.get_log(sid, owner), gw.hub.live.get(sid), False


async def _previous(gw: Gateway, rid: str, owner: str) -> Previous:
    """The response that ``previous_response_id`` names: its conversation and its output, once it has ended."""
    unknown = InvalidRequest(f"{PREVIOUS}: no response {rid!r} to continue (unknown, expired, created with "
                             "'store: false' or with another key)", param=PREVIOUS)
    if not _RESPONSE_ID.match(rid):
        raise unknown
    try:
        log, follows, remote = await _open(gw, rid, owner, history=True)
        if remote and not log.finished:
            await _until_finished(log, follows, PREVIOUS_WAIT_S)
        kinds, payloads = _entries(log)
    except NotFound:
        raise unknown from None
    if kinds[-1] not in TERMINAL:  # (a copy closed without its end, Redis being away, is not over either)
        raise InvalidRequest(f"{PREVIOUS}: response {rid!r} is still running; continue it once it has ended "
                             "(or cancel it)", param=PREVIOUS)
    if log.history is None:  # its request kept nothing to continue from
        raise unknown
    state = ResponseState(log.stream_id)
    state.feed_all(kinds, payloads)
    return Previous(rid, orjson.loads(log.history), state.response()["output"])


def _entries(log: StreamLog) -> tuple[list[int], list[Any]]:
    """Every entry of a stored response's log (kinds and payloads); ``NotFound`` for a stream that is not one
    (another protocol's, ``store: false``) and for one whose first events were dropped (longer than the log
    keeps)."""
    entries = log.since(0)
    if entries is None or not entries[0] or entries[0][0] != START:
        raise NotFound("this response's first events have expired")
    kinds, payloads = entries
    echo = payloads[0].get("echo") or {}
    if echo.get("api") != ECHO_API or not echo.get("store", True):
        raise NotFound("no such response")
    return kinds, payloads


def _state(log: StreamLog) -> ResponseState:
    state = ResponseState(log.stream_id)
    state.feed_all(*_entries(log))
    return state


@router.get(
    "/v1/responses/{response_id}",
    summary="Retrieve a response; with stream=true, replay its events after starting_after and follow it",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}},
)
async def retrieve_response(
    response_id: ResponseId,
    request: Request,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0, le=10**12)] = None,
) -> Response:
    gw = gateway(request)
    log, follows, remote = await _open(gw, response_id, caller(request))
    if not stream:
        return JSONResponse(_state(log).response(), headers={"X-Stream-Id": log.stream_id})
    kinds, payloads = _entries(log)
    after = -1 if starting_after is None else starting_after
    state, first = ResponseState.resume(log.stream_id, kinds, payloads, after)
    lagging = remote and not log.finished  # a copy may not have the events its replica already sent
    if first == len(kinds) and after >= state.seq and not lagging:
        raise NotFound(f"no event {after} in this response: its last is {state.seq - 1}")
    # a background response goes on whoever follows it; another replica's is read while somebody follows it
    live = follows if remote or not state.echo.get("background") else None
    s = gw.settings
    return EventStreamResponse(log, ResponsesEncoder(state), follows=live, after=first,
                               heartbeat_s=s.heartbeat_s, send_timeout_s=s.send_timeout_s)


@router.post("/v1/responses/{response_id}/cancel", summary="Cancel a response (its generation stops)",
             response_model=None)
async def cancel_response(response_id: ResponseId, request: Request) -> JSONResponse:
    gw = gateway(request)
    owner = caller(request)
    log, follows, remote = await _open(gw, response_id, owner)
    _entries(log)  # a stored response of this owner
    if not log.finished:
        await gw.cancel(log.stream_id, owner)
        await _until_finished(log, follows if remote else None, CANCEL_WAIT_S)
    return JSONResponse(_state(log).response(), headers={"X-Stream-Id": log.stream_id})


async def _until_finished(log: StreamLog, reader: Follows | None, wait_s: float) -> None:
    """Wait (``wait_s`` at most) for the log's terminal entry; ``reader`` keeps a copy of another replica's log up
    to date meanwhile."""
    if reader is not None:
        reader.attach()
    try:
        async with asyncio.timeout(wait_s):
            while not log.finished:
                fut = log.waiter()
                try:
                    await fut
                finally:
                    log.discard_waiter(fut)
    except TimeoutError:
        pass
    finally:
        if reader is not None:
            reader.detach()
