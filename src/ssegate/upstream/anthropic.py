"""Anthropic's Messages API (``POST {base}/messages`` with ``stream: true``), translated both ways.

Request (OpenAI shapes in, Messages API out; a field with no Anthropic meaning is a 400 that names it):

- ``system``/``developer`` messages → the top-level ``system``; ``tool`` messages → ``tool_result`` blocks at the
  head of the next user turn; consecutive turns of one role are merged (the API wants them to alternate);
- content parts: text → ``text`` blocks; ``image_url`` → ``image`` blocks (a data URL as a base64 source, an
  http(s) URL as a url source; ``detail`` ``auto`` or ``high``, which is how Claude reads every image, while
  ``low`` is refused); other part types, message ``name``s and unknown message fields are refused;
- an assistant message's ``tool_calls`` → ``tool_use`` blocks (``arguments`` parsed: they must be a JSON object),
  its ``provider_data`` (as received in ``done``) → its ``thinking``/``redacted_thinking`` blocks, replayed
  verbatim and first, so that multi-turn tool use with thinking is accepted;
- ``tools`` → ``input_schema``; ``tool_choice`` auto/required/none/named → auto/any/none/tool;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``; ``stop`` → ``stop_sequences``; ``temperature``
  is clamped to Anthropic's 0..1; ``max_tokens`` defaults to ``DEFAULT_MAX_TOKENS`` (required by the API);
- ``reasoning_effort`` → ``thinking`` with a budget (``THINKING_BUDGETS``, below ``max_tokens``; ``none`` = off);
  with thinking on, a ``temperature`` other than 1 or a forced ``tool_choice`` is refused, as the API would;
- ``response_format`` ``json_object``/``json_schema`` → a forced tool ``json_response`` whose input schema is the
  requested schema; its streamed input is relayed as the answer's text (finish ``stop``): the documented way to
  get schema-conforming JSON from every Claude model. Combined with ``tools`` or thinking it is refused;
- pass-through fields: ``top_p``, ``top_k``, ``user`` → ``metadata.user_id``, ``service_tier: auto``; anything
  else (``seed``, ``logit_bias``, penalties, ...) is refused.

Stream mapping::

    message_start            usage.input_tokens (+ cache tokens)          -> prompt tokens
    text_delta               a text part
    thinking_delta           Reasoning; the block's text and its signature_delta are kept for provider_data
    redacted_thinking block  kept for provider_data (opaque)
    tool_use block           ToolCallStart; input_json_delta -> ToolCallDelta (no input at all -> "{}")
    message_delta            stop_reason, cumulative output_tokens         -> Finish
    message_stop             end of the stream
    ping                     nothing (the read itself keeps the idle timeout from firing)
    error                    overloaded_error/api_error -> retryable UpstreamError; rate_limit_error -> rate_limited

``provider_data`` is ``{"anthropic": {"thinking": [<blocks as received>]}}`` when there was thinking.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from ..core.request import ChatRequest, Message
from ..errors import GatewayError, InvalidRequest, UpstreamProtocolError, upstream_status_error
from ..parts import Finish, Reasoning, ToolCallDelta, ToolCallStart, Usage
from .base import Sink, public_url, refuse_field
from .error_map import map_upstream_errors
from .events import check_models, post_stream, read_events
from .httpclient import Pool, Response

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "JSON_TOOL", "THINKING_BUDGETS", "AnthropicProvider",
           "messages_body"]

ANTHROPIC_VERSION: Final = "2023-06-01"
DEFAULT_MAX_TOKENS: Final = 4096
JSON_TOOL: Final = "json_response"
"""The forced tool that carries a ``response_format`` answer."""
THINKING_BUDGETS: Final = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
MIN_THINKING_BUDGET: Final = 1024

_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error types (in bodies and in mid-stream ``error`` events) and the HTTP status they stand for
_ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_MESSAGE_FIELDS: Final = {
    "system": {"role", "content"},
    "developer": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls", "reasoning", "provider_data"},
    "tool": {"role", "content", "tool_call_id"},
}
_DATA_URL: Final = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.S)
NAME: Final = "anthropic"


def _refuse(field: str, why: str = "") -> InvalidRequest:
    return refuse_field(NAME, field, why)


def _texts(content: Any, where: str) -> list[str]:
    """The text of a system or tool message's content (a string or text parts)."""
    if isinstance(content, str):
        return [content]
    out = []
    for j, part in enumerate(content or []):
        if part.get("type") != "text":
            raise _refuse(f"{where}.content[{j}]", f"{part.get('type')} parts are only accepted in user messages")
        out.append(part["text"])
    return out


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part["image_url"]
            extra = sorted(set(image) - {"url", "detail"})
            if extra:
                raise _refuse(f"{where}.content[{j}].image_url.{extra[0]}")
            if image.get("detail", "auto") not in ("auto", "high"):
                # Claude reads every image at full resolution (within its size limits): "high" is what it does
                raise _refuse(f"{where}.content[{j}].image_url.detail",
                              f"{image['detail']!r}: Claude reads every image in full; send auto or high")
            url = image["url"]
            m = _DATA_URL.match(url)
            source = ({"type": "base64", "media_type": m.group(1), "data": m.group(2)} if m
                      else {"type": "url", "url": url})
            blocks.append({"type": "image", "source": source})
        else:
            raise _refuse(f"{where}.content[{j}]", f"{kind} parts")
    return blocks


