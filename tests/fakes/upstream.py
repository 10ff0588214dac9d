"""Scriptable fake LLM upstreams (OpenAI Chat Completions or Anthropic Messages) on real loopback sockets.

A :class:`FakeUpstream` runs its own event loop in a background thread, so sync tests (the sync ``openai``
SDK, ``httpx``) and async tests on any loop can use it. Each test registers a :class:`Script` and gets a
unique prompt key back; a request whose last user message contains the key plays that script, and every
request is recorded as a :class:`ConnRecord` (what was sent, when bytes went out, when and by whom the
connection closed). Requests that match no script play :data:`DEFAULT_DELTAS`.

    with FakeUpstream() as up:
        prompt = up.script(Script(deltas=["Hel", "lo"], delay=0.01, fault=Fault.RESET, fault_after=1))
        ...  # point the gateway at up.url and send `prompt`
        rec = up.wait_closed(prompt, timeout=5)

Timestamps are ``time.monotonic()`` floats, comparable with the test's own clock.
"""

from __future__ import annotations

import asyncio
import enum
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import orjson

from tests.fakes.anthropic import AnthropicDialect
from tests.fakes.http import ClosedBy, HttpConnection, HttpServer, Request
from tests.fakes.openai import OpenAIDialect

__all__ = ["DEFAULT_DELTAS", "HUGE_TEXT", "ConnRecord", "FakeUpstream", "Fault", "Script"]

DEFAULT_DELTAS = ["The ", "quick ", "brown ", "fox ", "jumps."]
HUGE_TEXT = "0123456789abcdef" * 65536  # 1 MiB, the delta that Fault.HUGE_CHUNK inserts
SLOW_DRIP_S = 5.0
_KEY = re.compile(r"scn-[0-9a-f]{16}")


class Fault(enum.Enum):
    """What goes wrong, after ``Script.fault_after`` deltas (clamped to the number of deltas)."""

    RESET = "reset"  # TCP RST mid-stream
    STALL = "stall"  # stop sending; keep the connection open until the client closes it
    MALFORMED_JSON = "malformed_json"  # a `data: {not json` event, then the rest of the script
    INVALID_UTF8 = "invalid_utf8"  # an event with \xff\xfe inside the JSON string, then the rest
    NO_DONE = "no_done"  # end the body cleanly without [DONE] / message_stop (before the finish if early)
    EARLY_EOF = "early_eof"  # close the connection (FIN) mid-body: chunked encoding not terminated
    DOUBLE_DONE = "double_done"  # [DONE] / message_stop twice (fault_after ignored)
    HEADERS_THEN_SILENCE = "headers_then_silence"  # 200 headers, then nothing, connection open (fault_after ignored)
    HUGE_CHUNK = "huge_chunk"  # one extra delta of HUGE_TEXT (1 MiB) inserted at fault_after
    SLOW_DRIP = "slow_drip"  # from fault_after on, one delta every 5 s
    ANTHROPIC_OVERLOADED = "anthropic_overloaded"  # a mid-stream error event, then the body ends cleanly


# Faults that interrupt the stream: when one falls after the last delta, the usual pause comes before it.
_STOPPING = {Fault.RESET, Fault.STALL, Fault.EARLY_EOF, Fault.MALFORMED_JSON, Fault.INVALID_UTF8,
             Fault.ANTHROPIC_OVERLOADED}


@dataclass
class Script:
    """What the fake answers to a request carrying this script's key."""

    deltas: list[str] = field(default_factory=lambda: list(DEFAULT_DELTAS))
    ttft: float = 0.0  # seconds before the first delta (after the headers and the role chunk)
    delay: float = 0.0  # seconds between deltas
    role_chunk: bool = True  # OpenAI: a role-only chunk first, as real servers send
    usage: bool | None = None  # OpenAI: None = a usage chunk only when stream_options.include_usage asks
    prompt_tokens: int = 7
    completion_tokens: int | None = None  # None = the number of deltas sent
    finish_reason: str = "stop"  # Anthropic: stop → end_turn, length → max_tokens
    status: int = 200  # non-200: an error answer (after ttft) instead of a stream
    error_body: dict[str, Any] | None = None  # None = the provider's error shape for the status
    headers: dict[str, str] = field(default_factory=dict)  # added to every answer, e.g. {"Retry-After": "1"}
    fail_attempts: int = 0  # the first N attempts answer fail_status at once
    fail_status: int = 503
    fault: Fault | None = None
    fault_after: int = 0


