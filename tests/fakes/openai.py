"""The OpenAI Chat Completions wire format, as the fake upstream speaks it.

Streaming (``stream: true``): ``data: <chat.completion.chunk>`` events — an optional role-only chunk,
one chunk per event of the answer (see ``parts.py``), a chunk with ``"delta": {}`` and the ``finish_reason``,
a usage chunk with ``"choices": []`` when asked, then ``data: [DONE]``. When ``stream_options.include_usage``
is set, every chunk carries ``"usage": null`` until the usage chunk, as OpenAI does.

- Text: ``{"content": piece}``. The role chunk is ``{"role": "assistant", "content": ""}``; when the answer
  opens with a tool call, OpenAI sends no separate role chunk: the role rides on the first tool-call chunk
  with ``"content": null``.
- Reasoning (not OpenAI's own; the de-facto fields of DeepSeek, vLLM, llama.cpp, OpenRouter):
  ``{"reasoning_content": piece}`` by default, or ``reasoning`` / ``reasoning_details`` (OpenRouter's
  ``[{"type": "reasoning.text", "text", "format": "unknown", "index": 0}]``), or several of them at once.
- Tool calls: ``{"tool_calls": [{"index": k, "id", "type": "function", "function": {"name", "arguments": ""}}]}``
  then ``{"tool_calls": [{"index": k, "function": {"arguments": piece}}]}`` per piece; k = 0, 1, ... per call.
  Quirks of real servers on request: every call at index 0 (Ollama, NVIDIA dynamo), no ``index`` key at all,
  and OpenRouter's finish chunk sent twice (the second one carrying the usage).
Keep-alive (``ping``): an SSE comment, as OpenRouter sends while a model thinks.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import orjson

from tests.fakes.parts import Event, Part, Reasoning, Text, ToolArgs, ToolCall

__all__ = ["OpenAIDialect", "ReasoningField", "ToolIndex"]

ReasoningField = Literal["reasoning_content", "reasoning", "reasoning_details"]
ToolIndex = Literal["count", "zero", "omit"]  # 0, 1, ... | always 0 (Ollama) | no "index" key

_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def _event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class OpenAIDialect:
    endpoint = "/chat/completions"
    content_type = "text/event-stream"
    request_id_header = "x-request-id"

    def __init__(self, request: dict[str, Any], usage: bool | None, *,
                 reasoning_fields: tuple[ReasoningField, ...] = ("reasoning_content",),
                 tool_index: ToolIndex = "count", repeat_finish: bool = False, obfuscation: bool = False) -> None:
        self.model = str(request.get("model") or "fake-model")
        options = request.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        self.include_usage = asked if usage is None else usage
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.reasoning_fields, self.tool_index, self.repeat_finish = reasoning_fields, tool_index, repeat_finish
        self.obfuscation = obfuscation
        self.issued: list[tuple[str, str, str]] = []  # Anthropic only: signatures handed out
        self._role_pending = False  # the role goes out with the first tool-call chunk
        self._indices: dict[str, int] = {}  # tool call id -> its index

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            obj["usage"] = None
        if self.obfuscation and choices:
            obj["obfuscation"] = "pad0"
        obj.update(extra)
        return _event(obj)

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def opening(self, role_chunk: bool, prompt_tokens: int, first: Event | None = None) -> list[bytes]:
        if not role_chunk:
            return []
        if isinstance(first, ToolCall):
            self._role_pending = True
            return []
        return [self._chunk([self._choice({"role": "assistant", "content": ""})])]

    def delta(self, text: str) -> bytes:
        return self._chunk([self._choice({"content": text})])

    def _reasoning(self, text: str, signature: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.reasoning_fields:
            if name == "reasoning_details":
                item: dict[str, Any] = {"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}
                if signature is not None:
                    item["signature"] = signature
                out[name] = [item]
            else:
                out[name] = text
        return out

    def _fragment(self, call_id: str, rest: dict[str, Any]) -> dict[str, Any]:
        if self.tool_index == "omit":
            return rest
        return {"index": 0 if self.tool_index == "zero" else self._indices[call_id], **rest}

    def event(self, ev: Event) -> bytes:
        """The chunk for one event (nothing for a RedactedThinking, which OpenAI has no form for)."""
        if isinstance(ev, Text):
            return self.delta(ev.text)
        if isinstance(ev, Reasoning):
            return self._chunk([self._choice(self._reasoning(ev.text, ev.signature))])
        if isinstance(ev, ToolCall):
            self._indices[ev.call_id] = len(self._indices)
            frag = self._fragment(ev.call_id, {"id": ev.call_id, "type": "function",
                                               "function": {"name": ev.name, "arguments": ""}})
            delta: dict[str, Any] = {"tool_calls": [frag]}
            if self._role_pending:
                self._role_pending = False
                delta = {"role": "assistant", "content": None, "tool_calls": [frag], "refusal": None}
            return self._chunk([self._choice(delta)])
        if isinstance(ev, ToolArgs):
            frag = self._fragment(ev.call.call_id, {"function": {"arguments": ev.piece}})
            return self._chunk([self._choice({"tool_calls": [frag]})])
        return b""

    def ping(self) -> bytes:
        return b": OPENROUTER PROCESSING\n\n"

    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        frames = [self._chunk([self._choice({}, finish_reason)])]
        if self.repeat_finish:
            frames.append(self._chunk([self._choice({}, finish_reason)], usage=usage))
        elif self.include_usage:
            frames.append(self._chunk([], usage=usage))
        return frames

    def done(self) -> bytes:
        return b"data: [DONE]\n\n"

    def malformed(self) -> bytes:
        return b"data: {not json\n\n"

    def invalid_utf8(self) -> bytes:
        return self.delta("@@BAD@@").replace(b"@@BAD@@", b"bad\xff\xfebytes")

    def overloaded(self) -> bytes:
        """A mid-stream error as OpenAI-compatible servers send it (``data: {"error": ...}``)."""
        return _event({"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}})

    def message(self, parts: list[Part], finish_reason: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
        """A whole ``chat.completion``: ``content`` null when there is no text, ``tool_calls`` when there are."""
        texts = [p.text for p in parts if isinstance(p, Text)]
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        thoughts = [p for p in parts if isinstance(p, Reasoning)]
        if thoughts:
            message.update(self._reasoning("".join(p.text for p in thoughts), thoughts[-1].signature))
        calls = [p for p in parts if isinstance(p, ToolCall)]
        if calls:
            message["tool_calls"] = [{"id": c.call_id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    @staticmethod
    def error(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
        kind, code = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message or f"fake upstream answered {status}", "type": kind, "param": param,
                          "code": code}}

    @staticmethod
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
