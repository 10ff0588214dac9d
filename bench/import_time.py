"""``python -m bench.import_time``: what ``import ssegate.client`` costs a program that uses the client.

Scripts and command-line tools start often, so the client is held to a goal: ``import ssegate.client`` under
``GOAL_MS`` (150 ms). The test suite checks only that the client imports alone (no server, FastAPI, uvicorn,
redis or aiohttp) with a bound that catches a hang; the figure is measured here.

Each run is a fresh interpreter, ``python -X importtime -c "import ssegate.client"``, whose stderr lists every
module imported with its own and its cumulative time. The figure is the cumulative time of the statement's
top-level imports (``ssegate.client`` and whatever ssegate module it pulls in first), the interpreter's own
start-up excluded. The best of ``--runs`` is kept (a shared machine's noise only adds), and the modules that cost
the most of it are listed, so a regression names its cause. Exit status 1 when the best run is over the goal.

    .venv/bin/python -m bench.import_time [--runs 7] [--module ssegate.client]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass

GOAL_MS = 150.0


@dataclass(frozen=True)
class Line:
    name: str
    depth: int
    self_us: int
    cumulative_us: int


def parse(stderr: str) -> list[Line]:
    """The ``import time:`` lines of ``python -X importtime`` (``self | cumulative | <indent>name``)."""
    lines = []
    for raw in stderr.splitlines():
        if not raw.startswith("import time:"):
            continue
        fields = raw[len("import time:"):].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2][1:]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        lines.append(Line(name.strip(), depth, int(fields[0]), int(fields[1])))
    return lines


def measure(module: str) -> tuple[float, list[Line]]:
    """One fresh interpreter importing ``module``: the statement's cost in ms, and the lines of its imports (a
    module's line comes after those of the modules it imported, so the statement's are the last ones, after the
    last top-level line of the interpreter's start-up)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                          text=True, check=True)
    lines = parse(proc.stderr)
    package = module.split(".")[0]

    def ours(ln: Line) -> bool:
        return ln.depth == 0 and (ln.name == package or ln.name.startswith(package + "."))

    startup_end = max((i for i, ln in enumerate(lines) if ln.depth == 0 and not ours(ln)), default=-1)
    statement = lines[startup_end + 1:]
    return sum(ln.cumulative_us for ln in statement if ln.depth == 0) / 1000, statement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_time", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--module", default="ssegate.client")
    parser.add_argument("--top", type=int, default=8, help="how many of the costliest modules to list")
    args = parser.parse_args(argv)
    runs = [measure(args.module) for _ in range(args.runs)]
    figures = [ms for ms, _ in runs]
    best, lines = min(runs, key=lambda run: run[0])
    print(f"import {args.module}: best {best:.1f} ms of {args.runs} runs "
          f"(median {sorted(figures)[len(figures) // 2]:.1f} ms, worst {max(figures):.1f} ms); goal < {GOAL_MS:g} ms")
    print("the costliest modules of the best run (own time, ms):")
    for ln in sorted(lines, key=lambda ln: ln.self_us, reverse=True)[: args.top]:
        print(f"  {ln.self_us / 1000:7.1f}  {ln.name}")
    met = best < GOAL_MS
    print("met" if met else "NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
