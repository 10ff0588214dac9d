"""Garbage collector pauses: how often the collector stops ``ssegate serve``'s event loop, and for how long.

A collection stops every stream of the process while it runs, and its pause grows with what it walks: the young
objects since the last one (``ssegate serve`` collects the youngest generation every 20,000), and at each older
generation's turn, everything that survived into it. Objects left in reference cycles are what it must find;
objects a finished stream keeps (its event log, for resume) are what it walks on the way. So the pauses are a
property of what a stream allocates and keeps, and of nothing else the other scenarios time.

The ``gc`` scenario runs ``gc_streams`` one-token streams through ``ssegate-probed`` and ``ssegate+redis-probed``
(the same with the event log in Redis; both started by ``bench/phases.py``, which records each collection's
generation, pause and yield), at most ``setup_in_flight``
at once, each on a new connection, as the ``setup`` scenario does, and reports per generation the collections,
the streams per collection, the pauses (median and longest) and the objects each found unreachable (what
reference cycles left). ``ssegate serve`` collects generation 1 after 10 collections of generation 0 (~18,000
short streams here), generation 2 after 100 of generation 1: runs far longer than the bench's would show those.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

__all__ = ["run", "summarize"]


def summarize(collections: list[list[int]], streams: int) -> dict[str, Any]:
    """Per generation (``"0"``, ``"1"``, ``"2"``): collections, streams per collection, pause median / max (ms),
    objects found unreachable per collection (mean)."""
    out: dict[str, Any] = {}
    for gen in (0, 1, 2):
        mine = [c for c in collections if c[0] == gen]
        if not mine:
            out[str(gen)] = {"collections": 0}
            continue
        pauses = [c[1] / 1e6 for c in mine]
        out[str(gen)] = {
            "collections": len(mine),
            "streams_per_collection": round(streams / len(mine)),
            "pause_p50_ms": round(statistics.median(pauses), 2),
            "pause_max_ms": round(max(pauses), 2),
            "collected_mean": round(sum(c[2] for c in mine) / len(mine)),
        }
    return out


async def run(rt: Any, up: Any, cfg: Any) -> dict[str, Any]:
    """The ``gc`` scenario on a gateway started by ``python -m bench.phases serve``."""
    from .loadgen import build_request, closed_loop
    from .phases import _collect

    assert rt.proc is not None
    path = Path(rt.extra["phases_file"])
    await up.reset()
    await _collect(rt.proc.pid, path)  # what came before (the warm-up) is not this run's
    host, port, req = build_request(rt.url, native=rt.target.native, tokens=1, interval=0.0, ttft=0.0)
    streams, finished = await closed_loop(host, port, req, cfg.gc_streams, cfg.setup_in_flight, cfg.setup_timeout_s)
    await asyncio.sleep(0.3)  # the last streams' closes
    got = await _collect(rt.proc.pid, path)
    await up.reset()
    good = sum(1 for s in streams if s.ok and s.tokens == 1)
    return {"streams": good, "attempted": len(streams), "finished": finished,
            "generations": summarize(got["gc"], good)}
