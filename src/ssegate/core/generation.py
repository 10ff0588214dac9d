"""The life of one generation: retries before the first token, timeouts, cancel, the terminal event.

A ``Generation`` is a task that reads one provider stream and appends entries to a ``StreamLog``; HTTP
responses follow the log (``http/response.py``), so a generation can outlive a dropped connection (resume,
``DETACH_GRACE_S``) and any number of clients can follow it. Exactly one terminal entry ends every log:

- the provider finished: ``done`` with its finish reason and usage;
- it was cancelled (client gone, ``POST .../cancel``): ``done`` with ``finish_reason: "cancelled"`` and the
  usage relayed so far, estimated;
- it failed (``UpstreamError``, first-token or idle timeout, shutdown): ``error`` with the code.

Whoever opens an upstream closes it: the provider's generator is closed in this task's ``finally``.
Timeouts cost nothing per token: one timer per generation re-arms itself only when it fires.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import GatewayError, GenerationLost, NotFound, ShuttingDown, UpstreamError, UpstreamTimeout
from ..obs.metrics import Metrics
from ..settings import Settings
from ..upstream.base import ChatRequest, Finish, Provider, Usage
from .entries import DELTA, DONE, ERROR, START
from .log import MemoryEventLog, StreamLog

__all__ = ["Generation", "StreamHub", "estimate_tokens", "new_stream_id"]

logger = logging.getLogger("ssegate.generation")


def new_stream_id() -> str:
    """128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def estimate_tokens(text: str) -> int:
    """The usage estimate used when the upstream reported none: about four characters a token."""
    return (len(text) + 3) // 4


