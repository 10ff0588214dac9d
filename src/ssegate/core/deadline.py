"""A deadline that can move, for timers that must not cost anything per token; the deadlines of a loop on one
of its timers.

Re-arming an event-loop timer on every token (cancel a handle, schedule a new one) is the expensive way to keep
an idle timeout. ``Deadline`` keeps a target time and one entry in its loop's ``Timers``: moving the target
*later* only stores it (the entry, when it comes due early, is put back for the new target: lazy); moving it
*earlier* puts in a new entry at once (a lazy one would fire late: e.g. the switch from the first-token deadline,
120 s, to the idle deadline, 60 s after the first token). ``clear()`` disarms it. The callback runs once, at the
target (never before it), in the loop.

A deadline that will move earlier can say so in advance (``set(at, arm_by=...)``: the earliest it may move to):
its entry is due no later than that, and the move is lazy too (a generation's deadline is entered at the idle
timeout after its start, not at the longer first-token deadline: its first output costs no new entry).

``Timers``: every deadline of an event loop (``per_loop.kept``) is an entry of one heap, ``(time, ticket,
deadline)``, on one timer of the loop, armed at the earliest entry but never more than ``TICK_S`` ahead. Two
timers of the loop per stream (its generation's and its response's), each made, cancelled, closed and freed, cost
~12k instructions of uvloop's a short stream; an entry costs a heap push, and a cleared one is left where it is
(its ticket no longer the deadline's) until it comes to the top or the dead outnumber the live (then the heap is
rebuilt from the live: memory stays within twice theirs). The loop's timer sleeps at most ``TICK_S``: an entry due
sooner than the armed time re-arms it, and with every usual timeout longer than that (commit, heartbeat, idle) a
new stream never does; while no deadline is set, nothing is armed. A callback that raises goes to the loop (its
exception handler, as from any timer of its); the entries due after it fire in the loop's next pass.
"""

from __future__ import annotations

import asyncio
import heapq
import weakref
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from .per_loop import kept

_T = TypeVar("_T")

__all__ = ["TICK_S", "Deadline", "Sweep", "Timers", "timers_of"]

TICK_S: Final = 1.0
"""The longest the loop's timer is armed ahead while deadlines are set (see the module docstring)."""
_COMPACT_MIN: Final = 64
"""Cleared entries left in the heap before it may be rebuilt (when they outnumber the live ones)."""

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_heapify: Final = heapq.heapify


def _nothing() -> None:
    return None


class Timers:
    """The deadlines of one event loop on one timer of the loop (``timers_of(loop)``)."""

    __slots__ = ("_armed_at", "_dead", "_firing", "_handle", "_heap", "_loop", "_next")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # (kept per loop, which ``per_loop`` holds weakly)
        self._heap: list[Any] = []
        """Entries ``(time, ticket, deadline)``; one is live while its deadline holds its ticket."""
        self._dead = 0
        """Entries in the heap whose deadline was cleared or moved."""
        self._next = 1
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._firing = False
        """In ``_fire``: entries added meanwhile arm nothing (it arms for what is left when it ends)."""

    def __len__(self) -> int:
        """Entries set and not cleared."""
        return len(self._heap) - self._dead

    def add(self, at: float, deadline: Deadline) -> int:
        """Enter ``deadline`` for ``at``; its ticket (the deadline's ``_ticket`` while the entry is live)."""
        ticket = self._next
        self._next = ticket + 1
        _heappush(self._heap, (at, ticket, deadline))
        if not self._firing and (self._handle is None or at < self._armed_at):
            self._arm(at)
        return ticket

    def drop(self) -> None:
        """An entry was given up (its deadline no longer holds its ticket): left in the heap, until it comes to the
        top, or the heap is rebuilt of the live ones when the dead outnumber them."""
        dead = self._dead = self._dead + 1
        heap = self._heap
        if dead >= _COMPACT_MIN and dead * 2 > len(heap):
            live = [entry for entry in heap if entry[2]._ticket == entry[1]]
            _heapify(live)
            self._heap = live
            self._dead = 0
            if not live and self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def _arm(self, at: float) -> None:
        loop = self._loop()
        if loop is None:  # the loop is gone, and with it anything left to fire
            return
        handle = self._handle
        if handle is not None:
            handle.cancel()
        now = loop.time()
        if at > now + TICK_S:
            at = now + TICK_S
        self._armed_at = at
        self._handle = loop.call_later(at - now, self._fire)

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        self._firing = True
        try:
            while True:
                heap = self._heap  # (a callback may rebuild it)
                if not heap:
                    break
                entry = heap[0]
                deadline: Deadline = entry[2]
                if deadline._ticket != entry[1]:  # given up
                    _heappop(heap)
                    self._dead -= 1
                    continue
                if entry[0] > now:
                    break
                _heappop(heap)
                deadline._ticket = 0
                deadline._fire(now)
        finally:  # (also after a callback that raised: what is left is armed for, the due at once)
            self._firing = False
            heap = self._heap
            if heap and (self._handle is None or heap[0][0] < self._armed_at):
                self._arm(heap[0][0])


