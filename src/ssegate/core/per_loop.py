"""Objects kept per event loop: made on first use by whoever needs them, gone with the loop.

``kept(loop)`` is the dict of one loop's objects (``turns.on_loop``'s ``Turns`` by job name, ``deadline``'s
``Timers`` and ``obs/stream_log.py``'s ``_Pass`` under their classes). The registry holds the loops weakly (a
``WeakKeyDictionary``), and the objects kept hold theirs weakly too; but what they hold may not (a deadline's
callback, a timer handle of the loop), so a loop closed while its objects still held something would stay: the
objects of closed loops are let go whenever a loop not seen before asks for its own (a test suite's next loop; a
server has one). The ``WeakKeyDictionary`` is looked up in the interpreter; the loop asked for last is kept beside
it, with its dict, as one pair written whole (servers on other threads share it): one weak reference to compare in
the usual case of one loop.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Final

__all__ = ["kept"]

_by_loop: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[object, Any]]] = (
    weakref.WeakKeyDictionary())


class _Last:
    def __init__(self) -> None:
        self.pair: tuple[weakref.ref[asyncio.AbstractEventLoop], dict[object, Any]] | None = None


_last: Final = _Last()


def kept(loop: asyncio.AbstractEventLoop) -> dict[object, Any]:
    """The objects kept for ``loop`` (an empty dict at first; gone with the loop)."""
    pair = _last.pair
    if pair is not None and pair[0]() is loop:
        return pair[1]
    found = _by_loop.get(loop)
    if found is None:
        for other in [other for other in _by_loop.keys() if other.is_closed()]:
            del _by_loop[other]
        found = _by_loop[loop] = {}
    _last.pair = (weakref.ref(loop), found)
    return found
