"""Log entries as the Vercel AI SDK's UI message stream: what ``useChat`` / ``DefaultChatTransport`` parse.

The wire: ``data: <chunk JSON>\\n\\n`` per chunk (no ``id:`` or ``event:`` lines; the client ignores them and
resumes by chat id, replaying from the start), ``: ping`` comments as keep-alives (the response's heartbeats), and
``data: [DONE]`` last. One stream is one step (one upstream call)::

    START       start {messageId}, start-step
    DELTA       text-start {id} before the first piece of a text block, then text-delta {id, delta}
    REASONING   reasoning-start {id} before the first piece of a reasoning block, then reasoning-delta {id, delta}
    TOOL_CALL   (the open text/reasoning block ends) tool-input-start {toolCallId, toolName}
    TOOL_ARGS   tool-input-delta {toolCallId, inputTextDelta}
    DONE        the open block ends (text-end / reasoning-end), every call's tool-input-available {input: parsed},
                finish-step, finish (or abort when cancelled), [DONE]
    ERROR       error {errorText: "<code>: <message>"}, [DONE]

A block is open until something else starts, so every ``*-start`` precedes its deltas and every block is closed
before the finish. A tool call's ``tool-input-available`` goes out at the end, when its input is known to be
complete (calls may interleave their argument pieces, and a call ends the model's turn anyway), so that the
client's ``onToolCall`` gets the whole input, parsed.
The ``done`` entry's ``provider_data`` (e.g. Anthropic thinking signatures) rides on the last closing chunk as
``providerMetadata: {"ssegate": {"provider_data": ...}}``, so it lands on that part of the assembled message and
comes back with it on the next request (``messages.py`` reads it there).

The client version decides the field set (``ClientVersion``). ``ai@5.0.0`` to ``5.0.216`` (and ``6.0.0`` to
``6.0.230``, ``7.0.0``) parse every chunk with a strict schema and throw on an unknown key, so the default is the
field set of ``ai@5.0.0``; a client that says its version (header ``X-AI-SDK-Version``) gets ``finish.finishReason``
from 5.0.92 and ``tool-input-error`` (a tool input that is not valid JSON) from 5.0.7; before that such an input is
passed on as its raw text. The encoder is stateful (open block, calls in progress) and serves one response; every
response of this protocol reads its log from the first entry, so the state is always complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ...core.entries import DELTA, DONE, ERROR, REASONING, START, TOOL_ARGS, TOOL_CALL
from ...errors import GatewayError, InvalidRequest
from ...sse import dumps
from ..encoders import as_error

__all__ = ["HEADER", "VERSION_HEADER", "ClientVersion", "UIMessageStreamEncoder", "error_text", "text_error"]

HEADER: Final = (b"x-vercel-ai-ui-message-stream", b"v1")
"""The response header that names the protocol (``UI_MESSAGE_STREAM_HEADERS`` in the ``ai`` package)."""
VERSION_HEADER: Final = "x-ai-sdk-version"
"""The request header in which an app states its ``ai`` package version (e.g. ``6.0.325``), to get newer fields."""
END: Final = b"data: [DONE]\n\n"

FINISH_REASONS: Final = {"stop": "stop", "length": "length", "tool_calls": "tool-calls",
                         "content_filter": "content-filter"}
"""OpenAI's finish reasons as the AI SDK names them; any other is ``other`` (``cancelled`` is an ``abort`` chunk)."""

_VERSION: Final = re.compile(r"^v?(\d{1,4})(?:\.(\d{1,4}))?(?:\.(\d{1,6}))?(?:[-+][0-9A-Za-z.-]*)?$")


@dataclass(frozen=True, slots=True)
class ClientVersion:
    """The ``ai`` package version of the client, which decides the chunk fields it accepts."""

    version: tuple[int, int, int] = (5, 0, 0)

    @classmethod
    def parse(cls, value: str | None) -> ClientVersion:
        """From the ``X-AI-SDK-Version`` header: ``5.0.92``, ``6``, ``6.0``, ``v6.0.1``, ``6.0.0-beta.3``; absent:
        the oldest supported (5.0.0)."""
        if value is None or not value.strip():
            return cls()
        m = _VERSION.match(value.strip())
        if m is None:
            raise InvalidRequest(f"{VERSION_HEADER}: {value[:40]!r} is not a version like '5.0.92' or '6'")
        version = (int(m[1]), int(m[2] or 0), int(m[3] or 0))
        if version < (5, 0, 0):
            raise InvalidRequest(f"{VERSION_HEADER}: ssegate speaks the UI message stream of ai 5 and later; "
                                 f"the data stream protocol of ai {version[0]} is not supported")
        return cls(version)

    @property
    def finish_reason(self) -> bool:
        """``finish.finishReason`` (ai 5.0.92)."""
        return self.version >= (5, 0, 92)

    @property
    def tool_input_error(self) -> bool:
        """The ``tool-input-error`` chunk (ai 5.0.7)."""
        return self.version >= (5, 0, 7)


def error_text(error: GatewayError) -> str:
    """How an error reads in the SDK's error state (``chat.error.message``): ``"<code>: <message>"``."""
    return f"{error.code}: {error.message}"


