"""The Anthropic Messages wire format, as the fake upstream speaks it.

Streaming (``stream: true``): ``event: <type>\\ndata: <json>\\n\\n`` for ``message_start`` (with
``usage.input_tokens``), ``content_block_start``, ``ping``, one ``content_block_delta`` (``text_delta``) per
text delta, ``content_block_stop``, ``message_delta`` (``stop_reason`` and the cumulative
``usage.output_tokens``) and ``message_stop``. Like the real API, ``message_start`` reports
``output_tokens: 1``; the count in ``message_delta`` is the total, not an increment.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

__all__ = ["AnthropicDialect"]

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
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def _event(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def stop_reason(finish_reason: str) -> str:
    """OpenAI-style finish reasons to Anthropic's: ``stop`` → ``end_turn``, ``length`` → ``max_tokens``."""
    return _STOP_REASONS.get(finish_reason, finish_reason)


class AnthropicDialect:
    endpoint = "/messages"
    content_type = "text/event-stream; charset=utf-8"
    request_id_header = "request-id"

    def __init__(self, request: dict[str, Any], usage: bool | None) -> None:
        self.model = str(request.get("model") or "fake-model")
        self.id = "msg_fake" + uuid.uuid4().hex[:20]

    def opening(self, role_chunk: bool, prompt_tokens: int) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
        }
        return [
            _event("message_start", {"type": "message_start", "message": message}),
            _event("content_block_start",
                   {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            _event("ping", {"type": "ping"}),
        ]

    def delta(self, text: str) -> bytes:
        return _event("content_block_delta",
                      {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})

    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
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

    def message(self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": text}], "stop_reason": stop_reason(finish_reason),
                "stop_sequence": None, "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}

    @staticmethod
    def error(status: int, message: str | None = None) -> dict[str, Any]:
        kind = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message or f"fake upstream answered {status}"}}

    @staticmethod
    def models() -> dict[str, Any]:
        model = {"type": "model", "id": "fake-model", "display_name": "Fake Model",
                 "created_at": "2024-01-01T00:00:00Z"}
        return {"data": [model], "has_more": False, "first_id": "fake-model", "last_id": "fake-model"}
