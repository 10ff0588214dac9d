"""``core/deadline.py``: a deadline fires at its target whichever way the target moved, and a move earlier that
was announced (``arm_by``) is lazy: no new entry. The deadlines of a loop share one timer of the loop
(``Timers``): never early, each once, a cleared one never; one callback that raises spoils none of the others; the
heap stays within twice the live entries; nothing stays armed, or kept, once nothing is set or the loop is gone."""

from __future__ import annotations

import asyncio
import gc
import random
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from ssegate.core import per_loop
from ssegate.core.deadline import TICK_S, Deadline, Sweep, timers_of


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
        ticket = d._ticket
        await asyncio.sleep(0.05)
        d.set(loop.time() + 0.2)
        assert d._ticket == ticket  # lazy: the entry due at 0.2 comes due, finds the target later, is put back
        await asyncio.sleep(1.5)
        assert len(fired) == 1 and 0.25 <= fired[0] - t0 < 1.2

    run(main)


def test_a_move_earlier_not_announced_re_arms_and_arm_by_past_the_target_is_ignored() -> None:
    async def main() -> None:
        loop, d, fired = deadline()
        t0 = loop.time()
        d.set(t0 + 5.0)
        ticket = d._ticket
        d.set(t0 + 0.1, arm_by=t0 + 3.0)  # earlier than its entry: a new one, at the target
        assert d._ticket != ticket
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
        ticket = sweep._deadline._ticket
        sweep.add("gone", t0 + 0.3)
        sweep.add("second", t0 + 0.5)
        assert sweep._deadline._ticket == ticket  # later items: the same entry
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


def test_the_deadlines_of_a_loop_share_one_timer_armed_once_for_later_ones_and_fire_in_time() -> None:
    """300 deadlines set in random order, all further ahead than ``TICK_S``: the loop's timer is armed once, for
    the first; a third are then cleared, a third moved (later or earlier); each of the rest fires once, at or
    after its target, never before, and within a generous bound after it; none that was cleared fires."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        arms: list[float] = []
        call_later = loop.call_later

        def counting(delay: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            arms.append(delay)
            return call_later(delay, callback, *args, **kwargs)

        loop.call_later = counting  # type: ignore[method-assign]
        rng = random.Random(7)
        fired: dict[int, float] = {}
        t0 = loop.time()
        targets = {i: t0 + TICK_S + 0.1 + rng.random() * 0.6 for i in range(300)}
        deadlines: dict[int, Deadline] = {}
        for i in rng.sample(range(300), 300):
            d = deadlines[i] = Deadline(loop, lambda i=i: fired.__setitem__(i, loop.time()))
            d.set(targets[i])
        assert len(arms) == 1 and arms[0] <= TICK_S + 0.01  # armed once, no further than the tick ahead
        for i in range(0, 300, 3):
            deadlines[i].clear()
        for i in range(1, 300, 3):
            targets[i] += rng.choice((-0.5, 0.3))  # earlier (still ahead) or later
            deadlines[i].set(targets[i])
        await asyncio.sleep(TICK_S + 1.5)
        assert not any(i in fired for i in range(0, 300, 3))
        expected = {i for i in range(300) if i % 3}
        assert set(fired) == expected
        early = {i: targets[i] - fired[i] for i in expected if fired[i] < targets[i]}
        assert not early, f"fired before the target: {early}"
        assert all(fired[i] - targets[i] < 0.5 for i in expected)
        assert len(timers_of(loop)) == 0 and timers_of(loop)._handle is None  # nothing set: nothing armed

    run(main)


def test_a_callback_that_raises_is_reported_and_the_others_due_with_it_still_fire() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        fired: list[str] = []
        t0 = loop.time()

        def boom() -> None:
            raise ValueError("boom")

        first, bad, last = Deadline(loop, lambda: fired.append("first")), Deadline(loop, boom), \
            Deadline(loop, lambda: fired.append("last"))
        first.set(t0 + 0.05)
        bad.set(t0 + 0.05)
        last.set(t0 + 0.06)
        await asyncio.sleep(0.5)
        assert fired == ["first", "last"]
        assert len(reported) == 1 and isinstance(reported[0]["exception"], ValueError)

    run(main)


def test_cleared_entries_are_dropped_from_the_heap_before_they_outnumber_the_live_ones() -> None:
    """Streams that end long before their timeouts leave entries behind: the heap is rebuilt of the live ones, so
    it never holds more than twice them (plus the first few dead); the live ones still fire; once every deadline
    is cleared, the loop's timer comes due at most once more (within ``TICK_S``) and is not armed again."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        timers = timers_of(loop)
        fired: list[int] = []
        t0 = loop.time()
        kept: list[Deadline] = []
        for i in range(2000):
            d = Deadline(loop, lambda i=i: fired.append(i))
            d.set(t0 + 0.3 + i * 0.0001)
            if i % 20:
                d.clear()
                assert len(timers._heap) <= 2 * len(timers) + 64
            else:
                kept.append(d)
        assert len(timers) == 100
        await asyncio.sleep(1.0)
        assert fired == list(range(0, 2000, 20))
        for _ in range(100):
            Deadline(loop, lambda: None).set(loop.time() + 30.0)
        for d in list(timers._heap):
            d[2].clear()
        assert len(timers) == 0 and len(timers._heap) <= 64
        await asyncio.sleep(TICK_S + 0.3)
        assert len(timers._heap) == 0 and timers._handle is None

    run(main)


def test_the_timers_of_a_loop_go_with_the_loop_even_with_a_deadline_still_set() -> None:
    """A loop closed with a deadline set (its callback, its timer handle hold the loop) is let go once another
    loop asks for its own objects."""
    def used_and_closed() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        try:
            async def main() -> None:
                running = asyncio.get_running_loop()
                Deadline(running, lambda: print(running)).set(running.time() + 60.0)  # still set at the end
                assert timers_of(running) is per_loop.kept(running)[type(timers_of(running))]

            loop.run_until_complete(main())
        finally:
            loop.close()
        return weakref.ref(loop)

    first = used_and_closed()
    second = used_and_closed()  # (its first deadline let the first loop's objects go)
    gc.collect()
    assert first() is None
    assert second() is not None  # closed, but no loop asked since: kept, until one does
    asyncio.run(asyncio.sleep(0))  # a loop that makes no deadline asks nothing

    async def another() -> None:
        Deadline(asyncio.get_running_loop(), lambda: None)

    run(another)
    gc.collect()
    assert second() is None