def text_error(error: GatewayError) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a failure before the stream: the transport throws ``new Error(await
    response.text())``, so the body is the readable text itself."""
    headers = {"content-type": "text/plain; charset=utf-8", **error.headers()}
    return error.status, error_text(error).encode(), headers


def _chunk(chunk: dict[str, Any]) -> bytes:
    return b"data: " + dumps(chunk) + b"\n\n"


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    pieces: list[str]

    def __init__(self, id: str, name: str, pieces: list[str]) -> None:  # written out: mypyc compiles it
        self.id = id
        self.name = name
        self.pieces = pieces


class UIMessageStreamEncoder:
    """One response's encoder (``response.StreamEncoder``): log entries to UI message stream chunks."""

    __slots__ = ("_block", "_calls", "_client", "_delta_pre", "_message_id", "_parts")

    def __init__(self, message_id: str, client: ClientVersion | None = None) -> None:
        self._message_id = message_id
        self._client = client or ClientVersion()
        self._block: str | None = None
        """The open text or reasoning block: ``"text"`` or ``"reasoning"``."""
        self._parts = 0
        self._delta_pre = b""
        """``data: {"type":"text-delta","id":"<id>","delta":`` of the open block (the hot path)."""
        self._calls: dict[int, _Call] = {}
        """The answer's tool calls, by index, until the end makes their input available."""

    def head(self) -> bytes:
        return b""

    def encode(self, seq: int, kinds: list[int], payloads: list[Any]) -> bytes:
        if len(kinds) == 1 and kinds[0] == DELTA and self._block == "text":  # the hot path: one more token
            return self._delta_pre + dumps(payloads[0]) + b"}\n\n"
        out: list[bytes] = []
        for i in range(len(kinds)):
            kind, payload = kinds[i], payloads[i]
            if kind == DELTA:
                if self._block != "text":
                    self._open(out, "text")
                out.append(self._delta_pre + dumps(payload) + b"}\n\n")
            elif kind == REASONING:
                if self._block != "reasoning":
                    self._open(out, "reasoning")
                out.append(self._delta_pre + dumps(payload) + b"}\n\n")
            elif kind == TOOL_CALL:
                self._close_block(out)
                call = _Call(str(payload["id"]), str(payload["name"]), [])
                self._calls[int(payload["index"])] = call
                out.append(_chunk({"type": "tool-input-start", "toolCallId": call.id, "toolName": call.name}))
            elif kind == TOOL_ARGS:
                started = self._calls.get(int(payload["index"]))
                if started is not None:  # (the generation refuses pieces of a call never started)
                    started.pieces.append(payload["arguments"])
                    out.append(_chunk({"type": "tool-input-delta", "toolCallId": started.id,
                                       "inputTextDelta": payload["arguments"]}))
            elif kind == START:
                out.append(_chunk({"type": "start", "messageId": self._message_id}))
                out.append(b'data: {"type":"start-step"}\n\n')
            elif kind == DONE:
                out += self._done(payload)
            elif kind == ERROR:
                out.append(_chunk({"type": "error", "errorText": error_text(as_error(None, payload))}))
                out.append(END)
        return b"".join(out)

    def error_response(self, error: GatewayError | None, payload: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        return text_error(as_error(error, payload))

    # --- blocks -----------------------------------------------------------------------------------------
    def _open(self, out: list[bytes], block: str) -> None:
        """End the open block and start a ``block``."""
        self._close_block(out)
        self._parts += 1
        part_id = f"{block}-{self._parts}"
        self._block = block
        out.append(_chunk({"type": f"{block}-start", "id": part_id}))
        self._delta_pre = b'data: {"type":"%s-delta","id":"%s","delta":' % (block.encode(), part_id.encode())

    def _close_block(self, out: list[bytes]) -> None:
        end = self._end_block()
        if end is not None:
            out.append(_chunk(end))

    def _end_block(self) -> dict[str, Any] | None:
        block = self._block
        if block is None:
            return None
        self._block = None
        return {"type": f"{block}-end", "id": f"{block}-{self._parts}"}

    def _available(self) -> list[dict[str, Any]]:
        """``tool-input-available`` (or ``tool-input-error``) for every call, in index order."""
        chunks = []
        for index in sorted(self._calls):
            call = self._calls[index]
            text = "".join(call.pieces)
            try:
                tool_input: Any = orjson.loads(text) if text.strip() else {}
                chunk = {"type": "tool-input-available", "toolCallId": call.id, "toolName": call.name,
                         "input": tool_input}
            except orjson.JSONDecodeError:
                if self._client.tool_input_error:
                    chunk = {"type": "tool-input-error", "toolCallId": call.id, "toolName": call.name, "input": text,
                             "errorText": "the model's tool input is not valid JSON"}
                else:  # ai < 5.0.7 has no chunk for it: the raw text is the input
                    chunk = {"type": "tool-input-available", "toolCallId": call.id, "toolName": call.name,
                             "input": text}
            chunks.append(chunk)
        self._calls.clear()
        return chunks

    def _done(self, payload: dict[str, Any]) -> list[bytes]:
        closing = [c for c in (self._end_block(), *self._available()) if c is not None]
        provider_data = payload.get("provider_data")
        if provider_data and closing:
            closing[-1]["providerMetadata"] = {"ssegate": {"provider_data": provider_data}}
        out = [_chunk(c) for c in closing]
        out.append(b'data: {"type":"finish-step"}\n\n')
        reason = payload.get("finish_reason")
        if reason == "cancelled":
            out.append(b'data: {"type":"abort"}\n\n')
        elif self._client.finish_reason:
            out.append(_chunk({"type": "finish", "finishReason": FINISH_REASONS.get(str(reason), "other")}))
        else:
            out.append(b'data: {"type":"finish"}\n\n')
        out.append(END)
        return out
