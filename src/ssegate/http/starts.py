"""Starting a stream: the steps every chat endpoint takes between a validated body and the response that
follows the generation, compiled (``make compile``).

``chat_request`` turns a validated body (its fields' values: a model's ``__dict__`` (``chat_body.py``: pydantic
models, which mypyc cannot compile), or ``direct_routes.plain_fields``' for the plain bodies) into the
``ChatRequest`` after the checks the models cannot express (``n``, ``logprobs``, a named tool choice that is not
in ``tools``, ...); ``default_model``, ``admit`` and ``start_generation`` name the model, refuse what the limits
refuse and route and start the generation; ``start_stream`` and ``start_completion`` are the two streaming
endpoints themselves (``POST /v1/chat/stream``, ``POST /v1/chat/completions``). ``Gateway``'s methods of the same
names are these functions, for the FastAPI routes and the other protocols' endpoints; ``ssegate serve``'s direct
routes (``direct_routes.py``) call them here, so that from the direct handler to the generation only
``Gateway.follow`` (the response a stream gets: kept a method, where an application or a test may watch it) and
starlette's ``HTTPConnection`` (which ``auth.identity`` reads) run in the interpreter. With the direct routes' own
changes: 39 → 25 interpreted calls a short stream.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from ..core.request import ChatRequest
from ..errors import InvalidRequest, ShuttingDown
from .chat_body import OWNED_FIELDS, NamedToolChoice
from .encoders import NativeEncoder, OpenAIChunkEncoder

if TYPE_CHECKING:
    from starlette.responses import Response

    from ..core.generation import Generation
    from ..gateway import Gateway
    from .response import EventStreamResponse

__all__ = ["STREAM_OPTIONS", "admit", "chat_request", "default_model", "start_completion", "start_generation",
           "start_stream", "stream_response"]


STREAM_OPTIONS: Final = frozenset({"include_usage", "include_obfuscation"})
"""The ``stream_options`` of a Chat Completions request that ssegate honours: the stream is its own, so any other
option is refused by name. (ssegate adds no obfuscation padding, whatever ``include_obfuscation`` says.)"""


def _check_body(fields: dict[str, Any]) -> None:
    """What the models cannot say: fields ssegate does not relay (400 naming them), and choices that contradict
    each other. (``fields``: the body's ``__dict__``, where a pydantic model keeps its fields' values; read there, a
    field costs a dict lookup, not the model's ``__getattr__`` hook: ~330 instructions a field.)"""
    n = fields["n"]
    if n is not None and n != 1:
        raise InvalidRequest("n: ssegate relays one choice per request (n=1); send n separate requests")
    logprobs = fields["logprobs"]
    if logprobs or fields["top_logprobs"] is not None:
        field = "logprobs" if logprobs else "top_logprobs"
        raise InvalidRequest(f"{field}: ssegate does not relay log probabilities")
    fmt = fields["response_format"]
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
        raise InvalidRequest("response_format: type 'json_schema' needs a 'json_schema' object")
    choice = fields["tool_choice"]
    if choice is None:
        return
    tools = fields["tools"]
    if isinstance(choice, NamedToolChoice):
        names = {t.function.name for t in tools or []}
        if choice.function.name not in names:
            raise InvalidRequest(f"tool_choice names the function {choice.function.name!r}, which is not in tools")
    if choice != "none" and not tools:
        raise InvalidRequest("tool_choice is set, but tools is empty")


def chat_request(fields: dict[str, Any], raw: dict[str, Any], model: str, openai: bool) -> ChatRequest:
    """The ``ChatRequest`` for a validated body: ``fields`` are its values by field (a model's ``__dict__``, or
    ``direct_routes.plain_fields``'), ``raw`` the same body as parsed JSON (what is forwarded), ``openai`` whether
    it is ``ChatCompletionIn``'s (else ``NativeChatIn``'s)."""
    _check_body(fields)
    if openai:
        if "resume_grace_s" in raw:
            raise InvalidRequest("resume_grace_s: OpenAI clients do not resume streams; use POST /v1/chat/stream")
        options = raw.get("stream_options")
        if options:  # (an object: the model checked it)
            for key in options:
                if key not in STREAM_OPTIONS:
                    raise InvalidRequest(f"stream_options.{key}: not supported (ssegate writes the stream itself; "
                                         "it takes include_usage and include_obfuscation)")
    stop = fields["stop"]
    stops = [stop] if isinstance(stop, str) else stop
    max_tokens, field = fields["max_tokens"], "max_tokens"
    if openai and fields["max_completion_tokens"] is not None:
        max_tokens, field = fields["max_completion_tokens"], "max_completion_tokens"
    extra = {k: v for k, v in raw.items() if k not in OWNED_FIELDS} if openai else {}
    return ChatRequest(
        messages=raw["messages"],
        model=model,
        max_tokens=max_tokens,
        temperature=fields["temperature"],
        stop=stops or None,
        tools=raw.get("tools") or None,
        tool_choice=raw.get("tool_choice"),
        parallel_tool_calls=fields["parallel_tool_calls"],
        response_format=raw.get("response_format"),
        reasoning_effort=fields["reasoning_effort"],
        extra=extra,
        max_tokens_field=field,
        resume_grace_s=fields.get("resume_grace_s") if not openai else None,
    )


def default_model(gw: Gateway, model: str | None) -> str:
    """The model asked for, or the default one (400 where there is none)."""
    chosen = gw.routing.default_model(model)
    if not chosen:
        where = "the routing file's first model is a wildcard" if gw.settings.config else "set SSEGATE_MODEL"
        raise InvalidRequest(f"no model given: pass 'model' (GET /v1/models lists them; {where})")
    return chosen


def admit(gw: Gateway, owner: str) -> None:
    """Refuse a new stream when shutting down, without Redis, at the global cap or over the key's limits
    (``limits.py``)."""
    if gw.hub.shutting_down:
        gw.metrics.rejected.labels("shutting_down").inc()
        raise ShuttingDown("the server is shutting down", retry_after=1.0)
    replicas = gw.replicas
    if replicas is not None and not replicas.healthy:
        gw.metrics.rejected.labels("overloaded").inc()
        replicas.require()
    gw.limits.admit(owner)


def start_generation(gw: Gateway, request: ChatRequest, owner: str) -> Generation:
    """Route the request (404 ``model_not_found``; a 400 naming a field its upstream cannot honour), admit it,
    start it."""
    route = gw.routing.route(request, owner)
    admit(gw, owner)
    return gw.hub.start(request, owner, route)


def stream_response(gw: Gateway, request: ChatRequest, owner: str) -> EventStreamResponse:
    """A native stream (CONTRACT §3) of the request."""
    gen = start_generation(gw, request, owner)
    return gw.follow(gen, NativeEncoder(gen.stream_id, gw.settings.retry_ms))


def start_stream(gw: Gateway, fields: dict[str, Any], raw: dict[str, Any], owner: str) -> EventStreamResponse:
    """``POST /v1/chat/stream`` for a validated body (``fields``: its values, a ``NativeChatIn``'s ``__dict__``;
    ``raw``: the same body as parsed JSON)."""
    return stream_response(gw, chat_request(fields, raw, default_model(gw, fields["model"]), False), owner)


def start_completion(gw: Gateway, fields: dict[str, Any], raw: dict[str, Any], owner: str) -> Response:
    """``POST /v1/chat/completions`` for a validated body (``fields``: its values, a ``ChatCompletionIn``'s
    ``__dict__``; ``raw``: the same body as parsed JSON): a stream of ``chat.completion.chunk``s, or with
    ``stream: false`` one ``chat.completion`` at the end."""
    chat = chat_request(fields, raw, default_model(gw, fields["model"]), True)
    created = int(time.time())
    gen = start_generation(gw, chat, owner)
    if fields["stream"]:
        options = fields["stream_options"]  # (a StreamOptions, or plain_body's: both have include_usage)
        usage: bool = options is not None and options.include_usage
        return gw.follow(gen, OpenAIChunkEncoder(gen.stream_id, chat.model, created, usage))
    from .routes.openai_chat import CompletionResponse  # (its module imports this one)

    # no commit rule without a stream: the status is sent at the end, so retries may use the first-token deadline
    gen.committed = True
    return CompletionResponse(gen, created, on_discard=gw.hub.discard, send_timeout_s=gw.settings.send_timeout_s)
