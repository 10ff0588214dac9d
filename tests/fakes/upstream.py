"""Scriptable fake LLM upstreams (OpenAI Chat Completions or Anthropic Messages) on real loopback sockets.

A :class:`FakeUpstream` runs its own event loop in a background thread, so sync tests (the sync ``openai``
SDK, ``httpx``) and async tests on any loop can use it. Each test registers a :class:`Script` and gets a
unique prompt key back; a request plays the script whose key the latest user message that holds one carries
(so a follow-up turn whose last user message is only a tool result still finds it), and every request is
recorded as a :class:`ConnRecord` (what was sent, when bytes went out, when and by whom the connection
closed). Requests that match no script play :data:`DEFAULT_DELTAS`. Scripts, parts and request checks are
described in ``script.py``, ``parts.py`` and ``conversation.py``.

    with FakeUpstream() as up:
        prompt = up.script(Script(deltas=["Hel", "lo"], delay=0.01, fault=Fault.RESET, fault_after=1))
        ...  # point the gateway at up.url and send `prompt`
        rec = up.wait_closed(prompt, timeout=5)

Timestamps are ``time.monotonic()`` floats, comparable with the test's own clock.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import orjson

from tests.fakes import conversation
from tests.fakes.anthropic import AnthropicDialect
from tests.fakes.conversation import Rejection
from tests.fakes.http import HttpConnection, HttpServer, Request
from tests.fakes.openai import OpenAIDialect
from tests.fakes.parts import Event, Part, Text, events, resolve_ids
from tests.fakes.script import DEFAULT_DELTAS, HUGE_TEXT, ConnRecord, Fault, Script

__all__ = ["DEFAULT_DELTAS", "HUGE_TEXT", "ConnRecord", "FakeUpstream", "Fault", "Script"]

SLOW_DRIP_S = 5.0
_KEY = re.compile(r"scn-[0-9a-f]{16}")

# Faults that interrupt the stream: when one falls after the last event, the usual pause comes before it.
_STOPPING = {Fault.RESET, Fault.STALL, Fault.EARLY_EOF, Fault.MALFORMED_JSON, Fault.INVALID_UTF8,
             Fault.ANTHROPIC_OVERLOADED}


class Dialect(Protocol):
    endpoint: str
    content_type: str
    request_id_header: str
    issued: list[tuple[str, str, str]]

    def opening(self, role_chunk: bool, prompt_tokens: int, first: Event | None = None) -> list[bytes]: ...
    def event(self, ev: Event) -> bytes: ...
    def ping(self) -> bytes: ...
    def finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> list[bytes]: ...
    def done(self) -> bytes: ...
    def malformed(self) -> bytes: ...
    def invalid_utf8(self) -> bytes: ...
    def overloaded(self) -> bytes: ...
    def message(self, parts: list[Part], finish_reason: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]: ...
    def error(self, status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]: ...
    def models(self) -> dict[str, Any]: ...


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

    # Records (and the signatures handed out) are updated before the bytes go out, so that a client that has
    # read them can rely on them.
    async def event(self, data: bytes, *, delta: bool = False) -> None:
        self.up._remember(self.dialect.issued)
        if delta:
            self.up._update(self.rec, deltas_sent=self.rec.deltas_sent + 1)
        await self.conn.send_chunk(data)

    async def pause(self, seconds: float, pings_every: float) -> None:
        """Wait ``seconds``, sending a keep-alive every ``pings_every`` seconds meanwhile when that is > 0."""
        if pings_every <= 0:
            await _pause(seconds)
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while end - loop.time() > pings_every:
            await asyncio.sleep(pings_every)
            await self.event(self.dialect.ping())
        await _pause(end - loop.time())

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
        self._issued: set[tuple[str, str, str]] = set()  # thinking signatures and redacted data handed out
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
        """Forget every script, record and issued signature."""
        with self._cond:
            self._scripts.clear()
            self._records.clear()
            self._issued.clear()

    def issued_signatures(self) -> set[str]:
        """Every thinking ``signature`` and ``redacted_thinking`` ``data`` the fake has sent (Anthropic)."""
        with self._cond:
            return {value for _, value, _ in self._issued}

    def _remember(self, issued: list[tuple[str, str, str]]) -> None:
        if issued:
            with self._cond:
                self._issued.update(issued)

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

    def _record(self, conn: HttpConnection, request: Request, body: dict[str, Any]
                ) -> tuple[ConnRecord, Script, Script, int]:
        """Record the request; its record, its script, the turn that answers it and that turn's attempt."""
        with self._cond:
            keys = (k for text in conversation.user_texts(body) for k in _KEY.findall(text))
            key = next((k for k in keys if k in self._scripts), None)
            script = self._scripts[key] if key is not None else self.default
            turn = script.turn_for(body)
            mine = [r for r in self._records if r.prompt_key == key]
            rec = ConnRecord(key, body, dict(request.headers), conn.opened_at, time.monotonic(),
                             attempt=1 + len(mine), method=request.method, path=request.path,
                             request_body=request.body, conn_id=conn.id, turn=turn)
            self._records.append(rec)
            self._cond.notify_all()

        def closed(c: HttpConnection) -> None:
            self._update(rec, closed_at=c.closed_at, closed_by=c.closed_by)

        conn.on_closed.append(closed)
        played = script.turns[turn] if script.turns else script
        return rec, script, played, 1 + sum(r.turn == turn for r in mine)

    def _check(self, body: dict[str, Any], scripts: list[Script]) -> Rejection | None:
        """The first refusal that the scripts' request checks make, if any."""
        for script in scripts:
            if script.require_tool_call_ids and (found := conversation.openai_tool_call_ids(body)) is not None:
                return found
            if script.require_signatures:
                with self._cond:
                    issued = set(self._issued)
                if (found := conversation.anthropic_signatures(body, issued)) is not None:
                    return found
            verdict = script.validate(body) if script.validate is not None else None
            if verdict is not None:
                return Rejection(verdict) if isinstance(verdict, str) else verdict
        return None

    # -- serving (in the fake's loop) -------------------------------------------------------------------
    def _dialect(self, body: dict[str, Any], script: Script) -> Dialect:
        if self.kind == "anthropic":
            return AnthropicDialect(body, script.usage)
        return OpenAIDialect(body, script.usage, reasoning_fields=script.reasoning_fields(),
                             tool_index=script.tool_index(), repeat_finish=script.repeat_finish,
                             obfuscation=script.obfuscation)

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
        rec, outer, script, attempt = self._record(conn, request, body)
        reply = _Reply(self, conn, rec, self._dialect(body, script))
        if not isinstance(parsed, dict):
            await reply.json(400, reply.dialect.error(400, "the body is not a JSON object"), {})
        elif attempt <= script.fail_attempts:
            await reply.json(script.fail_status, reply.dialect.error(script.fail_status), script.headers)
        elif (refusal := self._check(body, [outer, script] if outer is not script else [script])) is not None:
            await reply.json(400, reply.dialect.error(400, refusal.message, refusal.param), script.headers)
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
        evs = events(resolve_ids(script.play_parts(), self.kind), self.kind)
        at = min(script.fault_after, len(evs))
        if fault is Fault.HUGE_CHUNK:
            evs.insert(at, Text(HUGE_TEXT))
        for frame in dialect.opening(script.role_chunk, script.prompt_tokens, evs[0] if evs else None):
            await reply.event(frame)
        ttft, delay = script.ttft, script.delay
        for i in range(len(evs) + 1):
            hit = fault if i == at else None
            if hit is Fault.SLOW_DRIP:
                ttft = delay = SLOW_DRIP_S
            if i < len(evs) or hit in _STOPPING:
                await reply.pause(ttft if i == 0 else delay, script.pings_every)
            if hit is not None and not await self._fault(reply, hit, early=i < len(evs)):
                return
            if i < len(evs):
                await reply.event(dialect.event(evs[i]), delta=True)
        completion = len(evs) if script.completion_tokens is None else script.completion_tokens
        for frame in dialect.finish(script.finish(), script.prompt_tokens, completion):
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
        parts = resolve_ids(script.play_parts(), self.kind)
        if fault is Fault.HUGE_CHUNK:
            parts.insert(min(script.fault_after, len(parts)), Text(HUGE_TEXT))
        sent = len(events(parts, self.kind))
        completion = sent if script.completion_tokens is None else script.completion_tokens
        obj = reply.dialect.message(parts, script.finish(), script.prompt_tokens, completion)
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
            bad = orjson.dumps(reply.dialect.message([Text("@@BAD@@")], script.finish(), script.prompt_tokens,
                                                     completion))
            await reply.json(200, None, script.headers, body=bad.replace(b"@@BAD@@", b"bad\xff\xfebytes"))
        elif fault is Fault.ANTHROPIC_OVERLOADED:
            status = 529 if self.kind == "anthropic" else 503
            await reply.json(status, reply.dialect.error(status, "Overloaded"), script.headers)
        else:
            self._remember(reply.dialect.issued)
            self._update(reply.rec, deltas_sent=sent, finished=True)
            await reply.json(200, obj, script.headers, body=payload)
