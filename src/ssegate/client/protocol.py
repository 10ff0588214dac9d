"""The client's protocol without I/O: which request to make, parsing events, seq bookkeeping, when to resume.

``_Protocol`` is a sans-I/O state machine (the h11/HTTPX idiom): ``Stream`` and ``AsyncStream`` (``__init__.py``)
only move bytes, so the sync and async clients share every decision. ``chat_body`` is the JSON of
``POST /v1/chat/stream``; ``http_error`` maps a refused request to the typed error of ``ssegate.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import (
    GatewayError,
    GenerationLost,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    error_from_code,
    parse_retry_after,
)
from ..parts import Usage
from ..sse import ServerSentEvent, SSEDecoder, split_event_id
from ._lazy import httpx
from .events import Delta, Done, GatewayUnreachable, Reasoning, Start, StreamEvent, ToolCallDelta, ToolCallStart

if TYPE_CHECKING:
    import httpx

__all__ = ["Messages", "Refused", "Retry", "StreamProtocol", "chat_body", "http_error"]

Messages = str | Sequence[Mapping[str, Any]]
"""A prompt (one user message) or messages in OpenAI's shapes (CONTRACT §3.1)."""


class Refused(Exception):
    """A resume answered with a retryable error status: treated like a drop (retried with backoff)."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


_BY_STATUS: dict[int, type[GatewayError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: NotFound, 413: PayloadTooLarge, 422: InvalidRequest,
    429: RateLimited, 502: UpstreamError, 503: Overloaded, 504: UpstreamTimeout,
}


def http_error(status: int, headers: httpx.Headers, body: bytes) -> GatewayError:
    """The typed error for a refused request: by the body's ``error.code``, else by the status."""
    err: GatewayError | None = None
    try:
        info = orjson.loads(body)["error"]
        err = error_from_code(str(info["code"]), str(info["message"]), info.get("retryable"))
    except (ValueError, KeyError, TypeError):
        pass
    if err is None:
        text = body[:200].decode("utf-8", "replace").strip() or httpx.codes.get_reason_phrase(status)
        err = _BY_STATUS.get(status, GatewayError)(f"HTTP {status}: {text}")
    err.status = status
    err.retry_after = parse_retry_after(headers.get("retry-after"))
    return err


def chat_body(messages: Messages, **fields: Any) -> bytes:
    """The JSON of ``POST /v1/chat/stream``; a plain string is one user message; ``None`` fields are left out."""
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
    body: dict[str, Any] = {"messages": msgs}
    for key, value in fields.items():
        if value is not None:
            body[key] = list(value) if key == "stop" and not isinstance(value, str) else value
    return orjson.dumps(body)


# --- the protocol, without I/O ------------------------------------------------------------------------
@dataclass(slots=True)
class Retry:
    max_retries: int
    backoff_s: float
    max_backoff_s: float = 8.0


