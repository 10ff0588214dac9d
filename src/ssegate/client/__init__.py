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

import asyncio
import time
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
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
from ..sse import ServerSentEvent, SSEDecoder, split_event_id
from ..upstream.base import Usage

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncStream",
    "Client",
    "Delta",
    "Done",
    "GatewayUnreachable",
    "Start",
    "Stream",
    "StreamEvent",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_GRACE_S = 30.0
"""The resume grace this client asks for: a drop shorter than this resumes the same generation."""


# --- what a stream yields ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    seq: int
    raw: ServerSentEvent = field(repr=False, compare=False)
    """The event as it came off the wire (``raw.id``, ``raw.event``, ``raw.data``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Start(_Event):
    stream_id: str
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta(_Event):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Done(_Event):
    finish_reason: str
    usage: Usage


StreamEvent = Start | Delta | Done


class GatewayUnreachable(GatewayError):
    """The gateway could not be reached, or the connection dropped and every attempt to resume failed."""

    code = "unreachable"
    status = 0
    retryable = True


class _Refused(Exception):
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


def chat_body(
    messages: str | Sequence[Mapping[str, str]],
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    stop: str | Sequence[str] | None,
    resume_grace_s: float | None = None,
) -> bytes:
    """The JSON of ``POST /v1/chat/stream``; a plain string is one user message."""
    if isinstance(messages, str):
        msgs: list[dict[str, str]] = [{"role": "user", "content": messages}]
    else:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    body: dict[str, Any] = {"messages": msgs}
    for key, value in (("model", model), ("max_tokens", max_tokens), ("temperature", temperature),
                       ("resume_grace_s", resume_grace_s)):
        if value is not None:
            body[key] = value
    if stop is not None:
        body["stop"] = stop if isinstance(stop, str) else list(stop)
    return orjson.dumps(body)


# --- the protocol, without I/O ------------------------------------------------------------------------
@dataclass(slots=True)
class _Retry:
    max_retries: int
    backoff_s: float
    max_backoff_s: float = 8.0


class _Protocol:
    """One stream's state: the request to make next, the events seen, and what a drop means."""

    def __init__(self, where: str, body: bytes | None, stream_id: str | None, after: int, retry: _Retry) -> None:
        self.where = where
        self.body = body
        self.stream_id = stream_id
        self.last_seq = after
        self.model: str | None = None
        self.parts: list[str] = []
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
                raise _Refused(err)
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
            if sse.event == "done":
                u = data.get("usage") or {}
                self.usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)),
                                   bool(u.get("estimated", False)))
                self.finish_reason = str(data.get("finish_reason", "stop"))
                self.finished = True
                return Done(seq=seq, raw=sse, finish_reason=self.finish_reason, usage=self.usage)
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
        refused = cause.error if isinstance(cause, _Refused) else None
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


# --- the shared surface of both stream classes ----------------------------------------------------------
class _StreamState:
    _proto: _Protocol

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


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    # the read timeout must outlast the heartbeat interval (15 s by default); a read timeout is a drop
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=min(timeout, 10.0))


CANCEL_TIMEOUT_S = 5.0


# --- sync -----------------------------------------------------------------------------------------------
class Stream(_StreamState):
    """An iterator over one stream's events. Iterate it once."""

    def __init__(self, client: Client, proto: _Protocol) -> None:
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
            except (httpx.TransportError, _Refused) as exc:
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
        self._retry = _Retry(max_retries, backoff_s)
        self.http = httpx.Client(base_url=self.base_url, headers=_headers(api_key), timeout=_timeout(timeout))

    def stream(
        self,
        messages: str | Sequence[Mapping[str, str]],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        resume_grace_s: float | None = DEFAULT_GRACE_S,
    ) -> Stream:
        """Start a generation: a prompt (one user message) or a list of ``{"role", "content"}``.

        ``resume_grace_s``: how long the server keeps generating after a dropped connection, so that this
        stream resumes where it left off (CONTRACT §5); ``None`` leaves it to the server (cancel at once by
        default). Closing the stream early without ``cancel()`` leaves the generation running for that long."""
        body = chat_body(messages, model, max_tokens, temperature, stop, resume_grace_s)
        return Stream(self, _Protocol(self.base_url, body, None, 0, self._retry))

    def resume(self, stream_id: str, *, after: int = 0) -> Stream:
        """Follow an existing stream from the event after ``after``."""
        return Stream(self, _Protocol(self.base_url, None, stream_id, after, self._retry))

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

    def __init__(self, client: AsyncClient, proto: _Protocol) -> None:
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
            except (httpx.TransportError, _Refused) as exc:
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
                await asyncio.sleep(delay)

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
        self._retry = _Retry(max_retries, backoff_s)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key), timeout=_timeout(timeout))

    def stream(
        self,
        messages: str | Sequence[Mapping[str, str]],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        resume_grace_s: float | None = DEFAULT_GRACE_S,
    ) -> AsyncStream:
        body = chat_body(messages, model, max_tokens, temperature, stop, resume_grace_s)
        return AsyncStream(self, _Protocol(self.base_url, body, None, 0, self._retry))

    def resume(self, stream_id: str, *, after: int = 0) -> AsyncStream:
        return AsyncStream(self, _Protocol(self.base_url, None, stream_id, after, self._retry))

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
