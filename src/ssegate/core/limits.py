"""Admission control: the global cap on concurrent streams, and per-key limits.

``Limits.admit(owner)`` is asked before a generation starts (``http/starts.admit``) and raises:

- ``Overloaded`` (503, ``Retry-After``) when this process already runs ``MAX_STREAMS`` generations;
- ``RateLimited`` (429, ``Retry-After``) when the key already runs ``MAX_STREAMS_PER_KEY`` generations, or
  when it started ``REQUESTS_PER_MINUTE`` generations in the last minute.

The minute is a token bucket per key (``REQUESTS_PER_MINUTE`` tokens, refilled continuously), so a key may burst
up to its whole minute's allowance and then goes on at the steady rate; ``Retry-After`` says when the next
token is there. Only admitted requests take a token. A generation holds its key's concurrency slot from
its start until its end (it is an observer of the ``StreamHub``, ``core/outcome.py``), so a stream counts
until its terminal event is written, whoever ends it.

"Key" is the caller's identity (``auth.identity``): a key fingerprint, or ``anonymous`` when no keys are
configured (then all clients share one allowance). Limits are per process: with N replicas behind a load
balancer, a key gets up to N times them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from ..errors import Overloaded, RateLimited
from ..settings import Settings
from .outcome import Outcome, Started

__all__ = ["Limits", "TokenBucket"]

CONCURRENCY_RETRY_AFTER_S: Final = 1.0
"""What ``Retry-After`` says when a cap on concurrent streams is reached (nobody knows when one ends)."""


class TokenBucket:
    """``capacity`` tokens, refilled at ``capacity`` per ``period_s``."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: int, period_s: float, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period_s
        self.tokens = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is there (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


class Limits:
    def __init__(self, settings: Settings, on_refused: Callable[[str], None] = lambda code: None) -> None:
        self.max_streams = settings.max_streams
        self.per_key = settings.max_streams_per_key
        self.rpm = settings.requests_per_minute
        self.on_refused = on_refused
        """Told the code (``overloaded``, ``rate_limited``) of each refusal (the metrics count them)."""
        self.active: dict[str, int] = {}
        """Generations running now, by owner (owners with none are removed)."""
        self.total = 0
        self._buckets: dict[str, TokenBucket] = {}
        self._now = time.monotonic

    def admit(self, owner: str) -> None:
        """Raise if a new generation of ``owner`` must be refused now; else count the request."""
        if self.total >= self.max_streams:
            self._refused("overloaded")
            raise Overloaded(
                f"the gateway runs its maximum of {self.max_streams} concurrent streams; retry shortly",
                retry_after=CONCURRENCY_RETRY_AFTER_S,
            )
        if self.per_key and self.active.get(owner, 0) >= self.per_key:
            self._refused("rate_limited")
            raise RateLimited(
                f"this key already runs its maximum of {self.per_key} concurrent streams",
                retry_after=CONCURRENCY_RETRY_AFTER_S,
            )
        if self.rpm:
            now = self._now()
            bucket = self._buckets.get(owner)
            if bucket is None:
                self._prune(now)
                bucket = self._buckets[owner] = TokenBucket(self.rpm, 60.0, now)
            wait = bucket.wait_time(now)
            if wait > 0:
                self._refused("rate_limited")
                raise RateLimited(
                    f"this key made its {self.rpm} requests of the minute", retry_after=max(1.0, math.ceil(wait))
                )
            bucket.take(now)

    # --- core.outcome.Observer: a stream holds its key's slot from its start to its terminal entry ----------
    def started(self, started: Started) -> None:
        owner = started.owner
        self.active[owner] = self.active.get(owner, 0) + 1
        self.total += 1

    def ended(self, outcome: Outcome) -> None:
        owner = outcome.owner
        n = self.active.get(owner, 0) - 1
        if n > 0:
            self.active[owner] = n
        else:
            self.active.pop(owner, None)
        self.total = max(0, self.total - 1)

    def _refused(self, code: str) -> None:
        self.on_refused(code)

    def _prune(self, now: float) -> None:
        """Forget buckets that refilled completely (they behave exactly like new ones); bounds the dict."""
        if len(self._buckets) >= 1024:
            for owner in [o for o, b in self._buckets.items() if b.full(now)]:
                del self._buckets[owner]
