"""A deadline that can move, for timers that must not cost anything per token.

Re-arming an event-loop timer on every token (cancel a handle, schedule a new one) is the expensive way to keep
an idle timeout. ``Deadline`` keeps one timer handle and a target time: moving the target *later* only stores it
(the armed timer, when it fires early, re-arms itself for the new target: lazy); moving it *earlier* re-arms at
once (a lazy timer would fire late: e.g. the switch from the first-token deadline, 120 s, to the idle deadline,
60 s after the first token). ``clear()`` disarms it. The callback runs once, at the target, in the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Deadline"]


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

    def set(self, at: float) -> None:
        """Fire at ``at``: later than the armed timer is lazy, earlier re-arms it."""
        self.at = at
        if self._handle is None:
            self._arm(at)
        elif at < self._armed_at:
            self._handle.cancel()
            self._arm(at)

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
        self._handle = self._loop.call_at(at, self._fire)

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
