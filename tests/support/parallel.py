"""Start several real processes at once (each ``ssegate serve`` spends about a second importing)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

__all__ = ["start_all"]


class Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


T = TypeVar("T", bound=Startable)


def start_all(*procs: T) -> tuple[T, ...]:
    """``start()`` every process in parallel; if one fails, stop them all and raise its error."""
    with ThreadPoolExecutor(len(procs)) as pool:
        futures = [pool.submit(p.start) for p in procs]
    for future in futures:
        exc = future.exception()
        if exc is not None:
            for p in procs:
                p.stop()
            raise exc
    return procs
