"""``python -m bench.before_after OLD_SRC NEW_SRC``: one scenario for two source trees, side by side.

For a change's before/after figures on a machine that other work shares: both gateways (``ssegate serve`` with
``PYTHONPATH`` set to each tree) run at once against one fake upstream, and repetitions of the scenario alternate
between them (and which goes first), so both see the same load. ``--scenario cpu`` (the default) is the ``cpu``
measurement at ``--streams`` streams (a token every 10 ms each), ``parts`` the same with reasoning and tool-call
pieces instead of text; ``setup``, ``ttft``, ``capacity``, ``cancel`` and ``gc`` are the bench's scenarios of those
names (``gc`` on the probed gateway of ``bench/phases.py``). ``--target ssegate+redis`` runs both with the event
log in Redis (a redis-server each; the figures are the gateways' own CPU). Prints each repetition (and, for
``cpu``, ``parts`` and ``setup``, the medians); writes nothing else.

    git archive HEAD~3 src | tar -x -C /tmp/before
    .venv/bin/python -m bench.before_after /tmp/before/src src --reps 6
    .venv/bin/python -m bench.before_after /tmp/before/src src --scenario setup --reps 4
    .venv/bin/python -m bench.before_after /tmp/before/src src --target ssegate+redis --streams 500
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
from typing import Any

from . import gc_pauses
from . import scenarios as sc
from .loadgen import collector_paused
from .proc import free_port, raise_fd_limit, start, wait_http
from .tables import brief
from .targets import ROOT, TARGETS, Running, start_target


async def run(args: argparse.Namespace) -> None:
    cfg = sc.Config()
    up_port = free_port()
    upstream = start("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(up_port)], up_port, cwd=ROOT)
    if not wait_http(upstream, "/health", 15):
        raise SystemExit(f"fake upstream did not start: {upstream.log_tail()}")
    up = sc.Upstream(up_port, upstream.ps)
    gateways: dict[str, Running] = {}
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    try:
        for label, src in (("old", args.old), ("new", args.new)):
            os.environ["PYTHONPATH"] = os.path.abspath(src)
            base = TARGETS["ssegate-probed" if args.scenario == "gc" else args.target]
            target = dataclasses.replace(base, name=f"ssegate-{label}")
            gateways[label] = await asyncio.to_thread(start_target, target, up_port, [])
            await sc.warmup(gateways[label], up)
        for rep in range(args.reps):
            for label in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                with collector_paused():
                    if args.scenario in ("cpu", "parts"):
                        shape = {"parts": 1.0} if args.scenario == "parts" else None
                        r = await sc._cpu_run(gateways[label], up, cfg, args.streams, shape=shape)
                        line = f"{r['gateway_us']} µs/event, {r['delivered_pct']}% delivered"
                    else:
                        runner = gc_pauses.run if args.scenario == "gc" else sc.RUNNERS[args.scenario]
                        r = await runner(gateways[label], up, cfg)
                        line = brief(args.scenario, r)
                runs[label].append(r)
                print(f"rep {rep + 1} {label}: {line}", flush=True)
    finally:
        for rt in gateways.values():
            await asyncio.to_thread(rt.stop)
        await up.aclose()
        upstream.stop()
    for label, rs in runs.items():
        if args.scenario not in ("cpu", "parts", "setup"):
            continue  # each repetition's line above is the comparison
        us = [r["gateway_us"] for r in rs if r.get("gateway_us") is not None]
        if us:
            unit = "µs/stream" if args.scenario == "setup" else "µs/event"
            print(f"{label} ({getattr(args, label)}): median {statistics.median(us):.2f} {unit} "
                  f"(min {min(us):.2f}, max {max(us):.2f}, {len(us)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the `src` directory of the tree measured first (holding ssegate/)")
    parser.add_argument("new", help="the `src` directory of the other tree")
    parser.add_argument("--reps", type=int, default=6, help="repetitions per tree [6]")
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams of `cpu` [50]")
    parser.add_argument("--scenario", default="cpu",
                        choices=("cpu", "parts", "setup", "ttft", "capacity", "cancel", "gc"),
                        help="what to compare [cpu: CPU per event at --streams streams]")
    parser.add_argument("--target", default="ssegate", choices=("ssegate", "ssegate-openai", "ssegate+redis"),
                        help="the gateway's configuration, for both trees [ssegate]")
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
