"""The Anthropic Messages wire format, as the fake upstream speaks it.

Streaming (``stream: true``): ``event: <type>\\ndata: <json>\\n\\n`` for ``message_start`` (with
``usage.input_tokens``), then content blocks in order, each ``content_block_start`` → ``content_block_delta``*
→ ``content_block_stop`` with ``index`` its position in the final ``content``, then ``message_delta``
(``stop_reason`` and the cumulative ``usage.output_tokens``) and ``message_stop``. Like the real API,
``message_start`` reports ``output_tokens: 1``; the count in ``message_delta`` is the total, not an increment.
A ``ping`` follows ``message_start`` and, when the answer opens with text or thinking, that first block's start.

Blocks (see ``parts.py`` for how a script's parts become events):
- ``text``: ``text_delta`` events.
- ``thinking``: starts as ``{"type": "thinking", "thinking": "", "signature": ""}``, ``thinking_delta`` events,
  then exactly one ``signature_delta`` just before ``content_block_stop``.
- ``redacted_thinking``: ``{"type": "redacted_thinking", "data": ...}`` whole in the start, no deltas.
- ``tool_use``: starts as ``{"type": "tool_use", "id", "name", "input": {}}``, then ``input_json_delta``
  events whose ``partial_json`` pieces join into the input.
A block is closed when the next one starts or the answer finishes, so a fault right after a block's last
delta leaves it open (mid-thinking: no signature yet). Every signature and redacted ``data`` handed out is
listed in ``issued`` (the fake remembers them to check what clients send back).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson

from tests.fakes.parts import Event, Part, Reasoning, RedactedThinking, Text, ToolArgs, ToolCall, new_signature

__all__ = ["AnthropicDialect", "stop_reason"]

_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
BlockType = Literal["text", "thinking", "redacted_thinking", "tool_use"]


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def stop_reason(finish_reason: str) -> str:
    """OpenAI-style finish reasons to Anthropic's: ``stop`` → ``end_turn``, ``length`` → ``max_tokens``,
    ``tool_calls`` → ``tool_use``; others unchanged."""
    return _STOP_REASONS.get(finish_reason, finish_reason)


def _tool_input(call: ToolCall) -> Any:
    return orjson.loads(call.arguments) if call.arguments else {}


class AnthropicDialect:
    endpoint = "/messages"
    content_type = "text/event-stream; charset=utf-8"
    request_id_header = "request-id"

    def __init__(self, request: dict[str, Any], usage: bool | None) -> None:
        self.model = str(request.get("model") or "fake-model")
        self.id = "msg_fake" + uuid.uuid4().hex[:20]
        self.issued: list[tuple[str, str, str]] = []  # ("thinking", signature, text) | ("redacted_thinking", data, "")
        self._index = -1  # the open (or last) block's index
        self._open: BlockType | None = None
        self._thinking: list[str] = []
        self._signature: str | None = None
        self._tool_blocks: dict[str, int] = {}  # tool_use id -> block index

    # -- streaming ------------------------------------------------------------------------------------
    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        frames = []
        if self._open == "thinking":
            signature = self._signature or new_signature()
            self.issued.append(("thinking", signature, "".join(self._thinking)))
            frames.append(self._delta(self._index, {"type": "signature_delta", "signature": signature}))
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._open = None
        return frames

    def _start(self, kind: BlockType, block: dict[str, Any]) -> list[bytes]:
        frames = self._close()
        self._index += 1
        self._open = kind
        if kind == "thinking":
            self._thinking, self._signature = [], None
        frames.append(_event("content_block_start",
                             {"type": "content_block_start", "index": self._index, "content_block": block}))
        return frames

    def opening(self, role_chunk: bool, prompt_tokens: int, first: Event | None = None) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
        }
        frames = [_event("message_start", {"type": "message_start", "message": message})]
        if first is None or isinstance(first, Text):
            frames += self._start("text", {"type": "text", "text": ""})
        elif isinstance(first, Reasoning):
            frames += self._start("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        return [*frames, self.ping()]

    def delta(self, text: str) -> bytes:
        return self.event(Text(text))

    def event(self, ev: Event) -> bytes:
        """The frames for one event: the previous block's stop and this one's start when the block changes."""
        frames: list[bytes] = []
        if isinstance(ev, Text):
            if self._open != "text":
                frames += self._start("text", {"type": "text", "text": ""})
            frames.append(self._delta(self._index, {"type": "text_delta", "text": ev.text}))
        elif isinstance(ev, Reasoning):
            if self._open != "thinking":
                frames += self._start("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            self._thinking.append(ev.text)
            self._signature = ev.signature or self._signature
            if ev.text:
                frames.append(self._delta(self._index, {"type": "thinking_delta", "thinking": ev.text}))
        elif isinstance(ev, RedactedThinking):
            frames += self._start("redacted_thinking", {"type": "redacted_thinking", "data": ev.data})
            self.issued.append(("redacted_thinking", ev.data, ""))
        elif isinstance(ev, ToolCall):
            frames += self._start("tool_use", {"type": "tool_use", "id": ev.call_id, "name": ev.name, "input": {}})
            self._tool_blocks[ev.call_id] = self._index
        elif isinstance(ev, ToolArgs):
            index = self._tool_blocks[ev.call.call_id]
            frames.append(self._delta(index, {"type": "input_json_delta", "partial_json": ev.piece}))
        return b"".join(frames)

    def ping(self) -> bytes:
        return _event("ping", {"type": "ping"})

    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        return [
            *self._close(),
            _event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason(finish_reason), "stop_sequence": None},
                                     "usage": {"output_tokens": completion_tokens}}),
        ]

    def done(self) -> bytes:
        return _event("message_stop", {"type": "message_stop"})

    def malformed(self) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"

    def invalid_utf8(self) -> bytes:
        return self.delta("@@BAD@@").replace(b"@@BAD@@", b"bad\xff\xfebytes")

    def overloaded(self) -> bytes:
        return _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})

    # -- whole answers ----------------------------------------------------------------------------------
    def message(self, parts: list[Part], finish_reason: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
        """A whole ``message`` whose ``content`` holds the same blocks a stream of ``parts`` would."""
        content: list[dict[str, Any]] = []
        for part in parts:
            last = content[-1] if content else {}
            if isinstance(part, Text):
                if last.get("type") == "text":
                    last["text"] += part.text
                else:
                    content.append({"type": "text", "text": part.text})
            elif isinstance(part, Reasoning):
                if last.get("type") == "thinking":
                    last["thinking"] += part.text
                    last["signature"] = part.signature or last["signature"]
                else:
                    content.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
            elif isinstance(part, RedactedThinking):
                content.append({"type": "redacted_thinking", "data": part.data})
                self.issued.append(("redacted_thinking", part.data, ""))
            else:
                content.append({"type": "tool_use", "id": part.call_id, "name": part.name, "input": _tool_input(part)})
        for block in content:
            if block["type"] == "thinking":
                block["signature"] = block["signature"] or new_signature()
                self.issued.append(("thinking", block["signature"], block["thinking"]))
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": stop_reason(finish_reason),
                "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}

    @staticmethod
    def error(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
        kind = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message or f"fake upstream answered {status}"}}

    @staticmethod
    def models() -> dict[str, Any]:
        model = {"type": "model", "id": "fake-model", "display_name": "Fake Model",
                 "created_at": "2024-01-01T00:00:00Z"}
        return {"data": [model], "has_more": False, "first_id": "fake-model", "last_id": "fake-model"}
