"""The OpenAI-compatible API (CONTRACT §7): ``POST /v1/chat/completions`` and ``GET /v1/models``.

The same generations as the native endpoints (commit rule, retries, heartbeats, cancel on disconnect), only
encoded differently (``encoders.OpenAIChunkEncoder``: text, reasoning and tool-call deltas as OpenAI streams them).
A failure after the commit is ``event: error`` with ``{"error": {...}}`` in OpenAI's shape, which the SDKs raise;
before it, the real HTTP status with the same body. ``stream: false`` follows the log to its end
(``CompletionResponse``) and answers one ``chat.completion`` with ``message.content``, ``message.tool_calls`` and
``message.reasoning_content``; a client that leaves meanwhile cancels the generation.

Every request field ssegate does not own is passed through to an OpenAI-compatible upstream (``chat_body.py``);
an upstream that cannot honour one answers 400 naming it. ``n`` other than 1 and ``logprobs`` are refused.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ...core.entries import ERROR
from ...errors import NotFound
from ...sse import dumps
from ..chat_body import ChatCompletionIn, chat_request
from ..encoders import Answer, OpenAIChunkEncoder, as_error, finish_reason, openai_usage
from ..response import RAW_KEY, json_error_response, routing_headers
from ..routing import OpenAIRoute
from ..uvicorn_glue import drop_if_unread
from .deps import caller, gateway

if TYPE_CHECKING:
    from ...core.generation import Generation
    from ...gateway import Gateway

__all__ = ["CompletionResponse", "router", "start_completion"]

router = APIRouter(tags=["openai"], route_class=OpenAIRoute)


class CompletionResponse(Response):
    """``stream: false``: follow the generation to its end, then answer one ``chat.completion`` (or the error).

    The client's disconnect is watched meanwhile: it detaches from the generation, which cancels it."""

    def __init__(self, gen: Generation, created: int, on_discard: Any = None, send_timeout_s: float = 30.0) -> None:
        self.status_code = 200
        self.background = None
        self.gen = gen
        self.created = created
        self.on_discard = on_discard
        self.send_timeout_s = send_timeout_s
        self.disconnected = False
        self._fut: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get(RAW_KEY)
        raw_receive = raw[0] if raw is not None else receive
        gen = self.gen
        gen.attach()
        watcher = asyncio.get_running_loop().create_task(self._watch(raw_receive))
        detached = False
        try:
            answer = await self._collect()
            if answer is None:
                return
            gen.detach()
            detached = True
            terminal = gen.log.terminal()
            assert terminal is not None
            kind, payload = terminal
            if kind == ERROR:
                if self.on_discard is not None:
                    self.on_discard(gen)
                err = as_error(gen.error, payload)
                await json_error_response(send, err.status, dumps(err.openai_body()), err.headers())
                return
            body = dumps(self.completion(answer))
            headers = {"X-Stream-Id": gen.stream_id, **routing_headers(gen)}
            await json_error_response(send, 200, body, headers)
            if raw is not None:
                drop_if_unread(raw[1], self.send_timeout_s)  # the whole answer went out in one write
        finally:
            watcher.cancel()
            if not detached:
                gen.detach()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                fut = self._fut
                if fut is not None and not fut.done():
                    fut.set_result(None)
                return

    async def _collect(self) -> Answer | None:
        """The whole answer, read as it is appended (so no bound on the log's length cuts it); ``None`` when the
        client left first."""
        log = self.gen.log
        answer = Answer()
        cursor = 0
        while not self.disconnected:
            new = log.since(cursor)
            if new is None:  # pragma: no cover - this follower reads every append as it happens
                raise NotFound("the answer outgrew the event log")
            answer.add(new)
            cursor = log.last_seq
            if log.finished:
                return answer
            fut = self._fut = log.waiter()
            try:
                await fut
            finally:
                log.discard_waiter(fut)
                self._fut = None
        return None

    def completion(self, answer: Answer) -> dict[str, Any]:
        gen = self.gen
        assert answer.terminal is not None
        done = answer.terminal[1]
        return {
            "id": f"chatcmpl-{gen.stream_id}",
            "object": "chat.completion",
            "created": self.created,
            "model": gen.log.model,
            "choices": [{
                "index": 0,
                "message": answer.openai_message(),
                "logprobs": None,
                "finish_reason": finish_reason(done.get("finish_reason")),
            }],
            "usage": openai_usage(done.get("usage")),
        }


@router.post(
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completion (streamed or not)",
    response_class=Response,
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}, "application/json": {}}}},
)
async def chat_completions(body: ChatCompletionIn, request: Request) -> Response:
    return start_completion(gateway(request), body, await request.json(), caller(request))


def start_completion(gw: Gateway, body: ChatCompletionIn, raw: dict[str, Any], owner: str) -> Response:
    """The endpoint itself, for a validated body (``raw``: the same body as parsed JSON); also what the standalone
    app's ``direct_routes.py`` calls."""
    chat = chat_request(body, raw, gw.default_model(body.model))
    created = int(time.time())
    gen = gw.start_generation(chat, owner)
    if body.stream:
        return gw.follow(gen, OpenAIChunkEncoder(gen.stream_id, chat.model, created, body.include_usage))
    # no commit rule without a stream: the status is sent at the end, so retries may use the first-token deadline
    gen.committed = True
    return CompletionResponse(gen, created, on_discard=gw.hub.discard, send_timeout_s=gw.settings.send_timeout_s)


def _model(name: str, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by}


@router.get("/v1/models", summary="OpenAI-compatible model list")
async def list_models(request: Request) -> JSONResponse:
    """The model names the caller's key may use (a routing file's wildcards as written)."""
    table = gateway(request).routing.table
    owner = caller(request)
    return JSONResponse({"object": "list", "data": [_model(n, by) for n, by in table.listing(owner)]})


@router.get("/v1/models/{model:path}", summary="OpenAI-compatible model lookup")
async def get_model(model: str, request: Request) -> JSONResponse:
    """A name the caller may use (one a wildcard matches too, and a listed wildcard itself); ``404
    model_not_found`` for any other."""
    table = gateway(request).routing.table
    group = table.listed(model, caller(request))
    return JSONResponse(_model(model, group.owned_by))
