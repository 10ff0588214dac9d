"""The OpenAI Chat Completions wire format, as the fake upstream speaks it.

Streaming (``stream: true``): ``data: <chat.completion.chunk>`` events — an optional role-only chunk,
one chunk per text delta, a chunk with ``"delta": {}`` and the ``finish_reason``, a usage chunk with
``"choices": []`` when asked, then ``data: [DONE]``. When ``stream_options.include_usage`` is set, every
chunk carries ``"usage": null`` until the usage chunk, as OpenAI does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

__all__ = ["OpenAIDialect"]

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

    def __init__(self, request: dict[str, Any], usage: bool | None) -> None:
        self.model = str(request.get("model") or "fake-model")
        options = request.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        self.include_usage = asked if usage is None else usage
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return _event(obj)

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def opening(self, role_chunk: bool, prompt_tokens: int) -> list[bytes]:
        return [self._chunk([self._choice({"role": "assistant", "content": ""})])] if role_chunk else []

    def delta(self, text: str) -> bytes:
        return self._chunk([self._choice({"content": text})])

    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        frames = [self._chunk([self._choice({}, finish_reason)])]
        if self.include_usage:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
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

    def message(self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    @staticmethod
    def error(status: int, message: str | None = None) -> dict[str, Any]:
        kind, code = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message or f"fake upstream answered {status}", "type": kind, "param": None,
                          "code": code}}

    @staticmethod
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}