def _assistant_blocks(m: Message, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    data = m.get("provider_data")
    if data is not None:
        thinking = (data.get("anthropic") or {}).get("thinking") if isinstance(data, dict) else None
        if not isinstance(thinking, list) or not all(
                isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking") for b in thinking):
            raise InvalidRequest(f"{where}.provider_data: not what an anthropic upstream sent in done "
                                 "(send it back unchanged)")
        blocks += thinking
    content = m.get("content")
    if content:
        text = "".join(_texts(content, where))
        if text:
            blocks.append({"type": "text", "text": text})
    for j, call in enumerate(m.get("tool_calls") or []):
        raw = call["function"]["arguments"] or "{}"
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise InvalidRequest(f"{where}.tool_calls[{j}].function.arguments: not a JSON object")
        blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": args})
    return blocks


def _turns(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = m["role"]
        allowed = _MESSAGE_FIELDS.get(role)
        if allowed is None:
            raise _refuse(f"{where}.role", f"the {role!r} role")
        for key in m:
            if key not in allowed:
                raise _refuse(f"{where}.{key}")
        if role in ("system", "developer"):
            system += _texts(m["content"], where)
            continue
        if role == "assistant":
            blocks = _assistant_blocks(m, where)
        elif role == "tool":
            result = "".join(_texts(m["content"], where))
            blocks = [{"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": result}]
        else:
            blocks = _user_blocks(m["content"], where)
        if not blocks:
            continue
        turn_role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == turn_role:
            content = turns[-1]["content"]
            if role == "tool":  # tool results go first in their user turn
                at = next((k for k, b in enumerate(content) if b["type"] != "tool_result"), len(content))
                content[at:at] = blocks
            else:
                content += blocks
        else:
            turns.append({"role": turn_role, "content": blocks})
    return system, turns


def _tool(tool: dict[str, Any], j: int) -> dict[str, Any]:
    fn = tool["function"]
    for key in fn:
        if key not in ("name", "description", "parameters", "strict"):
            raise _refuse(f"tools[{j}].function.{key}")
    out: dict[str, Any] = {"name": fn["name"], "input_schema": fn.get("parameters") or {"type": "object"}}
    if fn.get("description"):
        out["description"] = fn["description"]
    if "strict" in fn:
        out["strict"] = fn["strict"]
    return out


def _tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["function"]["name"]}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}


def messages_body(request: ChatRequest) -> tuple[dict[str, Any], bool]:
    """The Messages API request body for ``request`` (streaming), and whether it forces the JSON tool."""
    system, turns = _turns(request.messages)
    if not turns:
        raise InvalidRequest("the anthropic upstream needs a user message besides the system prompt")
    body: dict[str, Any] = {"model": request.model, "messages": turns, "stream": True}
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    if request.stop:
        body["stop_sequences"] = request.stop
    tools = [_tool(t, j) for j, t in enumerate(request.tools or [])]
    choice = _tool_choice(request.tool_choice)
    json_tool = False
    fmt = request.response_format
    if fmt is not None and fmt.get("type") in ("json_object", "json_schema"):
        if tools:
            raise _refuse("response_format", "together with tools")
        schema = ((fmt.get("json_schema") or {}).get("schema") or {"type": "object"}) if fmt["type"] == "json_schema" \
            else {"type": "object"}
        tools = [{"name": JSON_TOOL, "description": "Answer with this JSON.", "input_schema": schema}]
        choice = {"type": "tool", "name": JSON_TOOL}
        json_tool = True
    if request.parallel_tool_calls is False and tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tools:
        body["tools"] = tools
    if choice is not None and (tools or choice["type"] == "none"):
        body["tool_choice"] = choice
    max_tokens = request.max_tokens
    effort = request.reasoning_effort
    if effort is not None and effort != "none":
        budget = THINKING_BUDGETS.get(effort)
        if budget is None:
            raise _refuse("reasoning_effort", f"{effort!r}: expected one of none, {', '.join(THINKING_BUDGETS)}")
        if max_tokens is None:
            max_tokens = budget + DEFAULT_MAX_TOKENS
        budget = min(budget, max_tokens - 1)
        if budget < MIN_THINKING_BUDGET:
            raise _refuse(request.max_tokens_field, f"too small for thinking: it needs over {MIN_THINKING_BUDGET}")
        if json_tool:
            raise _refuse("response_format", "together with reasoning_effort (thinking cannot be forced to a tool)")
        if request.temperature is not None and request.temperature != 1:
            raise _refuse("temperature", "with reasoning_effort, Anthropic's thinking takes no temperature")
        if choice is not None and choice["type"] not in ("auto", "none"):
            raise _refuse("tool_choice", "with reasoning_effort only auto and none are allowed")
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens or DEFAULT_MAX_TOKENS
    for key, value in request.extra.items():
        if key in ("top_p", "top_k"):
            body[key] = value
        elif key == "user" and isinstance(value, str):
            body["metadata"] = {"user_id": value}
        elif key == "service_tier" and value == "auto":
            body[key] = value
        else:
            raise _refuse(key)
    return body, json_tool


class AnthropicProvider:
    name = NAME

    def __init__(self, base_url: str, api_key: str, pool: Pool, *, label: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = label or f"anthropic:{public_url(self.base_url)}"
        self._pool = pool
        self._headers = {
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if api_key:
            self._headers["x-api-key"] = api_key

    def check_request(self, request: ChatRequest) -> None:
        messages_body(request)

    async def stream(self, request: ChatRequest, sink: Sink) -> Finish:
        body, json_tool = messages_body(request)
        resp = None
        try:
            with map_upstream_errors():
                resp = await post_stream(self._pool, self.base_url + "/messages", body, self._headers, sink,
                                         _error_message)
                reader = _EventReader(resp, sink.emit, json_tool)
                await read_events(resp, sink, reader.on_event)
                return reader.finish()
        finally:
            sink.holding(None)
            if resp is not None:
                resp.close()

    async def check(self) -> None:
        """Anthropic has no cheap unauthenticated probe: ``GET /models`` answers anything but a 5xx."""
        await check_models(self._pool, self.base_url + "/models", self._headers)

    async def aclose(self) -> None:
        return None  # the pool is the gateway's


class _EventReader:
    """Reads Messages stream events as they arrive (the mapping in the module's docstring)."""

    __slots__ = ("_blocks", "_json_tool", "_thinking", "_tools", "completion", "emit", "prompt", "reason",
                 "reported", "resp", "stopped")

    def __init__(self, resp: Response, emit: Callable[[Any], None], json_tool: bool) -> None:
        self.resp = resp
        self.emit = emit
        self.prompt = 0
        self.completion = 0
        self.reported = False
        self.reason: str | None = None
        self.stopped = False
        self._json_tool = json_tool
        self._blocks: dict[int, list[Any]] = {}
        """Open blocks by the upstream's index: [kind, our tool index or thinking record, input seen]."""
        self._thinking: list[dict[str, Any]] = []
        self._tools = 0

    def on_event(self, event: bytes, data: bytes) -> None:
        if self.stopped:
            return
        msg = orjson.loads(data)
        if not isinstance(msg, dict):
            raise UpstreamProtocolError(f"upstream sent a non-object event: {data[:200]!r}")
        kind = msg.get("type") or event.decode()
        if kind == "content_block_delta":
            delta = msg["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if text:
                    self.emit(text)
            else:
                self._delta(msg["index"], dtype, delta)
        elif kind == "content_block_start":
            self._start(msg["index"], msg["content_block"])
        elif kind == "content_block_stop":
            self._stop(msg["index"])
        elif kind == "message_start":
            u = (msg.get("message") or {}).get("usage") or {}
            self.prompt = _input_tokens(u)
            self.completion = int(u.get("output_tokens") or 0)
            self.reported = bool(u)
        elif kind == "message_delta":
            stop = (msg.get("delta") or {}).get("stop_reason")
            if stop:
                self.reason = _FINISH.get(stop, stop)
            u = msg.get("usage") or {}
            if "output_tokens" in u:  # cumulative: the latest total, never a sum
                self.completion = int(u["output_tokens"] or 0)
                self.reported = True
            if u.get("input_tokens"):
                self.prompt = _input_tokens(u)
        elif kind == "message_stop":
            self.stopped = True
            self.resp.stop()
        elif kind == "error":
            raise _stream_error(msg)

    def _start(self, index: int, block: dict[str, Any]) -> None:
        btype = block.get("type")
        if btype == "thinking":
            record: dict[str, Any] = {"type": "thinking", "thinking": [], "signature": block.get("signature") or ""}
            self._thinking.append(record)
            self._blocks[index] = ["thinking", record, False]
        elif btype == "redacted_thinking":
            self._thinking.append({"type": "redacted_thinking", "data": block.get("data") or ""})
        elif btype == "tool_use":
            if self._json_tool and block.get("name") == JSON_TOOL:
                self._blocks[index] = ["json", None, False]
                return
            ours = self._tools
            self._tools += 1
            self.emit(ToolCallStart(ours, str(block["id"]), str(block["name"])))
            self._blocks[index] = ["tool", ours, False]
        elif btype == "text" and block.get("text"):
            self.emit(block["text"])

    def _delta(self, index: int, dtype: str | None, delta: dict[str, Any]) -> None:
        block = self._blocks.get(index)
        if block is None:
            return  # a delta type of a block we do not relay (citations, server tools)
        if dtype == "thinking_delta":
            text = delta.get("thinking")
            if text:
                block[1]["thinking"].append(text)
                self.emit(Reasoning(text))
        elif dtype == "signature_delta":
            block[1]["signature"] = block[1]["signature"] + (delta.get("signature") or "")
        elif dtype == "input_json_delta":
            piece = delta.get("partial_json")
            if piece:
                block[2] = True
                self.emit(piece if block[0] == "json" else ToolCallDelta(block[1], piece))

    def _stop(self, index: int) -> None:
        block = self._blocks.pop(index, None)
        if block is None:
            return
        if block[0] == "thinking":
            block[1]["thinking"] = "".join(block[1]["thinking"])
        elif not block[2]:  # a tool called with no arguments: its input is the empty object
            self.emit("{}" if block[0] == "json" else ToolCallDelta(block[1], "{}"))

    def finish(self) -> Finish:
        if not self.stopped:
            raise UpstreamProtocolError("upstream stream ended without message_stop")
        usage = Usage(self.prompt, self.completion) if self.reported else None
        reason = self.reason or "stop"
        if self._json_tool and reason == "tool_calls":
            reason = "stop"
        for record in self._thinking:  # a thinking block never closed (the stream ended first): its text so far
            if isinstance(record.get("thinking"), list):
                record["thinking"] = "".join(record["thinking"])
        data = {"anthropic": {"thinking": self._thinking}} if self._thinking else None
        return Finish(reason, usage, data)


def _input_tokens(u: dict[str, Any]) -> int:
    return sum(int(u.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def _error_message(detail: str) -> str:
    try:
        err = orjson.loads(detail)["error"]
        if isinstance(err, dict):
            return f"{err.get('type', 'error')}: {err.get('message') or ''}".rstrip(": ")
        return str(err)
    except (ValueError, KeyError, TypeError):
        return detail[:500] or "no detail"


def _stream_error(msg: dict[str, Any]) -> GatewayError:
    """A mid-stream ``error`` event, as the error its HTTP status would have been."""
    err = msg.get("error")
    if not isinstance(err, dict):
        err = {}
    kind = str(err.get("type") or "api_error")
    message = f"{kind}: {err.get('message') or 'upstream error event'}"
    return upstream_status_error(_ERROR_STATUS.get(kind, 500), message)
