"""Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, ...)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson

from ..errors import UpstreamProtocolError, upstream_status_error
from .base import ChatRequest, Finish, ProviderEvent, Usage, map_upstream_errors
from .httpclient import Response
from .relay import UpstreamSession, check_models, open_stream, relay, unset_emit

__all__ = ["OpenAIProvider"]

loads = orjson.loads

_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls",
           "function_call": "tool_calls", "eos": "stop", "end_turn": "stop"}


class OpenAIProvider:
    name = "openai"

    def __init__(self, base_url: str, api_key: str, session: UpstreamSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.label = f"openai:{self.base_url}"
        self._session = session
        self._headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = request.stop
        body.update(request.extra)
        return body

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        resp = None
        try:
            with map_upstream_errors():
                resp = await open_stream(
                    self._session, self.base_url + "/chat/completions", self.body(request), self._headers, request,
                    _error_message,
                )
                reader = _ChunkReader(resp)
                async for text in relay(resp, request, reader):
                    yield text  # only when no sink takes the deltas as they arrive
                if not reader.done and reader.reason is None:
                    raise UpstreamProtocolError("upstream stream ended without a finish")
                yield Finish(reader.reason or "stop", reader.usage)
        finally:
            request.abort = None
            if resp is not None:
                resp.close()

    async def check(self) -> None:
        await check_models(self._session, self.base_url + "/models", self._headers)

    async def aclose(self) -> None:
        await self._session.aclose()


class _ChunkReader:
    """Reads ``chat.completion.chunk`` events as they arrive: text deltas to ``emit``, the finish reason and
    usage kept; ``[DONE]`` stops the body."""

    __slots__ = ("done", "emit", "reason", "resp", "usage")

    def __init__(self, resp: Response) -> None:
        self.resp = resp
        self.emit: Callable[[str], None] = unset_emit
        self.done = False
        self.reason: str | None = None
        self.usage: Usage | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        if self.done:
            return
        if data == b"[DONE]":
            self.done = True
            self.resp.stop()
            return
        chunk = loads(data)
        if event == b"error" or "error" in chunk:
            raise _midstream_error(chunk)
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if text:
                    self.emit(text)
            fr = choice.get("finish_reason")
            if fr:
                self.reason = _FINISH.get(fr, fr)
        u = chunk.get("usage")
        if u:
            self.usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


def _error_message(detail: str) -> str:
    try:
        err = orjson.loads(detail)["error"]
        return str(err.get("message") or err) if isinstance(err, dict) else str(err)
    except (ValueError, KeyError, TypeError):
        return detail[:500] or "no detail"


def _midstream_error(chunk: dict[str, Any]) -> Exception:
    err = chunk.get("error") or {}
    message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
    code = str(err.get("code") or err.get("type") or "") if isinstance(err, dict) else ""
    status = 429 if "rate" in code else 502
    return upstream_status_error(status, message or "upstream error event")
