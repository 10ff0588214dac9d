"""The Python client: a stream's events as typed values, resumed by itself after a dropped connection.

```python
from ssegate.client import Client, Delta, Done

with Client("http://127.0.0.1:8000") as client:
    for event in client.stream("What is SSE?"):
        if isinstance(event, Delta):
            print(event.text, end="", flush=True)
        elif isinstance(event, Done):
            print(f"\\n[{event.finish_reason}, {event.usage.completion_tokens} tokens]")
```

``AsyncClient`` is the same with ``async with`` and ``async for``. A stream yields ``Start``, then
``Delta``s, then one ``Done``; an ``event: error`` (or a refused request) raises the matching
``ssegate.errors`` class (``UpstreamTimeout``, ``RateLimited``, ...). When the connection drops before the
terminal event, the stream resumes from its last event id (``GET /v1/streams/{id}?after=<seq>``, CONTRACT
§5) with bounded, exponential backoff, so the caller sees every delta exactly once. ``GatewayUnreachable``
means the gateway could not be reached (or could not be reached again to resume).

The protocol (which request to make, parsing, seq bookkeeping, when to resume, error mapping) lives once in
``_Protocol``, a sans-I/O state machine; ``Stream`` and ``AsyncStream`` only move bytes. That is why the
sync and async classes below are thin twins rather than two implementations.

Iterated to its end a stream closes its connection itself; to stop early, ``close()`` it or use it as a
context manager (``with client.stream(...) as s:``), and ``cancel()`` it to stop the generation on the
server too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import GenerationLost, NotFound
from ..parts import Usage
from ..sse import ServerSentEvent
from ._lazy import httpx
from .events import (
    Delta,
    Done,
    GatewayUnreachable,
    Reasoning,
    Start,
    StreamEvent,
    ToolCallDelta,
    ToolCallStart,
    assistant_message,
)
from .protocol import Messages, Refused, Retry, StreamProtocol, chat_body, http_error

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncStream",
    "Client",
    "Delta",
    "Done",
    "GatewayUnreachable",
    "Reasoning",
    "Start",
    "Stream",
    "StreamEvent",
    "ToolCallDelta",
    "ToolCallStart",
    "assistant_message",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_GRACE_S = 30.0
"""The resume grace this client asks for: a drop shorter than this resumes the same generation."""



# --- the shared surface of both stream classes ----------------------------------------------------------
class _StreamState:
    _proto: StreamProtocol

    @property
    def stream_id(self) -> str | None:
        return self._proto.stream_id

    @property
    def last_seq(self) -> int:
        """The seq of the last event received (the resume point)."""
        return self._proto.last_seq

    @property
    def model(self) -> str | None:
        return self._proto.model

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._proto.parts)

    @property
    def reasoning(self) -> str:
        """The reasoning text received so far."""
        return "".join(self._proto.reasoning)

    @property
    def done(self) -> Done | None:
        """The ``Done`` event, once it arrived."""
        return self._proto.done

    def assistant_message(self) -> dict[str, Any]:
        """The assistant message for the next turn (text, tool calls, reasoning, provider data)."""
        return assistant_message(self.text, self._proto.done, self.reasoning)

    @property
    def finish_reason(self) -> str | None:
        return self._proto.finish_reason

    @property
    def usage(self) -> Usage | None:
        return self._proto.usage

    @property
    def error_event(self) -> ServerSentEvent | None:
        """The ``event: error`` that ended the stream, as received."""
        return self._proto.error_event

    @property
    def resumes(self) -> int:
        """How many resume requests the stream made after drops."""
        return self._proto.resumes


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"accept": "text/event-stream, application/json", "user-agent": "ssegate-client"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


async def _sleep(seconds: float) -> None:
    import asyncio  # here: the sync client and ``ssegate chat`` never load asyncio for it

    await asyncio.sleep(seconds)


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    # the read timeout must outlast the heartbeat interval (15 s by default); a read timeout is a drop
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=min(timeout, 10.0))


CANCEL_TIMEOUT_S = 5.0


# --- sync -----------------------------------------------------------------------------------------------
class Stream(_StreamState):
    """An iterator over one stream's events. Iterate it once."""

    def __init__(self, client: Client, proto: StreamProtocol) -> None:
        self._client = client
        self._proto = proto
        self._gen: Generator[StreamEvent, None, None] | None = None

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamEvent:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def _run(self) -> Generator[StreamEvent, None, None]:
        proto = self._proto
        http = self._client.http
        while True:
            method, path, params, content = proto.request()
            tail: list[StreamEvent] = []
            cause: Exception | None = None
            try:
                with http.stream(method, path, params=params, content=content) as resp:
                    proto.accept(resp.status_code, resp.headers, resp.read() if resp.status_code != 200 else b"")
                    for chunk in resp.iter_text():
                        events = proto.feed(chunk)
                        if proto.finished:
                            tail = events  # yielded once the connection is closed
                            break
                        yield from events
            except (httpx.TransportError, Refused) as exc:
                cause = exc
            if proto.finished:
                yield from tail
                proto.raise_error()
                return
            delay = proto.dropped(cause)
            if delay is None:
                return
            if delay:
                time.sleep(delay)

    def read_text(self) -> str:
        """Consume the rest of the stream; the whole text (raises the stream's error, if any)."""
        for _ in self:
            pass
        return self.text

    def close(self) -> None:
        """Stop reading and close the connection (which, with no resume grace, also ends the generation)."""
        if self._gen is not None:
            with suppress(ValueError):  # "generator already executing": closed by its own thread instead
                self._gen.close()

    def cancel(self) -> bool:
        """Stop the generation on the server (``POST /v1/streams/{id}/cancel``) and close the connection.
        True when the server acknowledged it; never raises for an unreachable server or an ended stream."""
        proto = self._proto
        proto.cancelled = True
        acked = False
        try:
            if proto.stream_id is not None and not proto.finished:
                with suppress(httpx.TransportError, NotFound, GenerationLost):
                    self._client.cancel(proto.stream_id)
                    acked = True
        finally:
            self.close()
        return acked

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """A connection pool to one gateway. ``max_retries`` bounds the resumes per drop; the wait before
    the n-th (n ≥ 2) is ``backoff_s * 2**(n-1)``, at most 8 s (the first is immediate)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.25,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._retry = Retry(max_retries, backoff_s)
        self.http = httpx.Client(base_url=self.base_url, headers=_headers(api_key), timeout=_timeout(timeout))

    def stream(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: dict[str, Any] | None = None,
        reasoning_effort: str | None = None,
        resume_grace_s: float | None = DEFAULT_GRACE_S,
    ) -> Stream:
        """Start a generation: a prompt (one user message) or messages in OpenAI's shapes (tool calls, tool
        results, image parts), with the request fields of CONTRACT §3.

        ``resume_grace_s``: how long the server keeps generating after a dropped connection, so that this
        stream resumes where it left off (CONTRACT §5); ``None`` leaves it to the server (cancel at once by
        default). Closing the stream early without ``cancel()`` leaves the generation running for that long."""
        body = chat_body(messages, model=model, max_tokens=max_tokens, temperature=temperature, stop=stop,
                         tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                         response_format=response_format, reasoning_effort=reasoning_effort,
                         resume_grace_s=resume_grace_s)
        return Stream(self, StreamProtocol(self.base_url, body, None, 0, self._retry))

    def resume(self, stream_id: str, *, after: int = 0) -> Stream:
        """Follow an existing stream from the event after ``after``."""
        return Stream(self, StreamProtocol(self.base_url, None, stream_id, after, self._retry))

    def cancel(self, stream_id: str) -> None:
        """``POST /v1/streams/{id}/cancel``; the stream then ends with ``done``, ``finish_reason: cancelled``."""
        try:
            resp = self.http.post(f"/v1/streams/{stream_id}/cancel", timeout=CANCEL_TIMEOUT_S)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.base_url} ({exc})") from exc
        if resp.status_code != 202:
            raise http_error(resp.status_code, resp.headers, resp.content)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- async ----------------------------------------------------------------------------------------------
class AsyncStream(_StreamState):
    """An async iterator over one stream's events. Iterate it once; use ``async with`` to stop early."""

    def __init__(self, client: AsyncClient, proto: StreamProtocol) -> None:
        self._client = client
        self._proto = proto
        self._gen: AsyncGenerator[StreamEvent, None] | None = None

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._gen is None:
            self._gen = self._run()
        return await anext(self._gen)

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        proto = self._proto
        http = self._client.http
        while True:
            method, path, params, content = proto.request()
            tail: list[StreamEvent] = []
            cause: Exception | None = None
            try:
                async with http.stream(method, path, params=params, content=content) as resp:
                    body = await resp.aread() if resp.status_code != 200 else b""
                    proto.accept(resp.status_code, resp.headers, body)
                    async for chunk in resp.aiter_text():
                        events = proto.feed(chunk)
                        if proto.finished:
                            tail = events
                            break
                        for ev in events:
                            yield ev
            except (httpx.TransportError, Refused) as exc:
                cause = exc
            if proto.finished:
                for ev in tail:
                    yield ev
                proto.raise_error()
                return
            delay = proto.dropped(cause)
            if delay is None:
                return
            if delay:
                await _sleep(delay)

    async def read_text(self) -> str:
        """Consume the rest of the stream; the whole text (raises the stream's error, if any)."""
        async for _ in self:
            pass
        return self.text

    async def aclose(self) -> None:
        """Stop reading and close the connection. From another task than the one iterating, the
        connection is left to end by itself (after ``cancel()``, with the ``done`` event)."""
        gen = self._gen
        if gen is not None:
            with suppress(RuntimeError):  # "asynchronous generator is already running" (another task)
                await gen.aclose()

    async def cancel(self) -> bool:
        """Stop the generation on the server and close the connection; see ``Stream.cancel``."""
        proto = self._proto
        proto.cancelled = True
        acked = False
        try:
            if proto.stream_id is not None and not proto.finished:
                with suppress(httpx.TransportError, NotFound, GenerationLost):
                    await self._client.cancel(proto.stream_id)
                    acked = True
        finally:
            await self.aclose()
        return acked

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncClient:
    """The async twin of ``Client``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.25,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._retry = Retry(max_retries, backoff_s)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key), timeout=_timeout(timeout))

    def stream(
        self,
        messages: Messages,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: dict[str, Any] | None = None,
        reasoning_effort: str | None = None,
        resume_grace_s: float | None = DEFAULT_GRACE_S,
    ) -> AsyncStream:
        body = chat_body(messages, model=model, max_tokens=max_tokens, temperature=temperature, stop=stop,
                         tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
                         response_format=response_format, reasoning_effort=reasoning_effort,
                         resume_grace_s=resume_grace_s)
        return AsyncStream(self, StreamProtocol(self.base_url, body, None, 0, self._retry))

    def resume(self, stream_id: str, *, after: int = 0) -> AsyncStream:
        return AsyncStream(self, StreamProtocol(self.base_url, None, stream_id, after, self._retry))

    async def cancel(self, stream_id: str) -> None:
        try:
            resp = await self.http.post(f"/v1/streams/{stream_id}/cancel", timeout=CANCEL_TIMEOUT_S)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.base_url} ({exc})") from exc
        if resp.status_code != 202:
            raise http_error(resp.status_code, resp.headers, resp.content)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
