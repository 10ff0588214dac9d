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

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from ...sse import dumps
from ..chat_body import ChatCompletionIn
from ..encoders import Answer, finish_reason, openai_usage
from ..response import routing_headers
from ..routing import OpenAIRoute
from ..starts import start_completion
from ..whole_answer import WholeAnswerResponse
from .deps import caller, gateway

if TYPE_CHECKING:
    from ...core.generation import Generation

__all__ = ["CompletionResponse", "router"]

router = APIRouter(tags=["openai"], route_class=OpenAIRoute)


class CompletionResponse(WholeAnswerResponse[Answer]):
    """``stream: false``: one ``chat.completion`` once the generation ends (``whole_answer.py``)."""

    def __init__(self, gen: Generation, created: int, on_discard: Any = None, send_timeout_s: float = 30.0) -> None:
        super().__init__(gen, on_discard, send_timeout_s)
        self.created = created

    def new_state(self) -> Answer:
        return Answer()

    def feed(self, state: Answer, kinds: list[int], payloads: list[Any]) -> None:
        state.add(kinds, payloads)

    def success(self, state: Answer) -> tuple[bytes, dict[str, str]]:
        return dumps(self.completion(state)), {"X-Stream-Id": self.gen.stream_id, **routing_headers(self.gen)}

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
    return start_completion(gateway(request), body.__dict__, await request.json(), caller(request))


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
