"""The OpenAI-compatible API (CONTRACT §7): ``POST /v1/chat/completions`` and ``GET /v1/models``.

The same generations as the native endpoints (commit rule, retries, heartbeats, cancel on disconnect),
only encoded differently: ``OpenAIChunkEncoder`` turns log entries into ``chat.completion.chunk`` objects
(the role first, then the content deltas, a chunk with ``finish_reason``, a usage chunk with
``choices: []`` when ``stream_options.include_usage``, then ``data: [DONE]``). A failure after the commit
is ``event: error`` with ``{"error": {...}}`` in OpenAI's shape, which the SDKs raise; before it, the real
HTTP status with the same body. ``stream: false`` follows the log to its end (``CompletionResponse``) and
answers one ``chat.completion``; a client that leaves meanwhile cancels the generation.

Accepted and ignored (OpenAI clients send many fields): anything not modelled below, e.g. ``top_p``,
``seed``, ``user``, ``tools``, ``response_format``, ``logprobs``. ``n`` other than 1 is refused.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ...core.entries import DELTA, DONE, ERROR, START, Entry
from ...errors import GatewayError, InvalidRequest, NotFound, error_from_code
from ...sse import dumps
from ...upstream import ChatRequest
from ...upstream import Message as ChatMessage
from ..response import RAW_KEY, json_error_response
from ..uvicorn_glue import drop_if_unread
from .deps import caller, gateway
from .native import MAX_TEXT

if TYPE_CHECKING:
    from ...core.generation import Generation

__all__ = ["ChatCompletionIn", "CompletionResponse", "OpenAIChunkEncoder", "router"]

router = APIRouter(tags=["openai"])

FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})
"""The finish reasons OpenAI clients know; others (``cancelled``) are reported as ``stop``."""


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Annotated[str, Field(max_length=64)]
    text: Annotated[str | None, Field(max_length=MAX_TEXT)] = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, tool_calls, ...
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Field(max_length=MAX_TEXT)] | Annotated[list[TextPart], Field(max_length=256)] | None = (
        None
    )

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequest(f"only text content is supported, not {part.type!r} parts")
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=2000)]
    model: Annotated[str | None, Field(max_length=256)] = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    stop: Annotated[str, Field(max_length=MAX_TEXT)] | Annotated[list[str], Field(max_length=16)] | None = None
    n: int | None = None

    def to_request(self, model: str) -> ChatRequest:
        if self.n is not None and self.n != 1:
            raise InvalidRequest("only n=1 is supported")
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        messages: list[ChatMessage] = [
            {"role": "tool" if m.role == "function" else m.role, "content": m.text()} for m in self.messages
        ]
        max_tokens = self.max_completion_tokens or self.max_tokens
        return ChatRequest(messages, model, max_tokens, self.temperature, stop or None)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def finish_reason(reason: Any) -> str:
    return reason if reason in FINISH_REASONS else "stop"


def openai_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    u = usage or {}
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def as_error(error: GatewayError | None, payload: dict[str, Any]) -> GatewayError:
    """The error behind an ``error`` entry: the generation's own, or rebuilt from the wire form."""
    if error is not None:
        return error
    e = payload.get("error") or {}
    return error_from_code(str(e.get("code", "internal_error")), str(e.get("message", "")), e.get("retryable"))


class OpenAIChunkEncoder:
    """Log entries as OpenAI ``chat.completion.chunk`` events (a ``response.StreamEncoder``)."""

    __slots__ = ("_base", "_delta_post", "_delta_pre", "_include_usage")

    def __init__(self, stream_id: str, model: str, created: int, include_usage: bool = False) -> None:
        self._base = {"id": f"chatcmpl-{stream_id}", "object": "chat.completion.chunk", "created": created,
                      "model": model}
        # the hot path: one content delta is the fixed prefix, the JSON string, the fixed suffix
        self._delta_pre = b"data: " + dumps(self._base)[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        self._delta_post = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self._include_usage = include_usage

    def head(self) -> bytes:
        return b""

    def _chunk(self, **fields: Any) -> bytes:
        return b"data: " + dumps({**self._base, **fields}) + b"\n\n"

    def encode(self, seq: int, entries: list[Entry]) -> bytes:
        out: list[bytes] = []
        for kind, payload in entries:
            if kind == DELTA:
                out.append(self._delta_pre + dumps(payload) + self._delta_post)
            elif kind == START:
                choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None}
                out.append(self._chunk(choices=[choice]))
            elif kind == DONE:
                choice = {"index": 0, "delta": {}, "logprobs": None,
                          "finish_reason": finish_reason(payload.get("finish_reason"))}
                out.append(self._chunk(choices=[choice]))
                if self._include_usage:
                    out.append(self._chunk(choices=[], usage=openai_usage(payload.get("usage"))))
                out.append(b"data: [DONE]\n\n")
            elif kind == ERROR:
                out.append(b"event: error\ndata: " + dumps(as_error(None, payload).openai_body()) + b"\n\n")
        return b"".join(out)

    def error_response(self, error: GatewayError | None, payload: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        err = as_error(error, payload)
        return err.status, dumps(err.openai_body()), err.headers()


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
            text = await self._collect()
            if text is None:
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
            body = dumps(self.completion(text, payload))
            headers = {"X-Stream-Id": gen.stream_id}
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

    async def _collect(self) -> str | None:
        """The whole text, read as it is appended (so no bound on the log's length cuts it); ``None`` when the
        client left first."""
        log = self.gen.log
        parts: list[str] = []
        cursor = 0
        while not self.disconnected:
            new = log.since(cursor)
            if new is None:  # pragma: no cover - this follower reads every append as it happens
                raise NotFound("the answer outgrew the event log")
            parts += [p for k, p in new if k == DELTA]
            cursor = log.last_seq
            if log.finished:
                return "".join(parts)
            fut = self._fut = log.waiter()
            try:
                await fut
            finally:
                log.discard_waiter(fut)
                self._fut = None
        return None

    def completion(self, text: str, done: dict[str, Any]) -> dict[str, Any]:
        gen = self.gen
        return {
            "id": f"chatcmpl-{gen.stream_id}",
            "object": "chat.completion",
            "created": self.created,
            "model": gen.log.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
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
    gw = gateway(request)
    owner = caller(request)
    chat = body.to_request(gw.default_model(body.model))
    created = int(time.time())
    gen = gw.start_generation(chat, owner)
    if body.stream:
        return gw.follow(gen, OpenAIChunkEncoder(gen.stream_id, chat.model, created, body.include_usage))
    # no commit rule without a stream: the status is sent at the end, so retries may use the first-token deadline
    gen.committed = True
    return CompletionResponse(gen, created, on_discard=gw.hub.discard, send_timeout_s=gw.settings.send_timeout_s)


def _models(request: Request) -> list[dict[str, Any]]:
    gw = gateway(request)
    caller(request)
    try:
        model = gw.default_model(None)
    except InvalidRequest:
        return []
    return [{"id": model, "object": "model", "created": 0, "owned_by": gw.settings.provider}]


@router.get("/v1/models", summary="OpenAI-compatible model list")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": _models(request)})


@router.get("/v1/models/{model:path}", summary="OpenAI-compatible model lookup")
async def get_model(model: str, request: Request) -> JSONResponse:
    for m in _models(request):
        if m["id"] == model:
            return JSONResponse(m)
    raise NotFound(f"the model {model!r} does not exist")
