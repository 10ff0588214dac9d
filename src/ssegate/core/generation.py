"""The life of one generation: its producer, timeouts, cancel, the assembled answer, the terminal event.

A ``Generation`` is a task that runs one *producer* and appends what it produces to a ``StreamLog``; HTTP
responses follow the log (``http/response.py``), so a generation can outlive a dropped connection (resume,
the stream's grace) and any number of clients can follow it. The producer is the stream's route
(``routing/chain.py``: the model's deployments with retries and fallbacks) or an application's own async iterator
of parts (``Gateway.stream``). Either way the parts arrive through this generation's sink methods (``emit``, ``alive``,
``holding``: the ``upstream.base.Sink`` protocol), one plain call per part, from the upstream connection's read
callback when the provider is remote.

Exactly one terminal entry ends every log:

- the producer finished: ``done`` with its finish reason, usage, every tool call assembled whole, and the
  provider's opaque ``provider_data``;
- it was cancelled (no client left, ``POST .../cancel``): ``done`` with ``finish_reason: "cancelled"`` and the
  usage so far, estimated;
- it failed (an ``UpstreamError``, the first-output or idle timeout, shutdown): ``error`` with the code; an
  exception that is not a ``GatewayError`` is ``internal_error`` with no detail.

Timeouts (CONTRACT §2) cost nothing per token (``Deadline``): until the first output the deadline is
``FIRST_TOKEN_TIMEOUT_S`` after the start; from the first output (text, reasoning or a tool call) it is
``IDLE_TIMEOUT_S`` after the last upstream byte (``alive``) or part. Cancel tears the upstream down at once
through the abort handle the provider holds (it wakes nobody); the task's unwinding, the terminal entry, the log
line and metrics follow when the hub gives the generation its turn (``StreamHub.turn``): at the next pass of the
event loop, or, in a storm of cancels, a few at a time, so that every disconnect closes its upstream as soon as it
is read instead of after the unwinding of every stream cancelled before it.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from ..errors import GatewayError, GenerationLost, NotFound, ShuttingDown, UpstreamProtocolError, UpstreamTimeout
from ..parts import Finish, Part, Reasoning, ToolCallDelta, ToolCallStart, Usage
from ..settings import Settings
from .deadline import Deadline
from .entries import DELTA, DONE, ERROR, REASONING, START, TOOL_ARGS, TOOL_CALL
from .log import MemoryEventLog, StreamLog
from .outcome import Observer, Outcome, Started
from .request import ChatRequest
from .tasks import start as start_task
from .turns import on_loop

__all__ = ["Generation", "Producer", "StreamHub", "estimate_tokens", "new_stream_id"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_running_loop: Final = asyncio.get_running_loop
_b2a_base64: Final = binascii.b2a_base64

logger: Final = logging.getLogger("ssegate.generation")

Producer = Callable[["Generation"], Awaitable[Finish]]
"""Produces a generation's parts into its sink methods and returns the ``Finish``."""


class _RandomBits:
    """128-bit ids cut from 4 KiB of the kernel's random bytes at a time: one ``getrandom`` per 256 streams
    instead of one each (the same source as ``secrets``). A forked child draws its own (``register_at_fork``)."""

    pool: bytes
    at: int

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pool = b""
        self.at = 0

    def take16(self) -> bytes:
        at = self.at
        if at + 16 > len(self.pool):
            self.pool = os.urandom(4096)
            at = 0
        self.at = at + 16
        return self.pool[at:at + 16]


_bits: Final = _RandomBits()
os.register_at_fork(after_in_child=_bits.reset)
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def new_stream_id() -> str:
    """128 random bits, URL-safe (``secrets.token_urlsafe(16)``'s alphabet and length: 22 characters)."""
    return _b2a_base64(_bits.take16(), newline=False).translate(_URLSAFE)[:22].decode()


def estimate_tokens(text: str) -> int:
    """The usage estimate used when the upstream reported none: about four characters a token."""
    return (len(text) + 3) // 4