class Generation:
    __slots__ = (
        "_cancel_reason",
        "_clock",
        "_deadline_timer",
        "_deferred",
        "_grace_timer",
        "_last_delta",
        "_started",
        "_timed_out",
        "commit_deadline",
        "committed",
        "deltas",
        "error",
        "first_token_at",
        "followers",
        "hub",
        "log",
        "providers",
        "request",
        "started_at",
        "task",
        "upstream_attempts",
    )

    def __init__(self, hub: StreamHub, log: StreamLog, providers: Sequence[Provider], request: ChatRequest) -> None:
        loop = asyncio.get_running_loop()
        self.hub = hub
        self.log = log
        self.providers = providers
        self.request = request
        self.followers = 0
        self.deltas = 0
        self.committed = False
        self.started_at = loop.time()
        self.commit_deadline = self.started_at + hub.settings.commit_timeout_s
        self.first_token_at = 0.0
        self.upstream_attempts = 0
        self.error: GatewayError | None = None
        self._cancel_reason: str | None = None
        self._timed_out = False
        self._started = False
        self._last_delta = self.started_at
        self._clock = loop.time
        self._grace_timer: asyncio.TimerHandle | None = None
        self._deferred = False
        self._deadline_timer = loop.call_at(self.started_at + hub.settings.first_token_timeout_s, self._check_deadline)
        log.append(START, {"stream_id": log.stream_id, "model": log.model})
        self.task = loop.create_task(self._run(), name=f"ssegate-gen-{log.stream_id}")

    @property
    def stream_id(self) -> str:
        return self.log.stream_id

    @property
    def grace_s(self) -> float:
        """The resume grace of this stream: what the request asked for (capped), else ``DETACH_GRACE_S``."""
        asked = self.request.resume_grace_s
        s = self.hub.settings
        return s.detach_grace_s if asked is None else min(asked, s.resume_grace_max_s)

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    @property
    def finished(self) -> bool:
        return self.log.finished

    # --- control ----------------------------------------------------------------------------------
    def cancel(self, reason: str = "request") -> bool:
        """Stop generating; the log ends with ``done``/``cancelled`` (or ``error`` for ``shutdown``)."""
        if self.log.finished or self._cancel_reason is not None:
            return False
        self._cancel_reason = reason
        abort = self.request.abort
        if abort is not None:
            abort()
        if self._started:
            self.task.cancel()
        # else: a task cancelled before its first step would never run ``_run``'s handlers, and the stream would
        # never end; ``_run`` sees the reason instead, before it makes any upstream request
        return True

    def attach(self) -> None:
        self.followers += 1
        self._deferred = False
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def detach(self) -> None:
        """A follower left. With no follower left, cancel now or after ``DETACH_GRACE_S``."""
        self.followers -= 1
        if self.followers > 0 or self.log.finished:
            return
        grace = self.grace_s
        if grace <= 0:
            self._unattended()
        elif self._grace_timer is None:
            self._grace_timer = asyncio.get_running_loop().call_later(grace, self._grace_expired)

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
        self._grace_timer = asyncio.get_running_loop().call_later(delay, self._grace_expired)

    def recheck_detached(self) -> None:
        """A follower on another replica left: if this generation only waits for such followers, decide now."""
        if self.followers > 0 or self.log.finished or not self._deferred:
            return
        self._deferred = False
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        self._unattended()

    def _check_deadline(self) -> None:
        if self.log.finished:
            return
        s = self.hub.settings
        loop = asyncio.get_running_loop()
        deadline = self._last_delta + s.idle_timeout_s if self.deltas else self.started_at + s.first_token_timeout_s
        if loop.time() >= deadline:
            self._timed_out = True
            if self._started:
                self.task.cancel()
        else:
            self._deadline_timer = loop.call_at(deadline, self._check_deadline)

    # --- the task ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        self._started = True
        log = self.log
        finish: Finish | None = None
        error: GatewayError | None = None
        try:
            if self._cancel_reason is not None or self._timed_out:  # stopped before this task first ran
                raise asyncio.CancelledError
            finish = await self._relay()
        except asyncio.CancelledError:
            if self._timed_out:
                what = "idle between tokens" if self.deltas else "waiting for the first token"
                error = UpstreamTimeout(f"upstream timed out {what}")
            elif self._cancel_reason == "shutdown":
                error = ShuttingDown("the server is shutting down", retry_after=1.0)
            elif self._cancel_reason == "lost":  # Redis mode: another replica already ended it for its followers
                error = GenerationLost("this replica lost its lease on the stream; it was ended elsewhere")
            elif self._cancel_reason is None:
                self._end(ERROR, ShuttingDown("the generation was stopped", retry_after=1.0).body())
                raise
        except GatewayError as exc:
            error = exc
        except Exception as exc:  # a bug, not an upstream condition: still end the stream cleanly
            logger.exception("generation %s failed", log.stream_id)
            error = UpstreamError(f"internal error: {type(exc).__name__}")
        finally:
            self.request.sink = None  # the request referred back to this generation: no cycle left for the GC
            self._deadline_timer.cancel()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
        if error is not None:
            self._end(ERROR, error.body(), error)
        elif finish is not None:
            self._end(DONE, {"finish_reason": finish.reason, "usage": self._usage(finish.usage).as_dict()})
        else:
            self._end(DONE, {"finish_reason": "cancelled", "usage": self._usage(None).as_dict()})

    def _end(self, kind: int, payload: dict[str, Any], error: GatewayError | None = None) -> None:
        self.error = error
        if not self.log.finished:
            self.log.append(kind, payload)
        self.hub._finished(self, error)

    def _usage(self, reported: Usage | None) -> Usage:
        if reported is not None:
            return reported
        prompt = estimate_tokens(self.request.prompt_text) + 4 * len(self.request.messages)
        return Usage(prompt, self.deltas, estimated=True)

    def _on_delta(self, text: str) -> None:
        """One text delta: yielded by the provider, or pushed by it (``ChatRequest.sink``) from its connection's
        callback. After the stream ended (a read that raced the cancel) it is dropped."""
        log = self.log
        if log.finished:
            return
        log.append(DELTA, text)
        self.deltas += 1
        now = self._clock()
        if self.deltas == 1:
            self.first_token_at = now
        self._last_delta = now

    async def _relay(self) -> Finish:
        """Try each provider (the upstream, then fallbacks) with retries, until one streams."""
        s = self.hub.settings
        last_error: UpstreamError | None = None
        self.request.sink = self._on_delta
        for provider in self.providers:
            for attempt in range(s.retry_attempts):
                self.upstream_attempts += 1
                agen = provider.stream(self.request)
                try:
                    async for ev in agen:
                        if type(ev) is str:
                            self._on_delta(ev)
                        elif isinstance(ev, Finish):
                            return ev
                    raise UpstreamError("upstream ended without a finish")
                except UpstreamError as exc:
                    if self.deltas or not exc.retryable:
                        raise  # never once text went out: a retry would send it twice
                    last_error = exc
                finally:
                    await agen.aclose()  # the failed attempt's connection is closed before the backoff
                delay = self._backoff(attempt, last_error)
                if delay is None:
                    break  # on to the next fallback, if any
                logger.info("retrying %s in %.2fs after: %s", provider.label, delay, last_error.message)
                await asyncio.sleep(delay)
        assert last_error is not None
        raise last_error

    def _backoff(self, attempt: int, exc: UpstreamError) -> float | None:
        """Delay before the next try on this upstream, or None to move on to the next fallback (or give up).

        Exponential from ``retry_backoff_s``, jittered 0.5x-1.5x, at least the upstream's ``Retry-After``.
        Before the commit a retry must fit before the commit deadline, so that an upstream failing at once on
        every try still gives the client a real HTTP status; after it, before the first-token deadline."""
        s = self.hub.settings
        if attempt + 1 >= s.retry_attempts:
            return None
        delay = s.retry_backoff_s * (2.0**attempt) * (0.5 + random.random())
        if exc.retry_after:
            delay = max(delay, float(exc.retry_after))
        now = asyncio.get_running_loop().time()
        if not self.committed and now + delay > self.commit_deadline:
            return None  # keep the final failure a real HTTP status
        if now + delay > self.started_at + s.first_token_timeout_s:
            return None
        return delay


class StreamHub:
    """The generations of this process: start, find, cancel, and end them all at shutdown."""

    def __init__(
        self,
        settings: Settings,
        providers: Sequence[Provider],
        eventlog: MemoryEventLog,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.eventlog = eventlog
        self.metrics = metrics
        self.live: dict[str, Generation] = {}
        self.on_finished: list[Callable[[Generation], None]] = []
        self.check_elsewhere: Callable[[Generation], None] | None = None
        """Redis mode: decides for a generation left without followers here (``replicas.py``)."""
        self.shutting_down = False

    def start(self, request: ChatRequest, owner: str) -> Generation:
        stream_id = new_stream_id()
        log = self.eventlog.create(stream_id, owner, request.model)
        gen = Generation(self, log, self.providers, request)
        log.grace_s = gen.grace_s
        self.live[stream_id] = gen
        self.metrics.stream_started()
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

    def discard(self, gen: Generation) -> None:
        """Forget a stream that failed before it was committed (its client got a plain HTTP error)."""
        self.eventlog.remove(gen.stream_id)

    def _finished(self, gen: Generation, error: GatewayError | None) -> None:
        self.live.pop(gen.stream_id, None)
        self.eventlog.finished(gen.log)
        self.metrics.stream_ended(gen, error)
        for cb in self.on_finished:
            cb(gen)

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