class StreamProtocol:
    """One stream's state: the request to make next, the events seen, and what a drop means."""

    def __init__(self, where: str, body: bytes | None, stream_id: str | None, after: int, retry: Retry) -> None:
        self.where = where
        self.body = body
        self.stream_id = stream_id
        self.last_seq = after
        self.model: str | None = None
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.done: Done | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.error: GatewayError | None = None
        self.error_event: ServerSentEvent | None = None
        self.finished = False
        self.cancelled = False
        self.resumes = 0
        self._retry = retry
        self._attempt = 0
        self._decoder = SSEDecoder()

    def request(self) -> tuple[str, str, dict[str, str], bytes | None]:
        """Method, path, query and body of the next request: the chat itself, or a resume."""
        self._decoder = SSEDecoder()
        if self.stream_id is None:
            return "POST", "/v1/chat/stream", {}, self.body
        return "GET", f"/v1/streams/{self.stream_id}", {"after": str(self.last_seq)}, None

    def accept(self, status: int, headers: httpx.Headers, body: bytes) -> None:
        """Go on reading a ``200``; raise the typed error of anything else. After a drop, a stream that
        is gone is ``GenerationLost`` and a retryable refusal is retried like a drop."""
        if status == 200:
            if self.stream_id is None:
                self.stream_id = headers.get("x-stream-id")
            return
        resuming = self.resumes > 0  # after a drop, rather than a first request
        if status == 204 and self.stream_id is not None:
            if resuming:
                raise GenerationLost(f"stream {self.stream_id} ended, but its terminal event never arrived")
            self.finished = True  # resume() of a stream whose terminal event the caller already has
            return
        err = http_error(status, headers, body)
        if resuming:
            if isinstance(err, NotFound):
                raise GenerationLost(f"stream {self.stream_id} can no longer be resumed: {err.message}") from err
            if err.retryable:
                raise Refused(err)
        raise err

    def feed(self, chunk: str) -> list[StreamEvent]:
        """The events completed by ``chunk``; stops at the terminal event (``finished``, maybe ``error``)."""
        out: list[StreamEvent] = []
        for sse in self._decoder.feed(chunk):
            ev = self._event(sse)
            if ev is not None:
                out.append(ev)
            if self.finished:
                break
        return out

    def _event(self, sse: ServerSentEvent) -> StreamEvent | None:
        parsed = split_event_id(sse.id or "")
        if parsed is None:
            raise UpstreamProtocolError(f"event without a valid id: {sse.id!r}")
        sid, seq = parsed
        if self.stream_id is None:
            self.stream_id = sid
        elif sid != self.stream_id:
            raise UpstreamProtocolError(f"event of stream {sid!r} in stream {self.stream_id!r}")
        if seq <= self.last_seq:
            return None  # already seen (replayed): never twice
        if seq != self.last_seq + 1:
            raise GenerationLost(f"events {self.last_seq + 1}..{seq - 1} of stream {sid} are missing")
        self.last_seq = seq
        self._attempt = 0  # progress: the retry budget is per drop
        try:
            data = sse.json()
            if sse.event == "message":
                text = str(data["delta"])
                self.parts.append(text)
                return Delta(seq=seq, raw=sse, text=text)
            if sse.event == "start":
                self.model = str(data.get("model", ""))
                return Start(seq=seq, raw=sse, stream_id=str(data.get("stream_id", sid)), model=self.model)
            if sse.event == "reasoning":
                text = str(data["delta"])
                self.reasoning.append(text)
                return Reasoning(seq=seq, raw=sse, text=text)
            if sse.event == "tool_call":
                return ToolCallStart(seq=seq, raw=sse, index=int(data["index"]), id=str(data["id"]),
                                     name=str(data["name"]))
            if sse.event == "tool_call_delta":
                return ToolCallDelta(seq=seq, raw=sse, index=int(data["index"]), arguments=str(data["arguments"]))
            if sse.event == "done":
                u = data.get("usage") or {}
                self.usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)),
                                   bool(u.get("estimated", False)))
                self.finish_reason = str(data.get("finish_reason", "stop"))
                self.finished = True
                self.done = Done(seq=seq, raw=sse, finish_reason=self.finish_reason, usage=self.usage,
                                 tool_calls=list(data.get("tool_calls") or []), provider_data=data.get("provider_data"))
                return self.done
            if sse.event == "error":
                info = data["error"]
                self.error = error_from_code(str(info["code"]), str(info["message"]), info.get("retryable"))
                self.error_event = sse
                self.finished = True
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamProtocolError(f"malformed {sse.event!r} event: {sse.data[:200]!r}") from exc
        return None  # an event kind this client does not know: skipped

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def dropped(self, cause: Exception | None) -> float | None:
        """The connection ended before the terminal event: seconds to wait before resuming, ``None`` to
        stop (the stream was cancelled); raises when resuming is impossible or the budget is spent."""
        if self.cancelled:
            return None
        refused = cause.error if isinstance(cause, Refused) else None
        why = f"{type(cause).__name__}: {cause}" if cause is not None else "the stream ended without a terminal event"
        if self.stream_id is None:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.where} ({why})") from cause
        if self._attempt >= self._retry.max_retries:
            if refused is not None:
                raise refused
            raise GatewayUnreachable(
                f"lost the connection to {self.where} and could not resume stream {self.stream_id} "
                f"after {self._attempt} attempts ({why})"
            ) from cause
        n = self._attempt
        delay = min(self._retry.max_backoff_s, self._retry.backoff_s * 2 ** (n - 1)) if n else 0.0
        self._attempt += 1
        self.resumes += 1
        return delay
