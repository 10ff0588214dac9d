"""``core/turns.py``: work that may wait out a storm runs in the next pass of the loop when alone, and in turns
(``per_pass`` at once, a pause between) while others wait, in the order given."""

from __future__ import annotations

import asyncio

from ssegate.core.turns import Turns, on_loop


def test_a_lone_call_runs_in_the_next_pass_of_the_loop() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        done: list[str] = []
        turns = Turns(loop, per_pass=8, pause_s=10.0)
        turns.add(lambda: done.append("turn"))
        assert done == []  # never inside the caller's callback
        loop.call_later(0.001, lambda: done.append("timer"))
        await asyncio.sleep(0.05)
        turns.add(lambda: done.append("second"))  # nothing waits: no pause either, though pause_s is 10 s
        await asyncio.sleep(0.05)
        return done

    assert asyncio.run(main()) == ["turn", "timer", "second"]


def test_many_calls_run_per_pass_at_a_time_with_a_pause_between_in_order() -> None:
    async def main() -> tuple[list[int], list[int], list[int], int]:
        loop = asyncio.get_running_loop()
        done: list[int] = []
        turns = Turns(loop, per_pass=8, pause_s=0.3)
        for i in range(20):
            turns.add(lambda i=i: done.append(i))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first = list(done)
        await asyncio.sleep(0.1)  # well inside the pause: however slow the machine, the pause is at least 0.3 s
        still = list(done)
        left = len(turns)
        for _ in range(200):  # two more turns: 0.6 s, given up to 10 s
            if len(done) == 20:
                break
            await asyncio.sleep(0.05)
        return first, still, done, left

    first, still, done, left = asyncio.run(main())
    assert first == list(range(8))
    assert still == list(range(8)) and left == 12
    assert done == list(range(20))


def test_each_job_has_one_turns_per_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert on_loop("stop", loop) is on_loop("stop", loop) is not on_loop("close", loop)

    asyncio.run(main())
    asyncio.run(main())  # a new loop: new ones (those of a closed loop go with it)


def test_a_loop_that_used_turns_is_freed_with_them() -> None:
    """``on_loop``'s registry is keyed by a weak reference to the loop: the turns it holds must not keep their loop
    alive (an application or a test suite that runs many loops would keep every one of them)."""
    import gc
    import weakref

    async def main() -> None:
        on_loop("close", asyncio.get_running_loop()).add(lambda: None)
        on_loop("stop", asyncio.get_running_loop())
        await asyncio.sleep(0.01)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
