"""The tasks every stream starts (the request's ASGI cycle, the generation), made by ``asyncio.Task`` itself.

uvloop's ``create_task`` makes a task without a name and names it afterwards: the task first formats one of its own
(``Task-<n>``, ``PyUnicode_FromFormat``), which ``set_name`` then replaces, for ~1.4k instructions a task, two
tasks a stream (``python -m bench.callgrind``). ``start`` makes the task with its name given, as the loop's
``create_task`` would without a task factory; a loop with a task factory (an application's, for eager tasks or
tracing) gets its ``create_task``, so the factory sees every task as before.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["start"]

T = TypeVar("T")

_Task: Final = asyncio.Task


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str,
          context: contextvars.Context | None = None) -> asyncio.Task[T]:
    """``loop.create_task(coro, name=name, context=context)``, by ``asyncio.Task`` when the loop has no task
    factory."""
    if loop.get_task_factory() is None:
        return _Task(coro, loop=loop, name=name, context=context)
    return loop.create_task(coro, name=name, context=context)
