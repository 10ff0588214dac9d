"""``core/deadline.py``: a deadline fires at its target whichever way the target moved, and a move earlier that
was announced (``arm_by``) is lazy: no new timer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ssegate.core.deadline import Deadline, Sweep


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def deadline() -> tuple[asyncio.AbstractEventLoop, Deadline, list[float]]:
    """A deadline on the running loop, and the loop times at which it fired."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    return loop, Deadline(loop, lambda: fired.append(loop.time())), fired


def recording_sweep() -> tuple[asyncio.AbstractEventLoop, Sweep[str], dict[str, float]]:
    """A sweep on the running loop, and the loop time at which each item expired."""
    loop = asyncio.get_running_loop()
    expired: dict[str, float] = {}
    return loop, Sweep(loop, lambda item: expired.__setitem__(item, loop.time())), expired


def test_a_target_armed_early_fires_at_the_target_not_at_the_arming() -> None:
    async def main() -> None:
        loop, d, fired = deadline()
        t0 = loop.time()
        d.set(t0 + 0.4, arm_by=t0 + 0.1)  # armed at 0.1, the target stays at 0.4
        await asyncio.sleep(0.25)
        assert fired == []
        await asyncio.sleep(1.0)
        assert len(fired) == 1 and 0.4 <= fired[0] - t0 < 1.2

    run(main)


def test_an_announced_move_earlier_costs_no_new_timer() -> None:
    """A generation's deadline: first-token 5 s, idle 0.2 s; its first output at 0.05 s moves the target to 0.25 s."""

    async def main() -> None:
        loop, d, fired = deadline()
        t0 = loop.time()
        d.set(t0 + 5.0, arm_by=t0 + 0.2)
        handle = d._handle
        await asyncio.sleep(0.05)
        d.set(loop.time() + 0.2)
        assert d._handle is handle  # lazy: the timer armed at 0.2 fires, finds the target later, re-arms
        await asyncio.sleep(1.5)
        assert len(fired) == 1 and 0.25 <= fired[0] - t0 < 1.2

    run(main)


def test_a_move_earlier_not_announced_re_arms_and_arm_by_past_the_target_is_ignored() -> None:
    async def main() -> None:
        loop, d, fired = deadline()
        t0 = loop.time()
        d.set(t0 + 5.0)
        handle = d._handle
        d.set(t0 + 0.1, arm_by=t0 + 3.0)  # earlier than the armed timer: a new one, at the target
        assert d._handle is not handle
        await asyncio.sleep(1.0)
        assert len(fired) == 1 and 0.1 <= fired[0] - t0 < 0.9

    run(main)


def test_a_sweep_expires_each_item_at_its_own_time_on_one_timer() -> None:
    """Items added later cost no timer; a discarded one never expires; each other one expires at its own time
    (not with an earlier one, not later than its time)."""
    async def main() -> None:
        loop, sweep, expired = recording_sweep()
        t0 = loop.time()
        sweep.add("first", t0 + 0.2)
        handle = sweep._deadline._handle
        sweep.add("gone", t0 + 0.3)
        sweep.add("second", t0 + 0.5)
        assert sweep._deadline._handle is handle  # later items: the same timer
        sweep.discard("gone")
        await asyncio.sleep(1.5)
        assert set(expired) == {"first", "second"} and len(sweep) == 0
        assert 0.19 <= expired["first"] - t0 < 0.45
        assert 0.49 <= expired["second"] - t0 < 1.4

    run(main)


def test_a_sweep_expires_each_item_at_its_own_time_in_or_out_of_order() -> None:
    """A sweep reads its items in the order added, which is the order of their times when they share a timeout
    (a pass stops at the first item not due). An item added again goes to the end (the one after it is not held
    behind it), and an item added for a time before the last one's is still expired at its own time (passes then
    read every item), as are items added after the sweep emptied and became ordered again."""
    async def main() -> None:
        loop, sweep, expired = recording_sweep()
        t0 = loop.time()
        sweep.add("moved", t0 + 0.2)
        sweep.add("next", t0 + 0.4)
        sweep.add("moved", t0 + 0.8)  # again, later: after "next", not held in front of it
        await asyncio.sleep(1.0)
        assert set(expired) == {"moved", "next"} and len(sweep) == 0
        assert 0.39 <= expired["next"] - t0 < 0.7
        assert 0.79 <= expired["moved"] - t0 < 1.0
        t0 = loop.time()  # empty: ordered again
        sweep.add("late", t0 + 0.6)
        sweep.add("early", t0 + 0.3)  # out of order: before the item in front of it
        await asyncio.sleep(0.9)
        assert set(expired) == {"moved", "next", "late", "early"} and len(sweep) == 0
        assert 0.29 <= expired["early"] - t0 < 0.55
        assert 0.59 <= expired["late"] - t0 < 0.9
        t1 = loop.time()  # empty: ordered again
        for i in range(1000):
            sweep.add(f"n{i}", t1 + 0.2 + i * 0.0003)  # ~0.2 to 0.5 s
        sweep.discard("n500")
        await asyncio.sleep(0.35)  # (a pass at about 0.2, and one at each item's time after it, 10 ms at a time)
        gone = {f"n{i}" for i in range(1000)} - {"n500"}
        at = {item: expired[item] - t1 for item in gone if item in expired}
        assert at, "none expired"
        assert all(t >= 0.2 + int(item[1:]) * 0.0003 - 0.011 for item, t in at.items())  # none before its time
        await asyncio.sleep(0.5)
        assert gone <= set(expired) and "n500" not in expired and len(sweep) == 0

    run(main)