@dataclass
class ConnRecord:
    """One request (attempt) for a script and the connection that served it."""

    prompt_key: str | None  # None: matched no script (played the default one)
    request_json: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    opened_at: float
    request_at: float
    first_byte_at: float | None = None
    closed_at: float | None = None
    closed_by: ClosedBy | None = None
    deltas_sent: int = 0
    finished: bool = False
    attempt: int = 1
    method: str = "POST"
    path: str = ""
    request_body: bytes = b""
    status: int | None = None  # the status the fake answered
    conn_id: int = 0


class Dialect(Protocol):
    endpoint: str
    content_type: str
    request_id_header: str

    def opening(self, role_chunk: bool, prompt_tokens: int) -> list[bytes]: ...
    def delta(self, text: str) -> bytes: ...
    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]: ...
    def done(self) -> bytes: ...
    def malformed(self) -> bytes: ...
    def invalid_utf8(self) -> bytes: ...
    def overloaded(self) -> bytes: ...
    def message(self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]: ...
    def error(self, status: int, message: str | None = None) -> dict[str, Any]: ...
    def models(self) -> dict[str, Any]: ...


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list (OpenAI parts, Anthropic blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = users[-1] if users else messages[-1]
    return _text_of(last.get("content")) if isinstance(last, dict) else ""


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)  # the script's pacing


class _Reply:
    """Writes one answer on a connection and keeps its ConnRecord up to date."""

    def __init__(self, up: FakeUpstream, conn: HttpConnection, rec: ConnRecord, dialect: Dialect) -> None:
        self.up, self.conn, self.rec, self.dialect = up, conn, rec, dialect

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {self.dialect.request_id_header: "req_" + uuid.uuid4().hex[:16], **extra}

    def head(self, status: int, headers: dict[str, str]) -> None:
        self.conn.write_head(status, self._headers(headers))
        self.up._update(self.rec, status=status, first_byte_at=time.monotonic())

    async def json(self, status: int, obj: Any, headers: dict[str, str], body: bytes | None = None) -> None:
        self.up._update(self.rec, status=status, first_byte_at=time.monotonic())
        payload = orjson.dumps(obj) if body is None else body
        await self.conn.respond(status, self._headers({"content-type": "application/json", **headers}), payload)

    # Records are updated before the bytes go out, so that a client that has read them can rely on them.
    async def event(self, data: bytes, *, delta: bool = False) -> None:
        if delta:
            self.up._update(self.rec, deltas_sent=self.rec.deltas_sent + 1)
        await self.conn.send_chunk(data)

    async def end(self, *, finished: bool = True) -> None:
        self.up._update(self.rec, finished=finished)
        await self.conn.end_chunks()


