"""The ASGI response that follows a stream's log: commit rule, heartbeats, send timeout, disconnect.

Starlette's ``StreamingResponse`` never closes a body iterator whose client vanished; this response owns
the lifecycle instead. Per connection it runs one small task that watches ``http.disconnect`` and one
``Deadline`` (the next heartbeat, or the end of a send in progress: a send that starts moves it earlier, so a
client that stops reading is dropped ``SEND_TIMEOUT_S`` after its send began, whatever ``HEARTBEAT_S`` is). The
main loop sends whatever the log holds beyond the client's cursor in one write (so a client that fell behind
gets its backlog coalesced), then waits on the log. On disconnect it detaches from the generation at once,
which cancels it unless the stream has a resume grace, and so closes the upstream.

The hot path skips even that loop: while the loop waits, the log calls the response back at each append (once for
the events of one upstream read: ``StreamLog.hold``), and a client that keeps up (nothing queued for it) gets the
new events written to its socket right there, one write per upstream read and no task switch. Anything else (a
backlog, the terminal event, a heartbeat, a disconnect) wakes the loop, which owns the slow paths and the send
timeout; the events of a read that ended the answer wait for the terminal event and go out with it. The commit is
pushed too where nothing stands between the response and the server (``DirectRoutes``): the append of the first
output schedules a callback that writes the status, headers and first events (``_commit_now``), ahead of the task it
wakes.

Where the server's own ``send`` is in the scope (``RAW_KEY``: ssegate's own app, ``standalone.SSEGateApp``,
while its middleware leaves body messages alone), body messages go straight to it, skipping the framework's
per-message wrappers, and the push path writes to the transport (``uvicorn_glue.direct_transport``); the
response start still goes through the wrappers (CORS headers), unless the response was given the server's own
``send`` (``DirectRoutes``, no CORS): then the start goes out with the first body in one write
(``uvicorn_glue.write_start``). Anywhere else (an application's own app, its
middleware, another server) every message goes through the ``send`` the response is given. Each response says
which it took, at no cost on the push path: ``fast_path`` (the push path had the client's transport, set once
per stream) and ``body_sends`` (body messages handed to ``send``, counted by the loop: with the fast path only
the first batch, backlogs, heartbeats and the terminal event; without it, every event).

The start names who answers (``routing_headers``): ``X-Ssegate-Model``, the routing file's name of the model
entry, and ``X-Ssegate-Deployment``, the deployment's label (never a key), as the generation has them when the
status goes out. The commit is normally the first output, and retries and fallbacks stop there, so these are the
model and deployment that answer. A stream committed by ``COMMIT_TIMEOUT_S`` before any output names the one
being tried then: if that attempt fails, a retry or fallback may still answer, and headers already sent cannot
change (the stream's log line and metrics name the one that did).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..core.deadline import Deadline
from ..core.entries import ERROR, TERMINAL
from ..core.tasks import current as current_task
from ..sse import PING
from .uvicorn_glue import (
    abort_connection,
    chunk,
    direct_transport,
    drop_if_unread,
    fixed_headers,
    send_start,
    set_disconnect_hook,
    start_head,
    write_start,
)

if TYPE_CHECKING:
    from ..core.generation import Generation
    from ..core.log import StreamLog
    from ..errors import GatewayError

__all__ = ["EventStreamResponse", "Follows", "StreamEncoder", "following", "json_error_response",
           "routing_headers"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_running_loop: Final = asyncio.get_running_loop

RAW_KEY: Final = "ssegate.server"


class Follows(Protocol):
    """What a response attaches to while it follows a log: a ``Generation``, or a stream of another replica."""

    def attach(self) -> None: ...

    def detach(self) -> None: ...


class StreamEncoder(Protocol):
    """Turns log entries into bytes for one wire format (native SSE, OpenAI chunks)."""

    def head(self) -> bytes: ...

    def encode(self, seq: int, kinds: list[int], payloads: list[Any]) -> bytes:
        """The events of the entries from ``seq`` on (their kinds and payloads, ``StreamLog``'s)."""
        ...

    def error_response(self, error: GatewayError | None, payload: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        """Status, JSON body and headers for a failure before the commit."""
        ...


STREAM_HEADERS: Final = fixed_headers([
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
])


ROUTE_HEADERS_KEPT: Final = 1024
"""Route header pairs kept (``_route_headers``): a routing file's models and deployments, reloads included."""
_route_pairs: Final[dict[tuple[str, str], list[tuple[bytes, bytes]]]] = {}


def _route_headers(model_entry: str, deployment: str) -> list[tuple[bytes, bytes]]:
    """``x-ssegate-model`` and ``x-ssegate-deployment`` of a stream's head: the same pairs for every stream of a
    deployment, registered with ``fixed_headers`` (their lines checked once, not at each stream's head); past
    ``ROUTE_HEADERS_KEPT`` of them, made for the stream and checked with it."""
    key = (model_entry, deployment)
    pairs = _route_pairs.get(key)
    if pairs is None:
        pairs = [(b"x-ssegate-model", model_entry.encode("latin-1", "replace")),
                 (b"x-ssegate-deployment", deployment.encode("latin-1", "replace"))]
        if len(_route_pairs) < ROUTE_HEADERS_KEPT:
            _route_pairs[key] = fixed_headers(pairs)
    return pairs


def routing_headers(gen: Generation) -> dict[str, str]:
    """``X-Ssegate-Model`` and ``X-Ssegate-Deployment`` of a generation (none for an application's own source)."""
    if not gen.deployment:
        return {}
    return {"X-Ssegate-Model": gen.model_entry, "X-Ssegate-Deployment": gen.deployment}


async def json_error_response(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """A whole response in one write: JSON unless ``headers`` name another ``content-type``."""
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if not any(name == b"content-type" for name, _ in raw):
        raw.insert(0, (b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class EventStreamResponse(Response):
    """Follow ``log`` from seq ``after`` (exclusive). With ``gen`` given and ``commit`` true, apply the
    commit rule first: hold the status until a text delta, a terminal entry, or the commit deadline."""

    def __init__(
        self,
        log: StreamLog,
        encoder: StreamEncoder,
        *,
        gen: Generation | None = None,
        after: int = 0,
        commit: bool = False,
        heartbeat_s: float = 15.0,
        send_timeout_s: float = 30.0,
        on_discard: Any = None,
        follows: Follows | None = None,
    ) -> None:
        # a Response only so that the framework passes it through; it never uses Response's body
        self.status_code = 200
        self.background = None
        self.log = log
        self.encoder = encoder
        self.gen = gen
        self.follows: Follows | None = gen if follows is None else follows
        self.after = after
        self.commit = commit
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.on_discard = on_discard
        self.extra_headers: list[tuple[bytes, bytes]] = []
        """Headers added to the ``200`` (a protocol's own, e.g. the AI SDK's ``x-vercel-ai-ui-message-stream``)."""
        self.disconnected = False
        self.dropped = False
        self._fut: asyncio.Future[None] | None = None
        self._in_send = False
        self._send_started = 0.0
        self._last_sent = 0.0
        self._ping_due = False
        self._timer: Deadline | None = None
        """Commit, heartbeat and send timeout in one deadline: while the status waits for the first output, the
        commit deadline; then the next heartbeat, or the end of a send in progress (one timer a stream: moving
        the deadline later, from the commit to the first heartbeat, is lazy)."""
        self._committing = False
        self._send: Send | None = None
        self._start: list[tuple[bytes, bytes]] | None = None
        """The headers of a start not sent yet: it goes out with the first body (``uvicorn_glue.write_start``)."""
        self.start_pushed = False
        """The status, headers and first events went out from a callback of the append that committed the stream
        (``_commit_now``), not from the task that waited for it."""
        self._commit_due = False
        self._detached = False
        self._cursor = after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._direct: asyncio.WriteTransport | None = None
        """The client's transport once the push path is known to be safe (see ``uvicorn_glue.direct_transport``)."""
        self._task: asyncio.Task[Any] | None = None
        self._send_cancelled = False
        """A send that blocked past the send timeout was cancelled (no transport to abort: a wrapped ``send``)."""
        self.fast_path = False
        """The push path had the client's transport: an event that found the client keeping up was written to it
        directly (``ssegate serve``'s app, nothing in between)."""
        self.body_sends = 0
        """Body messages this response handed to ``send`` (not counted: what the push path wrote directly)."""

    # --- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get(RAW_KEY)
        raw_receive, raw_send = raw if raw is not None else (receive, send)
        self._send = raw_send
        gen = self.gen
        # the loop of the generation this request started (asked once: a system call on Python 3.11), else this one's
        loop = gen.loop if gen is not None and self.commit else _running_loop()
        if self.follows is not None:
            self.follows.attach()
        hooked = set_disconnect_hook(raw_send, self._on_disconnect)
        # ssegate serve's protocol tells the response of a disconnect itself (set_disconnect_hook); elsewhere a small
        # task waits for ``http.disconnect`` on ``receive``
        watcher = None if hooked else loop.create_task(self._watch(raw_receive))
        self._task = current_task(loop)
        self._loop = loop
        direct = send is raw_send  # nothing between us and the server
        self._timer = timer = Deadline(loop, self._tick)
        try:
            if self.commit and self.gen is not None:
                if not await self._await_commit(loop, direct, timer):
                    return
                failure = None if self.start_pushed else self._precommit_failure()
                if failure is not None:
                    status, body, headers = failure
                    await json_error_response(send, status, body, headers)
                    return
            if not self.start_pushed:  # (else it went out from the append that committed the stream: _commit_now)
                self._last_sent = loop.time()
            timer.set(self._last_sent + self.heartbeat_s)
            if not self.start_pushed:
                if direct and self.log.last_seq > self._cursor:
                    self._start = self._start_headers()  # events to send now: the start goes out with them
                else:
                    await self._timed_send(send, {"type": "http.response.start", "status": 200,
                                                  "headers": self._start_headers()})
            await self._pump(loop, raw_send)
        except asyncio.CancelledError:
            if not self._send_cancelled or self._task is None:
                raise
            self._task.uncancel()  # our own cancel of a blocked send: the response ends, the server closes it
        finally:
            if watcher is not None:
                watcher.cancel()
            if hooked:
                set_disconnect_hook(raw_send, None)
            if self._timer is not None:
                self._timer.close()
                self._timer = None
            self._detach()
            if not self.disconnected and not self.dropped:
                drop_if_unread(raw_send, self.send_timeout_s)

    def _start_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [*STREAM_HEADERS, (b"x-stream-id", self.log.stream_id.encode()), *self.extra_headers]
        gen = self.gen
        if gen is not None and gen.deployment:
            headers += _route_headers(gen.model_entry, gen.deployment)
        return headers

    def _detach(self) -> None:
        if not self._detached:
            self._detached = True
            if self.follows is not None:
                self.follows.detach()

    async def _watch(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self._on_disconnect()
                return

    def _on_disconnect(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            # detach right away: the upstream must close even if the pump is stuck in a send
            self._detach()
            gen = self.gen
            if gen is None or self.follows is not gen or gen.cancel_reason is None or gen.finished:
                self._wake()
            # else its generation was cancelled: the terminal entry wakes the pump, when the hub gives the
            # generation its turn (a storm of disconnects closes every upstream before it unwinds the rest)

    def _wake(self) -> None:
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    # --- the commit rule ----------------------------------------------------------------------------
    async def _await_commit(self, loop: asyncio.AbstractEventLoop, direct: bool, timer: Deadline) -> bool:
        gen = self.gen
        assert gen is not None
        log = self.log
        if direct:
            log.listen(self._on_commit_append)
        self._committing = True
        timer.set(gen.commit_deadline)  # (``_tick`` wakes the wait)
        try:
            while log.last_seq < 2 and not self.disconnected:
                if loop.time() >= gen.commit_deadline:
                    break
                fut = self._fut = log.waiter(loop)
                try:
                    await fut
                finally:
                    log.discard_waiter(fut)
        finally:
            self._committing = False
            if direct:
                log.unlisten(self._on_commit_append)
        self._fut = None
        if self.disconnected:
            return False
        gen.committed = True
        return True

    def _on_commit_append(self) -> None:
        """The log's listener while the status waits for the first output, where nothing stands between this
        response and the server: the append that commits the stream schedules ``_commit_now``, which runs once the
        read that brought it is handled (what else it brought goes out in the same write) and before the waiting
        task, woken by the same append: the task's resumption (its coroutines, back up from the wait) is not on
        the way to the first token (a single stream's time to first token: ~70 µs of the first event's ~160 when
        the process was idle, measured with stamps)."""
        if not self._commit_due and self.log.last_seq >= 2:
            self._commit_due = True
            assert self._loop is not None
            self._loop.call_soon(self._commit_now)

    def _commit_now(self) -> None:
        """The status, headers and first events, written here; the task finds the start sent. A terminal entry
        (the task writes it with the start and the end of the body in one write, or answers an error with its
        status), a client gone, or a server that would not write at once (``uvicorn_glue.start_head``) leave the
        start to the task."""
        log = self.log
        kinds = log.kinds
        start = self._cursor + 1 - log.first_seq
        if (self.start_pushed or self.disconnected or self.dropped or log.last_seq < 2
                or not 0 <= start < len(kinds) or kinds[-1] in TERMINAL):
            return
        gen, send = self.gen, self._send
        assert gen is not None and send is not None and self._loop is not None
        head = start_head(send, 200, self._start_headers())
        if head is None:
            return
        body = self.encoder.encode(self._cursor + 1, kinds[start:], log.payloads[start:])
        prefix = self.encoder.head()
        self._cursor = log.first_seq + len(kinds) - 1
        self.start_pushed = True
        self.body_sends += 1
        gen.committed = True
        self._last_sent = self._loop.time()
        send_start(head, prefix + body if prefix else body, True)

    def _precommit_failure(self) -> tuple[int, bytes, dict[str, str]] | None:
        log = self.log
        if log.last_seq != 2 or log.first_seq != 1:
            return None
        if log.kinds[1] != ERROR:
            return None
        gen = self.gen
        assert gen is not None
        if self.on_discard is not None:
            self.on_discard(gen)
        return self.encoder.error_response(gen.error, log.payloads[1])

    # --- the hot loop -------------------------------------------------------------------------------
    async def _pump(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        log = self.log
        log.listen(self._on_append)
        try:
            await self._pump_loop(loop, send)
        finally:
            log.unlisten(self._on_append)
            self._direct = None

    async def _pump_loop(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        log = self.log
        encode = self.encoder.encode
        # None: nothing left to send before the events (or the start went out with them, head included)
        head: bytes | None = None if self.start_pushed else self.encoder.head() or None
        push_checked = False
        finished_before = log.finished  # (a reader that asked from the end of a finished stream gets no events)
        while True:
            cursor = self._cursor
            kinds = log.kinds
            first = log.first_seq
            last = first + len(kinds) - 1
            if cursor < last:
                start = cursor + 1 - first
                if start < 0:
                    # the client fell so far behind that its events were dropped: end it clearly
                    from ..errors import NotFound

                    err = NotFound("events were dropped before this client read them; resume is not possible")
                    body = encode(last + 1, [ERROR], [err.body()])
                    await self._timed_send(send, {"type": "http.response.body", "body": body, "more_body": False})
                    return
                batch = kinds[start:]
                body = encode(cursor + 1, batch, log.payloads[start:])
                self._cursor = last
                if head:
                    body = head + body
                    head = None
                # the hot path: the send is timed inline (no wrapper coroutine), and the terminal event
                # goes out with the end of the body in one write
                final = batch[-1] in TERMINAL
                self._in_send = True
                self._send_started = now = loop.time()
                self._send_deadline(now)
                self.body_sends += 1
                try:
                    if self._start is None:
                        await send({"type": "http.response.body", "body": body, "more_body": not final})
                    else:
                        await self._start_with(send, body, not final)
                finally:
                    self._in_send = False
                    self._last_sent = now
                if final:
                    log.terminal_delivered = True
                    self._fut = None
                    return
                if self.disconnected or self.dropped:
                    return
                continue
            if self.disconnected or self.dropped:
                return
            if self._ping_due:
                self._ping_due = False
                await self._timed_send(send, {"type": "http.response.body", "body": head + PING if head else PING,
                                              "more_body": True})
                head = None
                continue
            if log.finished:
                # the stream ended while this response followed it, at a seq the client has already: a copy of a
                # stream lost on another replica ends where Redis stopped, and the client may have read further
                # from that replica. The terminal event still goes out, numbered after the client's cursor.
                terminal = log.terminal()
                if finished_before or terminal is None or terminal[0] not in TERMINAL:  # (a cut-off copy: none)
                    break
                body = encode(cursor + 1, [terminal[0]], [terminal[1]])
                await self._timed_send(send, {"type": "http.response.body", "body": head + body if head else body,
                                              "more_body": False})
                log.terminal_delivered = True
                self._fut = None
                return
            if head is None and not push_checked and self._start is None:
                push_checked = True
                self._direct = direct_transport(send)
                self.fast_path = self._direct is not None
            fut = self._fut = loop.create_future()
            await fut
        self._fut = None
        await self._timed_send(send, {"type": "http.response.body", "body": b"", "more_body": False})

    def _on_append(self) -> None:
        """The log's listener: while the pump waits, write new events to a client that keeps up, else wake it."""
        fut = self._fut
        if fut is None or fut.done():
            return  # the pump is busy; it looks at the log again before it waits
        transport = self._direct
        if transport is not None and not self._ping_due and not self.disconnected and not self.dropped:
            log = self.log
            kinds = log.kinds
            cursor = self._cursor
            start = cursor + 1 - log.first_seq
            if (0 <= start < len(kinds) and kinds[-1] not in TERMINAL
                    and not transport.get_write_buffer_size() and not transport.is_closing()):
                body = self.encoder.encode(cursor + 1, kinds[start:], log.payloads[start:])
                self._cursor = log.first_seq + len(kinds) - 1
                if body:  # an encoder may have nothing to say for an entry; an empty chunk would end the body
                    transport.write(chunk(body))
                    assert self._loop is not None
                    self._last_sent = self._loop.time()
                return
        fut.set_result(None)

    async def _start_with(self, send: Send, body: bytes, more_body: bool) -> None:
        """The start that waited for the first body, and that body: in one write where the server allows it."""
        headers, self._start = self._start, None
        assert headers is not None
        if not write_start(send, 200, headers, body, more_body):
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def _timed_send(self, send: Send, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.body_sends += 1
        self._in_send = True
        assert self._loop is not None
        self._send_started = t = self._loop.time()
        self._send_deadline(t)
        try:
            if self._start is not None and message["type"] == "http.response.body":
                await self._start_with(send, message["body"], message["more_body"])
            else:
                await send(message)
        finally:
            self._in_send = False
            self._last_sent = t

    def _send_deadline(self, started: float) -> None:
        """A send began: it must end within ``send_timeout_s`` (earlier than the next heartbeat: re-armed)."""
        timer = self._timer
        if timer is not None:
            end = started + self.send_timeout_s
            if timer.at is None or end < timer.at:
                timer.set(end)

    def _tick(self) -> None:
        """The deadline came: the commit's (the wait for the first output ends); a send that took too long drops
        the client; else a heartbeat is due (or later)."""
        timer = self._timer
        assert timer is not None
        if self._committing:
            self._wake()
            return
        now = _running_loop().time()
        if self._in_send:
            if now - self._send_started >= self.send_timeout_s:
                self._drop()
                return
            timer.set(self._send_started + self.send_timeout_s)
        elif now - self._last_sent >= self.heartbeat_s:
            self._ping_due = True
            self._wake()
            timer.set(now + self.heartbeat_s)
        else:
            timer.set(self._last_sent + self.heartbeat_s)

    def _drop(self) -> None:
        """A client that accepted no bytes for ``send_timeout_s``: cancel its generation, cut it off."""
        self.dropped = True
        self._detach()
        if not abort_connection(self._send) and self._in_send and self._task is not None:
            # a send wrapped by an application's middleware: no transport to abort, so stop waiting on it
            self._send_cancelled = True
            self._task.cancel()
        self._wake()


def following(gen: Generation, encoder: StreamEncoder, heartbeat_s: float, send_timeout_s: float,
              on_discard: Any) -> EventStreamResponse:
    """The response that follows ``gen`` from its start, the commit rule first (``Gateway.follow``'s). Here, and
    with its arguments in order, so that the interpreted caller's are not parsed as keywords (a keyword call of a
    compiled class from the interpreter takes its slow path: ~5k instructions a stream)."""
    return EventStreamResponse(gen.log, encoder, gen=gen, commit=True, heartbeat_s=heartbeat_s,
                               send_timeout_s=send_timeout_s, on_discard=on_discard)


def error_json(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)
