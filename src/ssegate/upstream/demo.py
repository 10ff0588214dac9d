"""The embedded ``demo`` model: no key, no network, every part of an answer, paced like a real model.

It answers from ``demo_answers.py`` (deterministic: the same request always gets the same answer): with
``reasoning_effort`` it streams reasoning first; with ``tools`` and a prompt that matches one, it calls it
(``finish_reason: "tool_calls"``), and after the ``tool`` messages it answers from their results; with
``response_format`` JSON it answers JSON. Parts go to the sink ``ttft_s`` after the request, then one every
``1/tokens_per_s`` s. Usage is exact: the same tokenizer counts the prompt and the answer. Images are refused
(it reads text only); sampling fields (``temperature``, ``top_p``, ``seed``) are accepted and change nothing (it
is deterministic); other extra fields are refused.

With ``DEMO_SCRIPTS`` on (the test suite's setting; off by default), a last user message
``/script {json}`` plays exactly what it says::

    {"deltas": ["Hel", "lo"],                  text parts (or "parts": see below)
     "parts": ["text", {"reasoning": "..."}, {"tool_call": {"id": "c1", "name": "f"}}, {"arguments": "{}"}],
     "ttft": 0.1, "delay": 0.01,               seconds before the first part, between parts
     "fail_at": 3, "error": "upstream_error",  raise that ssegate error code after 3 parts
     "finish_reason": "stop", "stall": true,  "provider_data": {...}, "prompt_tokens": 5}

(``tool_call``/``arguments`` take an optional ``"index"``; by default a call is the next index and arguments go to
the last call.)
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson

from ..core.request import ChatRequest, message_text
from ..errors import GatewayError, InvalidRequest, caused, error_from_code
from ..parts import Finish, Part, Reasoning, ToolCallDelta, ToolCallStart, Usage
from .base import Sink, refuse_field
from .demo_answers import (
    answer_from_tool_results,
    choose_tool_calls,
    compose_answer,
    compose_reasoning,
    json_answer,
    tokenize,
)

__all__ = ["DemoProvider"]

ACCEPTED_EXTRA: Final = frozenset({"seed", "top_p", "user", "metadata", "service_tier", "store"})
"""Fields the demo accepts and that change nothing: it is deterministic and keeps no record."""


class DemoProvider:
    name = "demo"
    label = "demo"

    def __init__(self, *, ttft_s: float = 0.3, tokens_per_s: float = 40.0, scripts: bool = False) -> None:
        self.ttft_s = ttft_s
        self.delay_s = 1.0 / tokens_per_s
        self.scripts = scripts

    def check_request(self, request: ChatRequest) -> None:
        for i, m in enumerate(request.messages):
            content = m.get("content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    if part.get("type") != "text":
                        raise refuse_field("demo", f"messages[{i}].content[{j}]",
                                           f"{part.get('type')} parts: the demo model reads text only")
        for key in request.extra:
            if key not in ACCEPTED_EXTRA:
                raise refuse_field("demo", key)
        if self._script(request) is not None:
            _parse_script(request.last_user_text[8:])

    def _script(self, request: ChatRequest) -> str | None:
        last = request.messages[-1] if request.messages else {}
        text = message_text(last) if last.get("role") == "user" else ""
        return text[8:] if self.scripts and text.startswith("/script ") else None

    async def stream(self, request: ChatRequest, sink: Sink) -> Finish:
        raw = self._script(request)
        if raw is not None:
            return await _Scripted(_parse_script(raw), request, sink).play()
        parts, reason = self._answer(request)
        prompt_tokens = sum(len(tokenize(message_text(m))) + 4 for m in request.messages)
        await asyncio.sleep(self.ttft_s)
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(self.delay_s)
            sink.emit(part)
        return Finish(reason, Usage(prompt_tokens, len(parts)))

    def _answer(self, request: ChatRequest) -> tuple[list[Part], str]:
        """The parts of the answer to ``request``, and its finish reason (before pacing)."""
        prompt = request.last_user_text
        after_tools = bool(request.messages) and request.messages[-1].get("role") == "tool"
        calls = [] if after_tools else choose_tool_calls(prompt, request.tools or [], request.tool_choice,
                                                          request.parallel_tool_calls)
        parts: list[Part] = []
        effort = request.reasoning_effort
        if effort and effort != "none":
            parts += [Reasoning(t) for t in tokenize(compose_reasoning(prompt, effort, request.tools, calls))]
        if calls:
            for index, (name, arguments) in enumerate(calls):
                parts.append(ToolCallStart(index, f"call_demo_{index}", name))
                parts += [ToolCallDelta(index, arguments[k:k + 8]) for k in range(0, len(arguments), 8)]
            return parts, "tool_calls"
        fmt = request.response_format
        if after_tools:
            text = answer_from_tool_results(request.messages)
        elif fmt is not None and fmt.get("type") in ("json_object", "json_schema"):
            text = json_answer(prompt, fmt)
        else:
            text = compose_answer(prompt)
        tokens = [text[k:k + 8] for k in range(0, len(text), 8)] if text.startswith("{") else tokenize(text)
        reason = "stop"
        limit = request.max_tokens
        if limit is not None and len(parts) + len(tokens) > limit:
            tokens, reason = tokens[: max(0, limit - len(parts))], "length"
        tokens, reason = _apply_stop(tokens, request.stop, reason)
        return parts + tokens, reason

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _Scripted:
    """Plays a ``/script``."""

    def __init__(self, script: dict[str, Any], request: ChatRequest, sink: Sink) -> None:
        self.script = script
        self.request = request
        self.sink = sink
        self.calls = 0

    def _part(self, item: Any) -> Part:
        if isinstance(item, str):
            return item
        if not isinstance(item, dict):
            raise InvalidRequest(f"/script: a part is a string or an object, not {item!r}")
        if "reasoning" in item:
            return Reasoning(str(item["reasoning"]))
        if "tool_call" in item:
            call = item["tool_call"]
            index = int(item.get("index", self.calls))
            self.calls = max(self.calls, index + 1)
            return ToolCallStart(index, str(call.get("id", f"call_{index}")), str(call.get("name", "tool")))
        if "arguments" in item:
            return ToolCallDelta(int(item.get("index", self.calls - 1)), str(item["arguments"]))
        raise InvalidRequest(f"/script: unknown part {item!r}")

    async def play(self) -> Finish:
        script, sink = self.script, self.sink
        items = script.get("parts", script.get("deltas", ["scripted"]))
        parts = [self._part(item) for item in items]
        delay = float(script.get("delay", 0.0))
        fail_at = script.get("fail_at")
        await asyncio.sleep(float(script.get("ttft", 0.0)))
        if self.request.max_tokens is not None:
            parts = parts[: self.request.max_tokens]
        for i, part in enumerate(parts):
            if fail_at is not None and i == int(fail_at):
                raise _script_error(script)
            if i and delay:
                await asyncio.sleep(delay)
            sink.emit(part)
        if fail_at is not None and int(fail_at) >= len(parts):
            raise _script_error(script)
        if script.get("stall"):
            await asyncio.Event().wait()
        usage = Usage(int(script.get("prompt_tokens", 5)), len(parts))
        return Finish(str(script.get("finish_reason", "stop")), usage, script.get("provider_data"))


def _parse_script(raw: str) -> dict[str, Any]:
    try:
        script = orjson.loads(raw)
    except ValueError as exc:
        raise caused(InvalidRequest(f"/script needs a JSON object: {exc}"), exc)  # noqa: B904 (errors.caused)
    if not isinstance(script, dict):
        raise InvalidRequest("/script needs a JSON object")
    return script


def _script_error(script: dict[str, Any]) -> GatewayError:
    code = str(script.get("error", "upstream_error"))
    return error_from_code(code, str(script.get("message", f"scripted failure: {code}")))


def _apply_stop(tokens: list[str], stop: list[str] | None, reason: str) -> tuple[list[str], str]:
    if not stop:
        return tokens, reason
    text = ""
    for i, tok in enumerate(tokens):
        text += tok
        for s in stop:
            if s and s in text:
                return tokens[:i], "stop"
    return tokens, reason
