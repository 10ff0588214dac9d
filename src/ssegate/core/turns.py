"""Work that may wait out a storm: ``Turns`` runs what it is given in the next pass of the event loop, or, while
others wait, after them, ``per_pass`` at once with a pause of ``pause_s`` between.

When a thousand clients leave at once, their disconnects arrive over some milliseconds, and what each one must
do at once is small: tell its upstream (a ``shutdown`` of that socket, in the disconnect's own callback). What
may wait is the rest: unwinding its generation's task (terminal entry, log line, metrics: ~150 µs), closing the
client's socket and the callbacks that follow. Done as they come, those would keep the loop from reading the
next disconnects (and take the CPU from everything else on the machine) for tens of milliseconds, and every
upstream would be told that much later. Alone, a call costs one loop pass, as ``call_soon`` would.

One ``Turns`` per job and event loop (``on_loop``): ``"stop"``, the hub's stopping of cancelled generations
(``StreamHub.turn``), and ``"close"``, the server protocol's closing of the sockets of clients that left
(``http/uvicorn_glue.py``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final

from .per_loop import kept

__all__ = ["PAUSE_S", "PER_PASS", "Turns", "on_loop"]

PER_PASS: Final = 8
"""Calls made at once..."""
PAUSE_S: Final = 0.002
"""... and the pause before the next ones, while more wait."""


class Turns:
    """Calls made in turns, in the order given, on ``loop``."""

    __slots__ = ("_handle", "_loop", "_waiting", "pause_s", "per_pass")

    def __init__(self, loop: asyncio.AbstractEventLoop, per_pass: int = PER_PASS, pause_s: float = PAUSE_S) -> None:
        self._loop = weakref.ref(loop)  # (``per_loop`` holds loops weakly: a strong one would keep it)
        self.per_pass = per_pass
        self.pause_s = pause_s
        self._waiting: deque[Callable[[], object]] = deque()
        self._handle: asyncio.Handle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        if loop is None:
            raise RuntimeError("the event loop of these turns is gone")
        return loop

    def __len__(self) -> int:
        """Calls not made yet."""
        return len(self._waiting)

    def add(self, call: Callable[[], object]) -> None:
        """Make ``call`` in the next pass of the loop, or after those already waiting."""
        self._waiting.append(call)
        if self._handle is None:
            self._handle = self.loop.call_soon(self._give)

    def _give(self) -> None:
        self._handle = None
        waiting = self._waiting
        for _ in range(min(self.per_pass, len(waiting))):
            waiting.popleft()()
        if waiting:
            self._handle = self.loop.call_later(self.pause_s, self._give)


def on_loop(job: str, loop: asyncio.AbstractEventLoop) -> Turns:
    """The ``Turns`` of ``job`` on ``loop`` (made on first use, gone with the loop: ``per_loop.kept``)."""
    jobs = kept(loop)
    turns: Turns | None = jobs.get(job)
    if turns is None:
        turns = jobs[job] = Turns(loop)
    return turns
