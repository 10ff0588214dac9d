"""Anthropic's Messages API (``POST {base}/messages`` with ``stream: true``).

Request mapping: system (and developer) messages go to the top-level ``system`` string; ``tool`` messages
are sent as user text; consecutive messages of one role are merged (the API wants user and assistant to
alternate); only a system prompt is ``invalid_request``. ``max_tokens``
is required by Anthropic: ``DEFAULT_MAX_TOKENS`` when the request names none. ``stop`` becomes
``stop_sequences``.

Stream mapping::

    message_start         usage.input_tokens (+ cache tokens)  -> prompt tokens
    content_block_delta   text_delta                           -> a text delta
    message_delta         stop_reason, cumulative output_tokens -> Finish reason, completion tokens
    message_stop          end of the stream                     -> Finish
    ping, content_block_start/stop, other deltas (tool input, thinking) -> ignored
    error                 overloaded_error/api_error -> retryable UpstreamError; rate_limit_error -> rate_limited

HTTP errors before the stream (4xx, 5xx, 529 overloaded) go through ``errors.upstream_status_error``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson

from ..errors import InvalidRequest, UpstreamError, UpstreamProtocolError, upstream_status_error
from .base import ChatRequest, Finish, ProviderEvent, Usage, map_upstream_errors
from .httpclient import Response
from .relay import UpstreamSession, check_models, open_stream, relay, unset_emit

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicProvider", "messages_body"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error types (in bodies and in mid-stream ``error`` events) and the HTTP status they stand for
_ERROR_STATUS = {
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


def messages_body(request: ChatRequest) -> dict[str, Any]:
    """The Messages API request body for ``request`` (streaming)."""
    system: list[str] = []
    turns: list[dict[str, str]] = []
    for m in request.messages:
        role = m["role"]
        if role in ("system", "developer"):
            system.append(m["content"])
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + m["content"]
        else:
            turns.append({"role": role, "content": m["content"]})
    if not turns:
        raise InvalidRequest("the anthropic provider needs a user message besides the system prompt")
    body: dict[str, Any] = {
        "model": request.model,
        "messages": turns,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "stream": True,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    if request.stop:
        body["stop_sequences"] = request.stop
    body.update(request.extra)
    return body


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, base_url: str, api_key: str, session: UpstreamSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = f"anthropic:{self.base_url}"
        self._session = session
        self._headers = {
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if api_key:
            self._headers["x-api-key"] = api_key

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        resp = None
        try:
            with map_upstream_errors():
                resp = await open_stream(
                    self._session, self.base_url + "/messages", messages_body(request), self._headers, request,
                    _error_message,
                )
                reader = _EventReader(resp)
                async for text in relay(resp, request, reader):
                    yield text  # only when no sink takes the deltas as they arrive
                if not reader.stopped:
                    raise UpstreamProtocolError("upstream stream ended without message_stop")
                usage = Usage(reader.prompt, reader.completion) if reader.reported else None
                yield Finish(reader.reason or "stop", usage)
        finally:
            request.abort = None
            if resp is not None:
                resp.close()

    async def check(self) -> None:
        """Anthropic has no cheap unauthenticated probe: ``GET /models`` answers anything but a 5xx."""
        await check_models(self._session, self.base_url + "/models", self._headers)

    async def aclose(self) -> None:
        await self._session.aclose()


class _EventReader:
    """Reads Messages stream events as they arrive (the mapping in the module's docstring)."""

    __slots__ = ("completion", "emit", "prompt", "reason", "reported", "resp", "stopped")

    def __init__(self, resp: Response) -> None:
        self.resp = resp
        self.emit: Callable[[str], None] = unset_emit
        self.prompt = 0
        self.completion = 0
        self.reported = False
        self.reason: str | None = None
        self.stopped = False

    def on_event(self, event: bytes, data: bytes) -> None:
        if self.stopped:
            return
        msg = orjson.loads(data)
        if not isinstance(msg, dict):
            raise UpstreamProtocolError(f"upstream sent a non-object event: {data[:200]!r}")
        kind = msg.get("type") or event.decode()
        if kind == "content_block_delta":
            delta = msg.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if text:
                    self.emit(text)
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


def _stream_error(msg: dict[str, Any]) -> UpstreamError:
    """A mid-stream ``error`` event, as the error its HTTP status would have been."""
    err = msg.get("error")
    if not isinstance(err, dict):
        err = {}
    kind = str(err.get("type") or "api_error")
    message = f"{kind}: {err.get('message') or 'upstream error event'}"
    return upstream_status_error(_ERROR_STATUS.get(kind, 500), message)
