"""``core/tasks.within``: one await bounded in time, by ``asyncio.timeout``'s rules. Each case runs on asyncio's loop
and on uvloop (the gateway's), and the same case with ``asyncio.timeout`` must end the same way: a result passes
through and leaves no timer behind; the time running out is a ``TimeoutError`` no earlier than asked; a cancel from
elsewhere stays a cancel, even when the time ran out in the same turn; an error of the awaited thing passes
unchanged; and the task's cancel count is back where it was in every case."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from ssegate.core.tasks import current, within

T = TypeVar("T")
Bound = Callable[[Awaitable[T], float], Coroutine[Any, Any, T]]

LOOPS = pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
BOUNDS = pytest.mark.parametrize("bound", ["within", "asyncio.timeout"])


def bounded(name: str) -> Bound[Any]:
    async def by_within(aw: Awaitable[Any], seconds: float) -> Any:
        return await within(asyncio.get_running_loop(), aw, seconds)

    async def by_timeout(aw: Awaitable[Any], seconds: float) -> Any:
        async with asyncio.timeout(seconds):
            return await aw

    return by_within if name == "within" else by_timeout


def run(new_loop: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@LOOPS
@BOUNDS
def test_a_result_in_time_passes_through_and_leaves_no_timer(new_loop: Any, bound: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.05, fut.set_result, "answer")
        assert await bounded(bound)(fut, 0.3) == "answer"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.5)  # past the bound: nothing cancels this task now

    run(new_loop, main)


@LOOPS
@BOUNDS
def test_the_time_running_out_is_a_timeout_error_no_earlier_than_asked(new_loop: Any, bound: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await bounded(bound)(loop.create_future(), 0.3)
        elapsed = loop.time() - t0
        assert 0.29 <= elapsed < 3.0, elapsed
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.01)  # the expiry was taken back: no cancel is pending

    run(new_loop, main)


@LOOPS
@BOUNDS
@pytest.mark.parametrize("same_turn", [False, True], ids=["before-the-bound", "as-the-bound-runs-out"])
def test_a_cancel_from_elsewhere_stays_a_cancel(new_loop: Any, bound: str, same_turn: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = loop.create_future()

        async def waits() -> None:
            started.set_result(None)
            await bounded(bound)(loop.create_future(), 0.2)

        task = loop.create_task(waits())
        await started
        if same_turn:
            # the loop blocked past the bound (due at 0.2 s) and the cancel (due at 0.25 s): the bound's timer runs,
            # then the cancel, in the same turn, before the task resumes
            loop.call_later(0.05, time.sleep, 0.3)
            loop.call_later(0.25, task.cancel)
        else:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    run(new_loop, main)


@LOOPS
@BOUNDS
def test_an_error_of_the_awaited_passes_unchanged(new_loop: Any, bound: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.05, fut.set_exception, ConnectionRefusedError("no"))
        with pytest.raises(ConnectionRefusedError, match="no"):
            await bounded(bound)(fut, 1.0)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    run(new_loop, main)


@LOOPS
def test_no_bound_is_a_plain_await(new_loop: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.2, fut.set_result, "late")
        assert await within(loop, fut, None) == "late"

    run(new_loop, main)


@LOOPS
def test_current_is_the_running_task_and_none_outside_one(new_loop: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert current(loop) is asyncio.current_task()
        assert current(loop) is not None
        assert (await loop.create_task(asyncio.sleep(0, current(loop)))) is asyncio.current_task()

    run(new_loop, main)
    other = asyncio.new_event_loop()
    try:
        assert current(other) is None
    finally:
        other.close()
