"""Log entries to bytes on the wire: ssegate's native stream and OpenAI's ``chat.completion.chunk`` stream.

An encoder is a ``response.StreamEncoder``: ``head()`` (bytes sent before the first event), ``encode(seq, entries)``
(consecutive entries from ``seq`` on, in one ``bytes``: a client that fell behind gets its backlog in one write)
and ``error_response`` (status, JSON body and headers for a failure before the commit). Text deltas are the hot
path: a fixed prefix, the JSON string, a fixed suffix.

Native (CONTRACT §3, §3.1): every event has ``id: <stream_id>:<seq>``; text is an unnamed event
``{"delta"}``, reasoning an ``event: reasoning`` ``{"delta"}``, tool calls ``tool_call`` / ``tool_call_delta``, and
``start``/``done``/``error`` carry their payloads as they are.

OpenAI (CONTRACT §7): the role chunk first, ``delta.content`` for text, ``delta.reasoning_content`` (and the same
text as ``delta.reasoning``, which other clients read) for reasoning, ``delta.tool_calls`` fragments as OpenAI
sends them (``index``, ``id``, ``type``, ``function.name`` and empty ``arguments`` first, then argument pieces),
a chunk with ``finish_reason``, a usage chunk with ``choices: []`` when asked, then ``data: [DONE]``; a failure is
``event: error`` with OpenAI's error object (the SDKs raise it). ``Answer`` reads a whole log into the fields of
a non-streamed ``chat.completion`` message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..core.entries import DELTA, DONE, ERROR, REASONING, START, TOOL_ARGS, TOOL_CALL, Entry
from ..errors import GatewayError, error_from_code
from ..sse import dumps, encode, retry_field

__all__ = ["FINISH_REASONS", "Answer", "NativeEncoder", "OpenAIChunkEncoder", "as_error", "finish_reason",
           "openai_usage"]

_DELTA: Final = b'\ndata: {"delta":'
_REASONING: Final = b'\nevent: reasoning\ndata: {"delta":'
_TOOL_ARGS: Final = b"\nevent: tool_call_delta\ndata: "
"""The native events written most (``sse.encode``'s framing, inline), between their ``id`` and their data: joined,
not formatted (``bytes %`` cost ~1.2k instructions an event), and a delta's ``{"delta": text}`` written around its
JSON string rather than made a dict (the same bytes as ``dumps`` of the dict)."""
_OBJECT_END: Final = b"}\n\n"
_END: Final = b"\n\n"
_NAMES: Final = {START: b"start", DONE: b"done", ERROR: b"error", TOOL_CALL: b"tool_call",
                 TOOL_ARGS: b"tool_call_delta"}

FINISH_REASONS: Final = frozenset({"stop", "length", "content_filter", "tool_calls"})
"""The finish reasons OpenAI clients know; others (``cancelled``) are reported as ``stop``."""


def as_error(error: GatewayError | None, payload: dict[str, Any]) -> GatewayError:
    """The error behind an ``error`` entry: the generation's own, or rebuilt from the wire form."""
    if error is not None:
        return error
    e = payload.get("error") or {}
    return error_from_code(str(e.get("code", "internal_error")), str(e.get("message", "")), e.get("retryable"))


class NativeEncoder:
    """ssegate's own stream (CONTRACT §3): ``retry:`` first, every event with ``id: <stream_id>:<seq>``."""

    __slots__ = ("_head", "_id", "_prefix")

    def __init__(self, stream_id: str, retry_ms: int = 2000) -> None:
        self._prefix = stream_id.encode() + b":"
        self._id = b"id: " + self._prefix
        self._head = retry_field(retry_ms)

    def head(self) -> bytes:
        return self._head

    def encode(self, seq: int, kinds: list[int], payloads: list[Any]) -> bytes:
        if len(kinds) == 1:
            return self._event(seq, kinds[0], payloads[0])
        parts = []
        for i in range(len(kinds)):
            kind, payload = kinds[i], payloads[i]
            parts.append(self._event(seq, kind, payload))
            seq += 1
        return b"".join(parts)

    def _event(self, seq: int, kind: int, payload: Any) -> bytes:
        if kind == DELTA:
            return b"".join((self._id, str(seq).encode(), _DELTA, dumps(payload), _OBJECT_END))
        if kind == REASONING:
            return b"".join((self._id, str(seq).encode(), _REASONING, dumps(payload), _OBJECT_END))
        if kind == TOOL_ARGS:
            return b"".join((self._id, str(seq).encode(), _TOOL_ARGS, dumps(payload), _END))
        return self._other(seq, kind, payload)

    def _other(self, seq: int, kind: int, payload: Any) -> bytes:
        if kind == START and "echo" in payload:  # another protocol's copy of its request: not part of `start`
            payload = {k: v for k, v in payload.items() if k != "echo"}
        return encode(self._prefix, seq, _NAMES[kind], dumps(payload))

    def error_response(self, error: GatewayError | None, payload: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        err = as_error(error, payload)
        return err.status, dumps(payload), err.headers()


def finish_reason(reason: Any) -> str:
    return reason if reason in FINISH_REASONS else "stop"


def openai_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    u = usage or {}
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class OpenAIChunkEncoder:
    """Log entries as OpenAI ``chat.completion.chunk`` events."""

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

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._chunk(choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def encode(self, seq: int, kinds: list[int], payloads: list[Any]) -> bytes:
        out: list[bytes] = []
        for i in range(len(kinds)):
            kind, payload = kinds[i], payloads[i]
            if kind == DELTA:
                out.append(self._delta_pre + dumps(payload) + self._delta_post)
            elif kind == REASONING:
                out.append(self._delta({"reasoning_content": payload, "reasoning": payload}))
            elif kind == TOOL_ARGS:
                out.append(self._delta({"tool_calls": [{"index": payload["index"],
                                                        "function": {"arguments": payload["arguments"]}}]}))
            elif kind == TOOL_CALL:
                call = {"index": payload["index"], "id": payload["id"], "type": "function",
                        "function": {"name": payload["name"], "arguments": ""}}
                out.append(self._delta({"tool_calls": [call]}))
            elif kind == START:
                out.append(self._delta({"role": "assistant", "content": ""}))
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


@dataclass(slots=True)
class Answer:
    """A whole answer read from a log's entries: for non-streamed responses."""

    text: list[str]
    reasoning: list[str]
    terminal: Entry | None

    def __init__(self) -> None:  # written out: mypyc compiles it (core/outcome.py)
        self.text = []
        self.reasoning = []
        self.terminal = None

    def add(self, kinds: list[int], payloads: list[Any]) -> None:
        for i in range(len(kinds)):
            kind, payload = kinds[i], payloads[i]
            if kind == DELTA:
                self.text.append(payload)
            elif kind == REASONING:
                self.reasoning.append(payload)
            elif kind == DONE or kind == ERROR:
                self.terminal = (kind, payload)

    def openai_message(self) -> dict[str, Any]:
        """The ``message`` of a ``chat.completion`` choice."""
        assert self.terminal is not None
        done = self.terminal[1]
        calls = done.get("tool_calls")
        text = "".join(self.text)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        return message
