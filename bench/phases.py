"""Where a stream's start goes: wall-clock stamps inside the gateway, one stream at a time, warm and cold.

The ``setup`` scenario gives the CPU a short stream costs, and callgrind (``bench/callgrind.py``) its instructions;
neither says which step of a stream's start the time is in, nor how much longer each step takes when the
process has been idle, which is what a single user's time to first token pays. This module answers that.

- ``python -m bench.phases serve ...`` is ``ssegate serve`` with probes: before anything is built, ``install``
  wraps the functions in ``PROBES`` so that each call records its label and ``perf_counter_ns`` in the process,
  and every garbage collection's generation, pause and yield is recorded too (``gc.callbacks``; the records are
  arrays of machine integers: keeping them allocates nothing the collector counts). ``SIGUSR1`` writes both to
  the file named by ``BENCH_PHASES_FILE`` and empties them. Nothing else changes; the wrappers cost about a
  microsecond each, so this gateway is a target of its own (``ssegate-probed``) and measures nothing but this
  scenario and the ``gc`` scenario (``bench/gc_pauses.py``). It runs ssegate from its Python source, also where
  ``make compile`` built the compiled modules (a compiled function cannot be wrapped from outside).
- The ``phases`` scenario (``run``) sends streams one at a time, so that every stamp between two connections
  belongs to one stream: ``warm`` = ``phases_warm`` one-token streams back to back (the upstream answers at
  once, the next stream starts as soon as the last one closed), ``cold`` = the ``ttft`` scenario's single
  streams (the upstream waits 20 ms before its first token, 5 tokens 10 ms apart: the gateway is idle for most
  of each stream). Per stream, each step is the time from one stamp to the next; the report gives the median
  per step.

The steps follow one stream in order: client connection accepted, its request bytes read, the app called,
the body read, parsed and validated, the request routed and admitted, the generation and its response built,
the generation's task running, the upstream request written; the upstream's answer read (its own time
included), the first token read and written to the client.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import os
import signal
import statistics
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson

__all__ = ["PROBES", "STEPS", "install", "run"]

PROBES: tuple[tuple[str, str, str], ...] = (
    # (label, module, attribute path): a call's entry is stamped with the label
    ("accepted", "ssegate.http.uvicorn_glue", "BoundedRequestProtocol.connection_made"),
    ("request read", "ssegate.http.uvicorn_glue", "BoundedRequestProtocol.data_received"),
    ("app called", "ssegate.http.direct_routes", "Front.__call__"),
    ("body validated", "ssegate.http.starts", "start_generation"),
    ("routed", "ssegate.core.generation", "StreamHub.start"),
    ("response called", "ssegate.http.response", "EventStreamResponse.__call__"),
    ("producer running", "ssegate.core.generation", "Generation._run"),
    ("upstream request written", "ssegate.upstream.httpclient", "Pool._exchange"),
    ("upstream read", "ssegate.upstream.httpclient", "_Connection.data_received"),
    # the start with the first events, in one write: from the task (write_start) or from the commit's callback
    ("first event written", "ssegate.http.uvicorn_glue", "send_start"),
    ("first event written", "ssegate.http.response", "send_start"),  # response.py's name for it is the one called
)

STEPS: tuple[tuple[str, str, str], ...] = (
    # (step, from stamp, to stamp); "first token read" is the last upstream read before the first event written
    ("request bytes arrive after accept", "accepted", "request read"),
    ("HTTP parsed, ASGI cycle started (uvicorn)", "request read", "app called"),
    ("body read, parsed, validated, ChatRequest built", "app called", "body validated"),
    ("routed and admitted", "body validated", "routed"),
    ("stream id, log, generation, response built", "routed", "response called"),
    ("a loop turn: the generation's task starts", "response called", "producer running"),
    ("upstream request built and written", "producer running", "upstream request written"),
    ("= accept to upstream request written", "accepted", "upstream request written"),
    ("upstream answers (its own time and a round trip)", "upstream request written", "upstream read"),
    ("first token read to first event written (the commit)", "first token read", "first event written"),
)

LABELS = tuple(label for label, _, _ in PROBES)
_labels = array("B")
_times = array("q")
"""The stamps: label (index in ``LABELS``) and ``perf_counter_ns``, in arrays of machine integers, so that keeping
them allocates nothing the garbage collector counts or walks (the ``gc`` scenario times its pauses)."""
_collections = array("q")
"""Every collection since the last dump: generation, pause (ns), objects collected."""


def _wrap(fn: Any, label: str) -> Any:
    labels, times, index = _labels, _times, LABELS.index(label)
    clock = time.perf_counter_ns
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def stamped_coro(*args: Any, **kwargs: Any) -> Any:
            labels.append(index)
            times.append(clock())
            return await fn(*args, **kwargs)

        return stamped_coro

    @functools.wraps(fn)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        labels.append(index)
        times.append(clock())
        return fn(*args, **kwargs)

    return stamped


def _time_collections() -> None:
    """Record each garbage collection's generation, pause and yield (``gc.callbacks``)."""
    started = array("q", [0])
    clock = time.perf_counter_ns

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock()
        else:
            _collections.extend((info["generation"], clock() - started[0], info["collected"]))

    gc.callbacks.append(on_gc)