class Generation:
    __slots__ = (
        "_abort",
        "_calls",
        "_cancel_reason",
        "_clock",
        "_deadline",
        "_deferred",
        "_grace_timer",
        "_idle",
        "_started",
        "_timed_out",
        "commit_deadline",
        "committed",
        "deployment",
        "error",
        "first_output_at",
        "followers",
        "hub",
        "log",
        "loop",
        "model_entry",
        "outputs",
        "producer",
        "request",
        "started_at",
        "task",
        "upstream_attempts",
    )

    def __init__(self, hub: StreamHub, log: StreamLog, request: ChatRequest, producer: Producer) -> None:
        loop = _running_loop()
        s: dict[str, Any] = hub.settings.__dict__  # (a pydantic model's field values: dict lookups, not its hook)
        self.loop = loop
        """The loop it runs in, for whoever serves it there: ``get_running_loop()`` is a system call on Python 3.11
        (``getpid``), asked once here rather than again by the route and the response."""
        self.hub = hub
        self.log = log
        self.request = request
        self.producer = producer
        self.followers = 0
        self.outputs = 0
        """Parts relayed so far: text, reasoning, tool-call starts and argument pieces."""
        self.committed = False
        self.started_at = loop.time()
        commit: float = s["commit_timeout_s"]
        self.commit_deadline = self.started_at + commit
        self.first_output_at = 0.0
        self.upstream_attempts = 0
        self.deployment = ""
        """The label of the upstream being tried (set by the producer)."""
        self.model_entry = ""
        """The name (as written in the routing file) of the model entry being tried (set by the producer)."""
        self.error: GatewayError | None = None
        self._cancel_reason: str | None = None
        self._timed_out = False
        self._started = False
        self._abort: Callable[[], None] | None = None
        self._clock = loop.time
        idle: float = s["idle_timeout_s"]
        self._idle = idle
        self._calls: dict[int, tuple[str, str, list[str]]] = {}
        self._grace_timer: asyncio.TimerHandle | None = None
        self._deferred = False
        self._deadline = Deadline(loop, self._timeout)
        first: float = s["first_token_timeout_s"]
        self._deadline.set(self.started_at + first, self.started_at + idle)
        # (the first output moves the deadline to the idle timeout after it: no earlier than that, so lazily)
        start: dict[str, Any] = {"stream_id": log.stream_id, "model": log.model}
        if request.echo is not None:
            start["echo"] = request.echo
        log.append(START, start)
        self.task = start_task(loop, self._run(), f"ssegate-gen-{log.stream_id}")

    @property
    def stream_id(self) -> str:
        return self.log.stream_id

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    @property
    def timed_out(self) -> bool:
        """The first-output or idle deadline passed (the producer is being cancelled for it)."""
        return self._timed_out

    @property
    def finished(self) -> bool:
        return self.log.finished

    @property
    def grace_s(self) -> float:
        """The resume grace of this stream: what the request asked for (capped), else ``DETACH_GRACE_S``."""
        asked = self.request.resume_grace_s
        s = self.hub.settings
        return s.detach_grace_s if asked is None else min(asked, s.resume_grace_max_s)

    # --- the sink (upstream.base.Sink): called by the producer, often from a connection's callback ---------
    def emit(self, part: Part) -> None:
        """One part of the answer. Dropped once the stream ended (a read that raced the cancel)."""
        log = self.log
        if log.finished:
            return
        kind = type(part)
        if kind is str:
            if not part:
                return
            log.append(DELTA, part)
        elif kind is Reasoning:
            text = cast(Reasoning, part).text  # (typed: read natively, not looked up by name)
            if not text:
                return
            log.append(REASONING, text)
        elif not self._append_tool_part(part, kind):
            return
        n = self.outputs = self.outputs + 1
        now = self._clock()
        if n == 1:
            self.first_output_at = now
        self._deadline.set(now + self._idle)

    def _append_tool_part(self, part: Any, kind: type) -> bool:
        """A tool call's start or a piece of its arguments (anything else is not a part); False for an empty piece.
        (``part`` is of type ``kind``, which the caller took already.)"""
        if kind is ToolCallDelta:
            piece = cast(ToolCallDelta, part)  # (typed: its fields read natively, not looked up by name)
            index, arguments = piece.index, piece.arguments
            call = self._calls.get(index)
            if call is None:
                raise UpstreamProtocolError(f"arguments for tool call {index}, which was never started")
            if not arguments:
                return False
            call[2].append(arguments)
            self.log.append(TOOL_ARGS, {"index": index, "arguments": arguments})
        elif kind is ToolCallStart:
            start = cast(ToolCallStart, part)
            if start.index in self._calls:
                raise UpstreamProtocolError(f"tool call {start.index} was started twice")
            self._calls[start.index] = (start.id, start.name, [])
            self.log.append(TOOL_CALL, {"index": start.index, "id": start.id, "name": start.name})
        else:
            raise TypeError(f"not a part of an answer: {part!r}")
        return True

    def alive(self) -> None:
        """Upstream bytes arrived: after the first output, the idle deadline starts again."""
        if self.outputs:
            self._deadline.set(self._clock() + self._idle)

    def holding(self, abort: Callable[[], None] | None) -> None:
        self._abort = abort

    def begin_read(self) -> None:
        """The events of one upstream read follow (more than one): the followers hear of them together, at
        ``end_read``, so that a client that keeps up gets them in one write."""
        self.log.hold()

    def end_read(self, ending: bool) -> None:
        """The events of that read were all emitted: out they go, or, when the read ended the answer (``ending``),
        with the terminal entry that follows them within a pass or two of the loop, in the same write."""
        self.log.release(not ending)

    # --- control ----------------------------------------------------------------------------------
    def cancel(self, reason: str = "request") -> bool:
        """Stop generating; the log ends with ``done``/``cancelled`` (or ``error`` for ``shutdown``).

        The upstream request the producer holds is torn down here, at once; its task, asleep on that request
        (an abort wakes nobody), is cancelled when the hub gives it its turn (``StreamHub.turn``: right away,
        unless a storm of cancels is being unwound). A generation without an upstream request in flight (an
        application's source, a retry's pause) has nothing to tear down: its task is cancelled now."""
        if self.log.finished or self._cancel_reason is not None:
            return False
        self._cancel_reason = reason
        abort = self._abort
        if abort is not None:
            abort()
            if reason != "shutdown":  # at shutdown every stream ends now: nothing else needs the loop
                self.hub.turn(self._stop)
                return True
        self._stop()
        return True

    def _stop(self) -> None:
        if self._started:
            self.task.cancel()
        # else: a task cancelled before its first step would never run ``_run``'s handlers, and the stream would
        # never end; ``_run`` sees the reason instead, before it makes any upstream request

    def attach(self) -> None:
        self.followers += 1
        self._deferred = False
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def detach(self) -> None:
        """A follower left. With no follower left, cancel now or after the stream's grace. Before the commit the
        client never learned the stream's id, so nobody can resume it: no grace then."""
        self.followers -= 1
        if self.followers > 0 or self.log.finished:
            return
        grace = self.grace_s if self.committed else 0.0
        if grace <= 0:
            self._unattended()
        elif self._grace_timer is None:
            self._grace_timer = self.loop.call_later(grace, self._grace_expired)

    def _grace_expired(self) -> None:
        self._grace_timer = None
        self._deferred = False
        if self.followers <= 0:
            self._unattended()

    def _unattended(self) -> None:
        """No follower here: cancel, unless the hub's ``check_elsewhere`` (Redis mode) asks other replicas."""
        check = self.hub.check_elsewhere
        if check is None:
            self.cancel("disconnect")
        else:
            check(self)

    def defer_cancel(self, delay: float) -> None:
        """Followers on other replicas still count for ``delay`` s: decide again then."""
        if self.followers > 0 or self.log.finished:
            return
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self._deferred = True
        self._grace_timer = self.loop.call_later(delay, self._grace_expired)

    def recheck_detached(self) -> None:
        """A follower on another replica left: if this generation only waits for such followers, decide now."""
        if self.followers > 0 or self.log.finished or not self._deferred:
            return
        self._deferred = False
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self._unattended()

    def _timeout(self) -> None:
        if self.log.finished or self._cancel_reason is not None:
            return  # a cancelled generation waiting for its turn is not timing out
        self._timed_out = True
        abort = self._abort
        if abort is not None:
            abort()
        if self._started:
            self.task.cancel()

    # --- the task ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        self._started = True
        finish: Finish | None = None
        error: GatewayError | None = None
        try:
            if self._cancel_reason is not None or self._timed_out:  # stopped before this task first ran
                raise asyncio.CancelledError
            finish = await self.producer(self)
        except asyncio.CancelledError:
            if self._cancel_reason is None and not self._timed_out:
                self._end(ERROR, ShuttingDown("the generation was stopped", retry_after=1.0).body())
                raise
            error = self._stop_error()
        except GatewayError as exc:
            # after a cancel, a failure is the cancel's doing (a plugin's abort that woke its own task)
            error = exc if self._cancel_reason is None else self._stop_error()
        except Exception:  # a bug (ours or an application's source), not an upstream condition: end cleanly
            logger.exception("generation %s failed", self.log.stream_id)
            error = GatewayError("internal error")
        finally:
            self._abort = None
            self._deadline.close()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
        if error is not None:
            self._end(ERROR, error.body(), error)
        elif finish is not None:
            self._end(DONE, self._done(finish.reason, finish.usage, finish.provider_data))
        else:
            self._end(DONE, self._done("cancelled", None, None))

    def _stop_error(self) -> GatewayError | None:
        """How a stopped generation ends: an error (timeout, shutdown, lease lost), or None for a cancel."""
        if self._timed_out:
            what = "idle after its last output" if self.outputs else "waiting for its first output"
            return UpstreamTimeout(f"the upstream timed out {what}")
        if self._cancel_reason == "shutdown":
            return ShuttingDown("the server is shutting down", retry_after=1.0)
        if self._cancel_reason == "lost":  # Redis mode: another replica already ended it for its followers
            return GenerationLost("this replica lost its lease on the stream; it was ended elsewhere")
        return None

    def _done(self, reason: str, usage: Usage | None, provider_data: dict[str, Any] | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"finish_reason": reason, "usage": self._usage(usage).as_dict()}
        if self._calls:
            payload["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": "".join(pieces)}}
                for _, (call_id, name, pieces) in sorted(self._calls.items())
            ]
        if provider_data:
            payload["provider_data"] = provider_data
        return payload

    def _end(self, kind: int, payload: dict[str, Any], error: GatewayError | None = None) -> None:
        self.error = error
        if not self.log.finished:
            self.log.append(kind, payload)
        self.hub._finished(self, error)

    def _usage(self, reported: Usage | None) -> Usage:
        if reported is not None:
            return reported
        prompt = estimate_tokens(self.request.prompt_text) + 4 * len(self.request.messages)
        return Usage(prompt, self.outputs, estimated=True)

    def outcome(self) -> Outcome:
        """This generation as its observers see it, once ended."""
        terminal = self.log.terminal()
        error = self.error
        if error is not None:
            cause = f"error:{error.code}"
        elif terminal is not None and terminal[0] == ERROR:
            cause = f"error:{terminal[1].get('error', {}).get('code', 'internal_error')}"
        elif terminal is not None and terminal[1].get("finish_reason") == "cancelled":
            cause = f"cancelled:{self._cancel_reason or 'request'}"
        else:
            cause = "done"
        return Outcome(
            stream_id=self.stream_id, owner=self.log.owner, model=self.log.model, deployment=self.deployment,
            model_entry=self.model_entry, cause=cause, error=error.message if error is not None else None,
            outputs=self.outputs,
            ttft_s=self.first_output_at - self.started_at if self.outputs else None,
            duration_s=self._clock() - self.started_at, upstream_attempts=self.upstream_attempts,
            max_tokens=self.request.max_tokens,
        )


