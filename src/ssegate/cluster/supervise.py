"""Supervision of Redis mode's background loops: a loop that fails is logged, restarted and reported.

Redis mode runs a few loops for the life of the process: the writer (``RedisEventLog._write_loop``), the lease
(``RedisEventLog._renew_loop``), the control listener (``Replicas._listen``) and, while Redis is unreachable, the
link's probe (``RedisLink._probe_loop``). Each handles what it expects itself (Redis unreachable, a command
refused). Anything else, a bug or a Redis reply it did not expect, would end its task silently and leave the
process looking healthy while no stream is mirrored any more, or no cancel is heard. So every such loop runs
under ``Supervisor.spawn``, the one place that decides what happens then:

- The exception is logged with its traceback, and the loop is started again after a backoff:
  ``BACKOFF_INITIAL_S``, doubling up to ``BACKOFF_MAX_S`` (or the loop's own lower cap: the lease must be renewed
  within its lifetime), and back to ``BACKOFF_INITIAL_S`` once the loop had run ``HEALTHY_AFTER_S`` before it
  failed again.
- While it waits to be restarted, the loop is *down*: ``Supervisor.down`` names it and what it failed with.
  ``Replicas`` turns that into readiness (``/readyz`` answers 503) and, when a new stream needs the loop (the
  writer, the lease), into 503 ``overloaded`` for new streams, as during a Redis outage.
- Returning ends the loop for good (the probe does, once Redis answers); cancelling it stops it (``stop``, at
  shutdown). Only ``Exception`` is caught: cancellation and interpreter exits go through.

A loop must be safe to start again: each begins by recovering what a failure in its middle left undone (the
writer, for instance, requeues every stream with entries Redis has not acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["BACKOFF_INITIAL_S", "BACKOFF_MAX_S", "HEALTHY_AFTER_S", "Child", "Supervisor"]

logger = logging.getLogger("ssegate.cluster.supervise")

BACKOFF_INITIAL_S = 0.1
"""The wait before a failed loop is started again the first time: short, a one-off bug costs almost nothing."""
BACKOFF_MAX_S = 5.0
"""The longest wait between restarts: a loop that keeps failing is retried this often, not in a hot loop."""
HEALTHY_AFTER_S = 10.0
"""A loop that ran this long before failing is restarted after ``BACKOFF_INITIAL_S`` again."""


@dataclass(slots=True, eq=False)
class Child:
    """One supervised loop, and how it fared."""

    name: str
    body: Callable[[], Awaitable[None]]
    max_s: float
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    """Times it was started again after a failure (over its whole life)."""
    delay: float = 0.0
    """The backoff before its next restart (``0``: it has not failed since it last ran healthy)."""
    error: str | None = None
    """While it is down: the class of the exception that stopped it."""


class Supervisor:
    """Runs named loops; restarts one that raises, with backoff; knows which are down right now."""

    def __init__(
        self, *, initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S,
        healthy_after_s: float = HEALTHY_AFTER_S,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.healthy_after_s = healthy_after_s
        self._children: dict[str, Child] = {}

    def spawn(self, name: str, body: Callable[[], Awaitable[None]], *, max_s: float | None = None) -> None:
        """Run ``body()`` as loop ``name`` (restarted with a backoff of at most ``max_s`` when it raises); nothing
        when a loop of that name is running or waiting to restart."""
        if self.running(name):
            return
        child = Child(name, body, self.max_s if max_s is None else min(max_s, self.max_s))
        self._children[name] = child
        child.task = asyncio.get_running_loop().create_task(self._run(child), name=f"ssegate-redis-{name}")

    def running(self, name: str) -> bool:
        """Whether loop ``name`` exists (running, or down and waiting to restart)."""
        child = self._children.get(name)
        return child is not None and child.task is not None and not child.task.done()

    def child(self, name: str) -> Child | None:
        return self._children.get(name)

    @property
    def down(self) -> dict[str, str]:
        """The loops waiting to be restarted after a failure, with the class of what stopped each."""
        return {c.name: c.error for c in self._children.values() if c.error is not None}

    async def stop(self, *names: str) -> None:
        """Cancel the loops ``names`` (every loop when none is named) and wait for them to end."""
        picked = [self._children.pop(n) for n in (names or list(self._children)) if n in self._children]
        tasks = [c.task for c in picked if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    await child.body()
                    return
                except Exception as exc:
                    if loop.time() - started >= self.healthy_after_s:
                        child.delay = 0.0
                    child.delay = min(child.delay * 2 or self.initial_s, child.max_s)
                    child.error = type(exc).__name__
                    logger.error("Redis background loop %r failed; restarting it in %.1fs", child.name, child.delay,
                                 exc_info=exc, extra={"loop": child.name, "restart_in_s": child.delay})
                try:
                    await asyncio.sleep(child.delay)
                finally:
                    child.error = None
                child.restarts += 1
        finally:
            if self._children.get(child.name) is child:
                del self._children[child.name]
