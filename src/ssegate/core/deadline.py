"""A deadline that can move, for timers that must not cost anything per token.

Re-arming an event-loop timer on every token (cancel a handle, schedule a new one) is the expensive way to keep
an idle timeout. ``Deadline`` keeps one timer handle and a target time: moving the target *later* only stores it
(the armed timer, when it fires early, re-arms itself for the new target: lazy); moving it *earlier* re-arms at
once (a lazy timer would fire late: e.g. the switch from the first-token deadline, 120 s, to the idle deadline,
60 s after the first token). ``clear()`` disarms it. The callback runs once, at the target, in the loop.

A deadline that will move earlier can say so in advance (``set(at, arm_by=...)``: the earliest it may move to):
its timer is armed no later than that, and the move is lazy too. A generation's timer is armed at the idle
timeout after its start, not at the (longer) first-token deadline, and its first output, which moves the
deadline to the idle timeout after it, costs no new timer (one timer a short stream, not two; a timer made and
cancelled costs ~2-5k instructions in uvloop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")

__all__ = ["Deadline", "Sweep"]


def _nothing() -> None:
    return None


class Deadline:
    __slots__ = ("_armed_at", "_callback", "_handle", "_loop", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self.at: float | None = None
        """The target (loop time), or None when disarmed."""

    def set(self, at: float, arm_by: float | None = None) -> None:
        """Fire at ``at``: later than the armed timer is lazy, earlier re-arms it. ``arm_by``: the earliest time
        the deadline may move to next; a timer armed now is armed no later than that, so the move stays lazy."""
        self.at = at
        if self._handle is None:
            self._arm(at if arm_by is None or arm_by > at else arm_by)
        elif at < self._armed_at:
            self._handle.cancel()
            self._arm(at if arm_by is None or arm_by > at else arm_by)

    def clear(self) -> None:
        self.at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Disarm it for good and let go of the callback (its owner, usually: no cycle left for the collector)."""
        self.clear()
        self._callback = _nothing

    def _arm(self, at: float) -> None:
        self._armed_at = at
        loop = self._loop
        # (uvloop's call_at is this call_later, through one more call with its arguments parsed by keyword)
        self._handle = loop.call_later(at - loop.time(), self._fire)

    def _fire(self) -> None:
        self._handle = None
        at = self.at
        if at is None:
            return
        if self._loop.time() < at:  # moved later meanwhile
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