class StreamHub:
    """The generations of this process: start, find, cancel, and end them all at shutdown."""

    def __init__(self, settings: Settings, eventlog: MemoryEventLog) -> None:
        self.settings = settings
        self.eventlog = eventlog
        self.live: dict[str, Generation] = {}
        self.observers: list[Observer] = []
        self.check_elsewhere: Callable[[Generation], None] | None = None
        """Redis mode: decides for a generation left without followers here (``cluster/replicas.py``)."""
        self.shutting_down = False

    def start(self, request: ChatRequest, owner: str, producer: Producer) -> Generation:
        stream_id = new_stream_id()
        log = self.eventlog.create(stream_id, owner, request.model)
        log.history = request.history
        gen = Generation(self, log, request, producer)
        log.grace_s = gen.grace_s
        self.live[stream_id] = gen
        started = Started(stream_id, owner, request)
        for observer in self.observers:
            observer.started(started)
        return gen

    def get_log(self, stream_id: str, owner: str) -> StreamLog:
        """The log of a stream this ``owner`` started; ``NotFound`` for unknown, expired or others'."""
        log = self.eventlog.get(stream_id)
        if log is None or not secrets.compare_digest(log.owner, owner):
            raise NotFound("unknown or expired stream")
        return log

    def cancel(self, stream_id: str, owner: str) -> bool:
        self.get_log(stream_id, owner)
        gen = self.live.get(stream_id)
        return gen.cancel("request") if gen is not None else False

    def turn(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` (a cancelled generation's: cancel its task) in the next pass of the event loop, or, in a
        storm of cancels, in turns after those already waiting (``core/turns.py``). The upstream of a cancelled
        generation is closed before this (``Generation.cancel``); what waits is the unwinding of its task, its
        terminal entry, log line and metrics."""
        on_loop("stop", _running_loop()).add(stop)

    def discard(self, gen: Generation) -> None:
        """Forget a stream that failed before it was committed (its client got a plain HTTP error)."""
        self.eventlog.remove(gen.stream_id)

    def _finished(self, gen: Generation, error: GatewayError | None) -> None:
        self.live.pop(gen.stream_id, None)
        self.eventlog.finished(gen.log)
        if self.observers:
            outcome = gen.outcome()
            for observer in self.observers:
                observer.ended(outcome)

    async def shutdown(self, grace_s: float) -> None:
        """Let running generations finish for ``grace_s``, then end the rest with ``shutting_down``."""
        self.shutting_down = True
        gens = list(self.live.values())
        if gens and grace_s > 0:
            await asyncio.wait([g.task for g in gens], timeout=grace_s)
        for g in list(self.live.values()):
            g.cancel("shutdown")
        rest = [g.task for g in self.live.values()]
        if rest:
            await asyncio.wait(rest, timeout=2.0)