def install() -> list[str]:
    """Wrap every probe that exists in this tree; the labels of those that do not (a renamed function)."""
    import importlib

    missing = []
    for label, module, path in PROBES:
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for p in parents:
            owner = getattr(owner, p, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if fn is None:
            missing.append(label)
            continue
        setattr(owner, name, _wrap(fn, label))
    return missing


def _dump(signum: int, frame: Any) -> None:
    path = os.environ.get("BENCH_PHASES_FILE")
    stamps = [[LABELS[i], t] for i, t in zip(_labels, _times, strict=True)]
    collections = [list(_collections[i:i + 3]) for i in range(0, len(_collections), 3)]
    del _labels[:], _times[:], _collections[:]
    if path:
        tmp = path + ".tmp"
        Path(tmp).write_bytes(orjson.dumps({"stamps": stamps, "gc": collections}))
        os.replace(tmp, path)


def per_stream(stamps: list[list[Any]]) -> list[dict[str, int]]:
    """Stamps split at each accepted connection: per stream, the first time of each label (ns; an upstream read
    counts once this stream's request was written), plus ``first token read`` (the last upstream read before the
    first event written)."""
    streams: list[dict[str, int]] = []
    cur: dict[str, int] | None = None
    last_read = 0
    for label, t in stamps:
        if label == "accepted":
            cur = {"accepted": t}
            streams.append(cur)
            last_read = 0
            continue
        if cur is None:
            continue
        if label == "upstream read":
            if "upstream request written" not in cur:
                continue  # the end of the previous stream's answer, read after this connection was accepted
            last_read = t
        if label == "first event written" and "first event written" not in cur and last_read:
            cur["first token read"] = last_read
        cur.setdefault(label, t)
    return streams


def summarize(stamps: list[list[Any]]) -> dict[str, Any]:
    streams = [s for s in per_stream(stamps) if "first event written" in s]
    steps: dict[str, Any] = {}
    for step, a, b in STEPS:
        vals = [(s[b] - s[a]) / 1000 for s in streams if a in s and b in s and s[b] >= s[a]]
        steps[step] = {"median_us": round(statistics.median(vals), 1) if vals else None, "n": len(vals)}
    return {"streams": len(streams), "steps": steps}


async def _collect(pid: int, path: Path, timeout: float = 10.0) -> dict[str, list[list[Any]]]:
    """What the probed gateway recorded since the last call: ``stamps`` ([label, ns]) and ``gc`` ([generation,
    pause ns, objects collected])."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the probed gateway wrote no stamps")
        await asyncio.sleep(0.05)
    data: dict[str, list[list[Any]]] = orjson.loads(path.read_bytes())
    path.unlink(missing_ok=True)
    return data


async def run(rt: Any, up: Any, cfg: Any) -> dict[str, Any]:
    """The ``phases`` scenario on a gateway started by ``python -m bench.phases serve``."""
    from .scenarios import _fleet

    assert rt.proc is not None
    path = Path(rt.extra["phases_file"])
    plans = {"warm": (cfg.phases_warm, 1, 0.0, 0.0), "cold": (cfg.ttft_serial, 5, 0.01, cfg.ttft_upstream_s)}
    out: dict[str, Any] = {}
    for mode, (n, tokens, interval, first) in plans.items():
        await up.reset()
        await _collect(rt.proc.pid, path)  # what came before (the warm-up) is not this mode's
        failed = 0
        for _ in range(n):
            fleet = _fleet(rt, 1, tokens, interval, first)
            fleet.open()
            ok = await fleet.wait(cfg.deadline(first + tokens * interval))
            await fleet.aclose()
            s = fleet.streams[0]
            failed += int(not ok or s.tokens != tokens or bool(s.error))
        await asyncio.sleep(0.2)  # the last stream's close
        out[mode] = {**summarize((await _collect(rt.proc.pid, path))["stamps"]), "failed": failed, "tokens": tokens,
                     "upstream_ttft_s": first}
    await up.reset()
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--workers" in args:
        raise SystemExit("one worker only: the stamps are kept in this process")
    from .launch_ssegate import from_source

    from_source()
    missing = install()
    if missing:
        print(f"bench.phases: no probe for {', '.join(missing)} in this tree", file=sys.stderr)
    _time_collections()
    signal.signal(signal.SIGUSR1, _dump)
    from ssegate.cli import main as ssegate_main

    return ssegate_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
