"""``core/deadline.py``: a deadline fires at its target whichever way the target moved, and a move earlier that
was announced (``arm_by``) is lazy: no new timer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from ssegate.core.deadline import Deadline


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def deadline() -> tuple[asyncio.AbstractEventLoop, Deadline, list[float]]:
    """A deadline on the running loop, and the loop times at which it fired."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    return loop, Deadline(loop, lambda: fired.append(loop.time())), fired


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
    from ssegate.core.deadline import Sweep

    async def main() -> None:
        loop = asyncio.get_running_loop()
        expired: dict[str, float] = {}
        sweep: Sweep[str] = Sweep(loop, lambda item: expired.__setitem__(item, loop.time()))
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