class FakeUpstream:
    """A fake OpenAI-compatible (``kind="openai"``) or Anthropic (``kind="anthropic"``) server on 127.0.0.1."""

    def __init__(self, kind: Literal["openai", "anthropic"] = "openai", *, default: Script | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.kind = kind
        self.default = default or Script()
        self.host, self.port = host, port
        self.errors: list[BaseException] = []  # bugs in the fake itself (also printed to stderr)
        self._scripts: dict[str, Script] = {}
        self._records: list[ConnRecord] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: HttpServer | None = None

    # -- life -------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (the Anthropic SDK's base URL)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: OpenAI's base URL; Anthropic's endpoint is ``{url}/messages``."""
        return self.base_url + "/v1"

    def start(self) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, ctx: self._report(ctx.get("exception") or RuntimeError(ctx)))
        server = HttpServer(self._handle, self._report)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start(self.host, self.port))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(server.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=f"fake-{self.kind}-upstream", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread, self._server, self.port = loop, thread, server, server.port
        return self

    def stop(self) -> None:
        """Stop listening, abort every open connection (``closed_by="server"``) and end the thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _report(self, exc: BaseException) -> None:
        self.errors.append(exc)
        traceback.print_exception(exc, file=sys.stderr)

    # -- scripts and records ----------------------------------------------------------------------------
    def script(self, script: Script) -> str:
        """Register ``script``; returns the key (``scn-<hex>``) to put in the prompt."""
        key = "scn-" + uuid.uuid4().hex[:16]
        with self._cond:
            self._scripts[key] = script
        return key

    def records(self, prompt: str | None = None) -> list[ConnRecord]:
        """Every attempt for ``prompt`` (all requests when None), oldest first. Live objects: fields update."""
        with self._cond:
            return [r for r in self._records if prompt is None or r.prompt_key == prompt]

    def reset(self) -> None:
        """Forget every script and record."""
        with self._cond:
            self._scripts.clear()
            self._records.clear()

    def open_connections(self) -> int:
        """TCP connections to the fake open right now (neither side has closed them)."""
        return len(self._server.connections) if self._server is not None else 0

    def _wait(self, prompt: str, timeout: float, what: str, ready: Callable[[list[ConnRecord]], ConnRecord | None]
              ) -> ConnRecord:
        found: list[ConnRecord] = []

        def check() -> bool:
            rec = ready([r for r in self._records if r.prompt_key == prompt])
            if rec is not None:
                found.append(rec)
            return rec is not None

        with self._cond:
            if self._cond.wait_for(check, timeout):
                return found[0]
            seen = [(r.attempt, r.status, r.deltas_sent, r.closed_by) for r in self._records if r.prompt_key == prompt]
        raise TimeoutError(f"fake upstream: no {what} for {prompt!r} within {timeout}s; "
                           f"attempts (attempt, status, deltas_sent, closed_by): {seen}")

    def wait_request(self, prompt: str, timeout: float = 5.0, *, attempt: int = 1) -> ConnRecord:
        """Block until attempt ``attempt`` (default the first) for ``prompt`` arrived; its record."""
        return self._wait(prompt, timeout, f"request (attempt {attempt})",
                          lambda recs: next((r for r in recs if r.attempt == attempt), None))

    def wait_closed(self, prompt: str, timeout: float = 5.0, *, attempt: int | None = None) -> ConnRecord:
        """Block until the connection that served ``prompt`` closed; its record.

        ``attempt=None``: until at least one request came and every connection that served one is closed,
        then the last attempt's record. Note that a finished response on a keep-alive connection stays
        open until the client closes or reuses-and-closes the connection.
        """
        def ready(recs: list[ConnRecord]) -> ConnRecord | None:
            if attempt is not None:
                return next((r for r in recs if r.attempt == attempt and r.closed_at is not None), None)
            return recs[-1] if recs and all(r.closed_at is not None for r in recs) else None

        return self._wait(prompt, timeout, "closed connection", ready)

    async def await_request(self, prompt: str, timeout: float = 5.0, *, attempt: int = 1) -> ConnRecord:
        return await asyncio.to_thread(self.wait_request, prompt, timeout, attempt=attempt)

    async def await_closed(self, prompt: str, timeout: float = 5.0, *, attempt: int | None = None) -> ConnRecord:
        return await asyncio.to_thread(self.wait_closed, prompt, timeout, attempt=attempt)

    def _update(self, rec: ConnRecord, **changes: Any) -> None:
        with self._cond:
            for name, value in changes.items():
                if name == "first_byte_at" and rec.first_byte_at is not None:
                    continue
                setattr(rec, name, value)
            self._cond.notify_all()

    def _record(self, conn: HttpConnection, request: Request, body: dict[str, Any]) -> tuple[ConnRecord, Script]:
        text = _last_user_text(body)
        with self._cond:
            key = next((k for k in _KEY.findall(text) if k in self._scripts), None)
            script = self._scripts[key] if key is not None else self.default
            attempt = 1 + sum(r.prompt_key == key for r in self._records)
            rec = ConnRecord(key, body, dict(request.headers), conn.opened_at, time.monotonic(), attempt=attempt,
                             method=request.method, path=request.path, request_body=request.body, conn_id=conn.id)
            self._records.append(rec)
            self._cond.notify_all()

        def closed(c: HttpConnection) -> None:
            self._update(rec, closed_at=c.closed_at, closed_by=c.closed_by)

        conn.on_closed.append(closed)
        return rec, script

    # -- serving (in the fake's loop) -------------------------------------------------------------------
    def _dialect(self, body: dict[str, Any], script: Script) -> Dialect:
        return AnthropicDialect(body, script.usage) if self.kind == "anthropic" else OpenAIDialect(body, script.usage)

    async def _handle(self, request: Request, conn: HttpConnection) -> None:
        dialect = self._dialect({}, self.default)
        if request.method == "GET" and request.path.endswith("/models"):
            await conn.respond(200, {"content-type": "application/json"}, orjson.dumps(dialect.models()))
        elif request.method == "POST" and request.path.endswith(dialect.endpoint):
            await self._chat(request, conn)
        else:
            body = orjson.dumps(dialect.error(404, f"no route {request.method} {request.path}"))
            await conn.respond(404, {"content-type": "application/json"}, body)

    async def _chat(self, request: Request, conn: HttpConnection) -> None:
        try:
            parsed = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else {}
        rec, script = self._record(conn, request, body)
        reply = _Reply(self, conn, rec, self._dialect(body, script))
        if not isinstance(parsed, dict):
            await reply.json(400, reply.dialect.error(400, "the body is not a JSON object"), {})
        elif rec.attempt <= script.fail_attempts:
            await reply.json(script.fail_status, reply.dialect.error(script.fail_status), script.headers)
        elif script.status != 200:
            await _pause(script.ttft)
            await reply.json(script.status, script.error_body or reply.dialect.error(script.status), script.headers)
        elif body.get("stream") is True:
            await self._stream(reply, script)
        else:
            await self._complete(reply, script)

    async def _stream(self, reply: _Reply, script: Script) -> None:
        dialect, fault = reply.dialect, script.fault
        reply.head(200, {"content-type": dialect.content_type, "cache-control": "no-cache",
                         "transfer-encoding": "chunked", **script.headers})
        if fault is Fault.HEADERS_THEN_SILENCE:
            await reply.conn.wait_closed()
            return
        for frame in dialect.opening(script.role_chunk, script.prompt_tokens):
            await reply.event(frame)
        deltas = list(script.deltas)
        at = min(script.fault_after, len(deltas))
        if fault is Fault.HUGE_CHUNK:
            deltas.insert(at, HUGE_TEXT)
        ttft, delay = script.ttft, script.delay
        for i in range(len(deltas) + 1):
            hit = fault if i == at else None
            if hit is Fault.SLOW_DRIP:
                ttft = delay = SLOW_DRIP_S
            if i < len(deltas) or hit in _STOPPING:
                await _pause(ttft if i == 0 else delay)
            if hit is not None and not await self._fault(reply, hit, early=i < len(deltas)):
                return
            if i < len(deltas):
                await reply.event(dialect.delta(deltas[i]), delta=True)
        completion = len(deltas) if script.completion_tokens is None else script.completion_tokens
        for frame in dialect.finish(script.finish_reason, script.prompt_tokens, completion):
            await reply.event(frame)
        if fault is not Fault.NO_DONE:
            await reply.event(dialect.done())
        if fault is Fault.DOUBLE_DONE:
            await reply.event(dialect.done())
        await reply.end()

    async def _fault(self, reply: _Reply, fault: Fault, *, early: bool) -> bool:
        """Play ``fault``; False when the response is over."""
        conn = reply.conn
        if fault is Fault.RESET:
            conn.abort(rst=True)
            return False
        if fault is Fault.EARLY_EOF:
            conn.close()
            return False
        if fault is Fault.STALL:
            await conn.wait_closed()
            return False
        if fault is Fault.NO_DONE and early:
            await reply.end(finished=False)
            return False
        if fault is Fault.ANTHROPIC_OVERLOADED:
            await reply.event(reply.dialect.overloaded())
            await reply.end(finished=False)
            return False
        if fault is Fault.MALFORMED_JSON:
            await reply.event(reply.dialect.malformed())
        elif fault is Fault.INVALID_UTF8:
            await reply.event(reply.dialect.invalid_utf8())
        return True

    async def _complete(self, reply: _Reply, script: Script) -> None:
        """A non-streaming answer: one chat.completion (OpenAI) or message (Anthropic) object after ttft."""
        await _pause(script.ttft)
        fault, conn = script.fault, reply.conn
        deltas = list(script.deltas)
        if fault is Fault.HUGE_CHUNK:
            deltas.insert(min(script.fault_after, len(deltas)), HUGE_TEXT)
        completion = len(deltas) if script.completion_tokens is None else script.completion_tokens
        obj = reply.dialect.message("".join(deltas), script.finish_reason, script.prompt_tokens, completion)
        payload = orjson.dumps(obj)
        if fault is Fault.RESET:
            conn.abort(rst=True)
        elif fault is Fault.STALL:
            await conn.wait_closed()
        elif fault in (Fault.HEADERS_THEN_SILENCE, Fault.EARLY_EOF):
            reply.head(200, {"content-type": "application/json", "content-length": str(len(payload)),
                             **script.headers})
            if fault is Fault.EARLY_EOF:
                conn.write(payload[: len(payload) // 2])
                conn.close()
            else:
                await conn.wait_closed()
        elif fault is Fault.MALFORMED_JSON:
            await reply.json(200, None, script.headers, body=b"{not json")
        elif fault is Fault.INVALID_UTF8:
            bad = orjson.dumps(reply.dialect.message("@@BAD@@", script.finish_reason, script.prompt_tokens, completion))
            await reply.json(200, None, script.headers, body=bad.replace(b"@@BAD@@", b"bad\xff\xfebytes"))
        elif fault is Fault.ANTHROPIC_OVERLOADED:
            status = 529 if self.kind == "anthropic" else 503
            await reply.json(status, reply.dialect.error(status, "Overloaded"), script.headers)
        else:
            self._update(reply.rec, deltas_sent=len(deltas), finished=True)
            await reply.json(200, obj, script.headers, body=payload)
