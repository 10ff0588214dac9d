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

__all__ = ["PAUSE_S", "PER_PASS", "Turns", "on_loop"]

PER_PASS: Final = 8
"""Calls made at once..."""
PAUSE_S: Final = 0.002
"""... and the pause before the next ones, while more wait."""


class Turns:
    """Calls made in turns, in the order given, on ``loop``."""

    __slots__ = ("_handle", "_loop", "_waiting", "pause_s", "per_pass")

    def __init__(self, loop: asyncio.AbstractEventLoop, per_pass: int = PER_PASS, pause_s: float = PAUSE_S) -> None:
        self._loop = weakref.ref(loop)  # (``on_loop``'s registry is keyed by the loop: a strong one would keep it)
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


_by_loop: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Turns]]] = weakref.WeakKeyDictionary()


class _Last:
    """The jobs of the loop asked for last: one weak reference to compare, where the ``WeakKeyDictionary`` is
    looked up in the interpreter."""

    def __init__(self) -> None:
        self.loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self.jobs: dict[str, Turns] = {}


_last: Final = _Last()


def on_loop(job: str, loop: asyncio.AbstractEventLoop) -> Turns:
    """The ``Turns`` of ``job`` on ``loop`` (made on first use, gone with the loop)."""
    last = _last
    ref = last.loop
    if ref is not None and ref() is loop:
        jobs = last.jobs
    else:
        found = _by_loop.get(loop)
        if found is None:
            found = _by_loop[loop] = {}
        jobs = last.jobs = found
        last.loop = weakref.ref(loop)
    turns = jobs.get(job)
    if turns is None:
        turns = jobs[job] = Turns(loop)
    return turns
