"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, OpenRouter, ...).

Request: the client's messages, tools, tool choice, response format and every field ssegate does not own go
upstream exactly as sent (``ChatRequest.extra``); ``check_request`` refuses nothing, the upstream judges (its 4xx
comes back as the client's 400, ``errors.upstream_status_error``). Two message fields are ssegate's own and are
translated: an assistant message's ``reasoning`` goes back as ``reasoning_content`` when that message made tool
calls (DeepSeek and vLLM require the reasoning of a tool turn back; other turns' reasoning is dropped, as those
servers do themselves), and ``provider_data`` is not sent (this provider puts none in ``done``).

Stream (``chat.completion.chunk`` events), normalised into parts:

- ``delta.content`` → text; ``delta.reasoning_content``, or ``delta.reasoning``, or the text of
  ``delta.reasoning_details`` items (OpenRouter), whichever the server sends first in a chunk → ``Reasoning``;
- ``delta.tool_calls`` fragments → ``ToolCallStart`` / ``ToolCallDelta``, joined by ``index``, except that a new
  ``id`` always starts a new call (Ollama and some servers put every parallel call at index 0) and a fragment
  without ``index`` continues the last call (servers that omit it); calls are numbered 0, 1, ... in order of
  appearance whatever the upstream's indices were;
- the first ``finish_reason`` wins (OpenRouter repeats it); ``stop`` after tool calls is ``tool_calls`` (Gemini);
- ``usage`` (we always ask ``stream_options.include_usage``) → the ``Finish``'s usage; ``[DONE]`` ends the body;
- a ``data: {"error": ...}`` event mid-stream is an ``UpstreamError`` (429 → ``rate_limited``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

import msgspec
import msgspec.structs
import orjson

from ..core.request import ChatRequest, Message
from ..errors import UpstreamProtocolError, upstream_status_error
from ..parts import Finish, Reasoning, ToolCallDelta, ToolCallStart, Usage
from .base import Sink, public_url
from .chunks import decode_chat_chunk
from .error_map import map_upstream_errors
from .events import check_models, post_stream, read_events
from .httpclient import Pool, Response

__all__ = ["OpenAIProvider"]


_decode_chunk: Final = decode_chat_chunk
_fields: Final = msgspec.structs.astuple
"""A decoded chunk's parts are read as the tuple of their fields, by position (``chunks.py``'s order): in compiled
code an attribute of a ``msgspec.Struct`` is a generic ``getattr`` (~160 instructions), a tuple's item a few."""
# ChatChunk
_CHOICES: Final = 0
_USAGE: Final = 1
_ERROR: Final = 2
# ChunkChoice
_DELTA: Final = 0
_FINISH_REASON: Final = 1
# ChunkDelta
_CONTENT: Final = 0
_REASONING_CONTENT: Final = 1
_REASONING: Final = 2
_REASONING_DETAILS: Final = 3
_TOOL_CALLS: Final = 4
# ToolCallFragment
_INDEX: Final = 0
_ID: Final = 1
_FUNCTION: Final = 2
# ChunkFunction
_NAME: Final = 0
_ARGUMENTS: Final = 1
_UNSET: Final = msgspec.UNSET
"""A chunk without an ``error`` key (``chunks.ChatChunk``); kept as a C static, not looked up at each event."""
_FINISH: Final = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls",
                  "function_call": "tool_calls", "eos": "stop", "end_turn": "stop"}


def _outgoing(message: Message) -> Message:
    """A message as an OpenAI-compatible server takes it: ssegate's own fields translated or left out."""
    if "reasoning" not in message and "provider_data" not in message:
        return message
    out = {k: v for k, v in message.items() if k not in ("reasoning", "provider_data")}
    if message.get("reasoning") and message.get("tool_calls"):
        out["reasoning_content"] = message["reasoning"]
    return out


class OpenAIProvider:
    name = "openai"

    def __init__(self, base_url: str, api_key: str, pool: Pool, *, label: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label or f"openai:{public_url(self.base_url)}"
        self._pool = pool
        self._headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def check_request(self, request: ChatRequest) -> None:
        return None  # everything is relayed as the client sent it; the upstream answers for what it cannot do

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_outgoing(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_tokens is not None:
            body[request.max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = request.stop
        for key in ("tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        body.update(request.extra)
        return body

    async def stream(self, request: ChatRequest, sink: Sink) -> Finish:
        resp = None
        try:
            with map_upstream_errors():
                resp = await post_stream(self._pool, self.base_url + "/chat/completions", self.body(request),
                                         self._headers, sink, _error_message)
                reader = _ChunkReader(resp, sink.emit)
                await read_events(resp, sink, reader.on_event)
                return reader.finish()
        finally:
            sink.holding(None)
            if resp is not None:
                resp.close()

    async def check(self) -> None:
        await check_models(self._pool, self.base_url + "/models", self._headers)

    async def aclose(self) -> None:
        return None  # the pool is the gateway's


class _ChunkReader:
    """Reads ``chat.completion.chunk`` events as they arrive (the mapping in the module's docstring)."""

    __slots__ = ("_by_id", "_by_index", "_last", "done", "emit", "reason", "resp", "usage")

    def __init__(self, resp: Response, emit: Callable[[Any], None]) -> None:
        self.resp = resp
        self.emit = emit
        self.done = False
        self.reason: str | None = None
        self.usage: Usage | None = None
        self._by_id: dict[str, int] = {}
        self._by_index: dict[int, int] = {}
        self._last: int | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        if self.done:
            return
        if data == b"[DONE]":
            self.done = True
            self.resp.stop()
            return
        chunk = _fields(_decode_chunk(data))  # (the fields read, not a dict of all: chunks.py)
        error = chunk[_ERROR]
        if event == b"error" or error is not _UNSET:
            raise _midstream_error(error)
        choices = chunk[_CHOICES]
        if choices:
            choice = _fields(cast(list[Any], choices)[0])
            delta = choice[_DELTA]
            if delta is not None:
                d = _fields(delta)
                text = d[_CONTENT]
                if text:
                    self.emit(text)
                if d[_REASONING_CONTENT] is not None or d[_TOOL_CALLS] is not None or d[_REASONING] is not None \
                        or d[_REASONING_DETAILS] is not None:
                    self._other(d)
            fr = choice[_FINISH_REASON]
            if fr and self.reason is None:
                self.reason = _FINISH.get(fr, fr)
        u: dict[str, Any] | None = chunk[_USAGE]
        if u:
            self.usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))

    def _other(self, delta: tuple[Any, ...]) -> None:
        """A delta's reasoning and tool-call fragments (``delta``: a ``ChunkDelta``'s fields)."""
        reasoning = delta[_REASONING_CONTENT] or delta[_REASONING]
        if isinstance(reasoning, str) and reasoning:
            self.emit(Reasoning(reasoning))
        elif isinstance(details := delta[_REASONING_DETAILS], list):
            text = "".join(d.get("text") or d.get("summary") or "" for d in details if isinstance(d, dict))
            if text:
                self.emit(Reasoning(text))
        calls = delta[_TOOL_CALLS]
        if calls:
            for fragment in cast(list[Any], calls):
                call = _fields(fragment)
                index = call[_INDEX]
                if index is not None and not call[_ID]:
                    known = self._by_index.get(index)
                    if known is not None:  # the next piece of a known call (the usual fragment)
                        self._last = known
                        function = call[_FUNCTION]
                        if function is not None:
                            arguments = _fields(function)[_ARGUMENTS]
                            if arguments:
                                self.emit(ToolCallDelta(known, arguments))
                        continue
                self._tool_fragment(call, index)

    def _tool_fragment(self, fragment: tuple[Any, ...], index: Any) -> None:
        """A fragment (a ``ToolCallFragment``'s fields) that starts a call, or continues one without naming a known
        ``index``."""
        call_id = fragment[_ID] or None
        function = fragment[_FUNCTION]
        name = arguments = None
        if function is not None:
            f = _fields(function)
            name, arguments = f[_NAME], f[_ARGUMENTS]
        ours: int | None
        if call_id is not None:
            ours = self._by_id.get(call_id)
            if ours is None:  # a new call, even at an index already used (Ollama's parallel calls)
                ours = len(self._by_id)
                self._by_id[call_id] = ours
                self.emit(ToolCallStart(ours, call_id, name or ""))
        elif index is not None:
            ours = self._by_index.get(index)
        else:
            ours = self._last  # a server that omits ``index``: the call being streamed
        if ours is None:
            if not name:
                raise UpstreamProtocolError("the upstream sent tool-call arguments for a call it never started")
            ours = len(self._by_id)  # a call started without an id: give it one
            call_id = f"call_{ours}"
            self._by_id[call_id] = ours
            self.emit(ToolCallStart(ours, call_id, name))
        if index is not None:
            self._by_index[index] = ours
        self._last = ours
        if arguments:
            self.emit(ToolCallDelta(ours, arguments))

    def finish(self) -> Finish:
        if not self.done and self.reason is None:
            raise UpstreamProtocolError("upstream stream ended without a finish")
        reason = self.reason or "stop"
        if reason == "stop" and self._by_id:
            reason = "tool_calls"
        return Finish(reason, self.usage)


def _error_message(detail: str) -> str:
    try:
        err = orjson.loads(detail)["error"]
        return str(err.get("message") or err) if isinstance(err, dict) else str(err)
    except (ValueError, KeyError, TypeError):
        return detail[:500] or "no detail"


def _midstream_error(error: Any) -> Exception:
    """A chunk's ``error`` (or an ``error`` event's, which may have none: ``_UNSET``) as the upstream's error."""
    err = error or {}
    message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    code = str(err.get("code") or err.get("type") or "") if isinstance(err, dict) else ""
    status = 429 if "rate" in code else 502
    return upstream_status_error(status, message or "upstream error event")