def timers_of(loop: asyncio.AbstractEventLoop) -> Timers:
    """The ``Timers`` of ``loop`` (made on first use, gone with the loop)."""
    objects = kept(loop)
    timers: Timers | None = objects.get(Timers)
    if timers is None:
        timers = objects[Timers] = Timers(loop)
    return timers


class Deadline:
    __slots__ = ("_armed_at", "_callback", "_ticket", "_timers", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._timers = timers_of(loop)
        self._callback = callback
        self._ticket = 0
        """Its live entry's ticket in ``_timers``, 0 when it has none."""
        self._armed_at = 0.0
        self.at: float | None = None
        """The target (loop time), or None when disarmed."""

    def set(self, at: float, arm_by: float | None = None) -> None:
        """Fire at ``at``: later than the entry is lazy, earlier enters it again. ``arm_by``: the earliest time
        the deadline may move to next; an entry made now is due no later than that, so the move stays lazy."""
        self.at = at
        if self._ticket == 0:
            self._arm(at if arm_by is None or arm_by > at else arm_by)
        elif at < self._armed_at:
            self._ticket = 0
            self._timers.drop()
            self._arm(at if arm_by is None or arm_by > at else arm_by)

    def clear(self) -> None:
        self.at = None
        if self._ticket != 0:
            self._ticket = 0
            self._timers.drop()

    def close(self) -> None:
        """Disarm it for good and let go of the callback (its owner, usually: no cycle left for the collector)."""
        self.clear()
        self._callback = _nothing

    def _arm(self, at: float) -> None:
        self._armed_at = at
        self._ticket = self._timers.add(at, self)

    def _fire(self, now: float) -> None:
        """Its entry came due at the loop's time ``now`` (``Timers``; its ticket already given back)."""
        at = self.at
        if at is None:
            return
        if now < at:  # moved later meanwhile
            self._arm(at)
            return
        self.at = None
        self._callback()


class Sweep(Generic[_T]):
    """Deadlines of many items on one timer: ``add(item, at)``, ``discard(item)``; at an item's time (up to 10 ms
    early: one pass for items due together) it is dropped and ``expire(item)`` called. The timer (a ``Deadline``)
    is armed at the earliest time added since it last fired; an item added for a later time, or discarded before
    its time (a request that completed), costs a dict entry, not a timer: one timer per sweep period, not per item.

    Items are kept in the order they were added, which is the order of their times when every item gets the same
    timeout (a connection's read or keep-alive deadline: ``now + timeout`` on the loop's monotonic clock): a pass
    then reads only the items due and the one after, whatever the number waiting (50,000 idle kept-alive
    connections cost a pass what one does). An item added for a time before the last one's turns the order off
    until the sweep is empty again: passes read every item meanwhile, as a plain scan.
    """

    __slots__ = ("_deadline", "_expire", "_items", "_last", "_loop", "_ordered")

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[_T], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._items: dict[_T, float] = {}
        self._ordered = True
        """The items' times do not decrease in the dict's order."""
        self._last = 0.0
        """The time of the item added last."""
        self._deadline = Deadline(loop, self._sweep)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: _T, at: float) -> None:
        items = self._items
        if not items:
            self._ordered = True
        elif at < self._last:
            self._ordered = False
        if item in items:
            del items[item]  # (to the end: the dict keeps a key where it was first put)
        items[item] = at
        self._last = at
        deadline = self._deadline
        if deadline.at is None or at < deadline.at:
            deadline.set(at)

    def discard(self, item: _T) -> None:
        self._items.pop(item, None)

    def _sweep(self) -> None:
        now = self._loop.time() + 0.01
        items = self._items
        due: list[_T] = []
        if self._ordered:
            for item, at in items.items():
                if at > now:
                    break
                due.append(item)
        else:
            due = [item for item, at in items.items() if at <= now]
        for item in due:
            del items[item]
        if items:
            self._deadline.set(next(iter(items.values())) if self._ordered else min(items.values()))
        expire = self._expire
        for item in due:
            expire(item)
