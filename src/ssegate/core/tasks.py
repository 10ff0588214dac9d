"""The tasks every stream starts (the request's ASGI cycle, the generation), made by ``asyncio.Task`` itself; the
running task (``current``); one await bounded in time (``within``).

uvloop's ``create_task`` makes a task without a name and names it afterwards: the task first formats one of its own
(``Task-<n>``, ``PyUnicode_FromFormat``), which ``set_name`` then replaces, for ~1.4k instructions a task, two
tasks a stream (``python -m bench.callgrind``). ``start`` makes the task with its name given, as the loop's
``create_task`` would without a task factory; a loop with a task factory (an application's, for eager tasks or
tracing) gets its ``create_task``, so the factory sees every task as before.

``current`` is ``asyncio.current_task(loop)`` without, on Python 3.11, its interpreted frame and its ``getpid``
(that version's ``current_task`` asks for the running loop, a system call, before it reads the task by loop).

``within(loop, aw, seconds)`` is ``async with asyncio.timeout(seconds): return await aw``, compiled: asyncio's
``Timeout`` is interpreted code (its object, ``__aenter__``, ``reschedule``, ``__aexit__``, ``current_task``),
~37k instructions each use. The compiled modules bound their waits with it: a new upstream connection
(``upstream/dial.py``, which a burst of streams makes once for each connection its pool lacks), and the upstream
client's wait for a place, for an answer's head and for a short body's bytes (``upstream/httpclient.py``). Its
rules are ``Timeout``'s: when the time is up it cancels the task; a ``CancelledError`` that comes of that cancel
alone becomes a ``TimeoutError``; a cancel from elsewhere (the task's ``cancelling()`` count above what it was on
entry) stays a cancel; and each expiry is taken back (``uncancel``) however the await ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Awaitable, Coroutine
from typing import Any, Final, TypeVar

__all__ = ["current", "start", "within"]

T = TypeVar("T")

_Task: Final = asyncio.Task
_current_task: Final = asyncio.current_task
_current_tasks: Final[dict[Any, Any] | None] = (
    getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info < (3, 12) else None)
"""Python 3.11's task by loop, which its ``asyncio.current_task`` reads; on 3.12+, ``current_task`` is C code and
is called instead."""
_CancelledError: Final = asyncio.CancelledError


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str,
          context: contextvars.Context | None = None) -> asyncio.Task[T]:
    """``loop.create_task(coro, name=name, context=context)``, by ``asyncio.Task`` when the loop has no task
    factory."""
    if loop.get_task_factory() is None:
        return _Task(coro, loop=loop, name=name, context=context)
    return loop.create_task(coro, name=name, context=context)


def current(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    """``asyncio.current_task(loop)``: the task ``loop`` is running, if any."""
    if _current_tasks is not None:
        task: asyncio.Task[Any] | None = _current_tasks.get(loop)
        return task
    return _current_task(loop)


class _Expiry:
    """The timer of one ``within``: when the time is up it cancels the task that waits, and remembers it did."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


async def within(loop: asyncio.AbstractEventLoop, aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, a ``TimeoutError`` when it takes more than ``seconds`` (None: no bound; the module's docstring:
    the rules of ``asyncio.timeout``). Must be awaited in a task of ``loop``."""
    if seconds is None:
        return await aw
    task = current(loop)
    if task is None:
        raise RuntimeError("within() must be awaited in a task")
    expiry = _Expiry(task)
    cancelling = task.cancelling()
    timer = loop.call_later(seconds, expiry.fire)
    try:
        return await aw
    except _CancelledError as exc:
        if expiry.fired:
            expiry.fired = False  # (taken back here, not again below)
            if task.uncancel() <= cancelling:
                raise TimeoutError from exc
        raise
    finally:
        timer.cancel()
        if expiry.fired:
            task.uncancel()
