"""``python -m bench``: run the benchmark suite and rewrite ``docs/benchmarks.md``.

One fake upstream serves the whole run; each target is started once (and again if it dies or wedges), runs
its scenarios, and is stopped. Results go to ``bench/results/latest.json`` (merged with the previous run
when ``--only`` or ``--targets`` narrows this one), then the report is rendered from that file. ``--ab`` adds
the A/B of upstream HTTP clients (``bench/ab.py``: the gateway with its own client, aiohttp, libcurl).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata as md
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any

import orjson

from . import ab, gc_pauses, phases
from . import scenarios as sc
from .loadgen import collector_paused
from .proc import RESULTS, free_port, pin, pinned, raise_fd_limit, start, wait_http
from .report import write_report
from .tables import brief
from .targets import LITELLM_VENV, ROOT, TARGETS, Running, Unavailable, nginx_version, start_target

PEER = ("memory", "cpu", "setup", "ttft", "cancel", "capacity")
PLAN: dict[str, tuple[str, ...]] = {
    "direct": ("cpu", "setup", "ttft", "cancel", "capacity"),
    "ssegate": ("memory", "cpu", "parts", "setup", "ttft", "cancel", "capacity", "proxy"),
    "ssegate-openai": ("cpu", "setup", "ttft"),
    "ssegate+redis": ("cpu", "setup"),
    "ssegate-w2+redis": ("capacity",),
    "ssegate-probed": ("phases", "gc"),
    "ssegate+redis-probed": ("gc",),
    "nginx": ("cpu", "setup", "ttft"),
    "httpx_relay": PEER,
    "fastapi_native_openai": PEER,
    "sync_sdk": PEER,
    "litellm": PEER,
}
AB_PLAN: dict[str, tuple[str, ...]] = {name: ("ab",) for name in ab.TARGETS}
"""Run with ``--ab`` (or when named in ``--targets``)."""
RUNNERS = {**sc.RUNNERS, "ab": ab.run, "phases": phases.run, "gc": gc_pauses.run}
SCENARIOS = (*sc.SCENARIOS, "phases", "gc", "ab")
LATEST = RESULTS / "latest.json"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import psutil

    compiled = list((ROOT / "src" / "ssegate").rglob("*.so"))  # make compile (scripts/compile.py)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(), "compiled_modules": len(compiled)}


def _packages() -> dict[str, str]:
    out = {}
    for name in ("ssegate", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx", "aiohttp", "openai",
                 "orjson", "pydantic", "redis", "pycurl"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _libcurl() -> str:
    try:
        import pycurl
    except ImportError:
        return "not installed"
    return next((p.split("/", 1)[1] for p in pycurl.version.split() if p.startswith("libcurl/")), "?")


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _meta(mode: str) -> dict[str, Any]:
    litellm_py = LITELLM_VENV / "bin" / "python"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "mode": mode, "machine": _machine(),
        "packages": _packages(),
        "litellm": _cmd([str(litellm_py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
        if litellm_py.exists() else "not installed",
        "redis": (_cmd(["redis-server", "--version"]).split(" v=")[-1].split(" ")[0] or "?"),
        "nginx": nginx_version(),
        "libcurl": _libcurl(),
        "commit": _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?",
    }


async def _health(rt: Running) -> bool:
    """Alive and answering a short stream (a busy target gets one more chance a second later)."""
    if rt.proc is None:
        return True
    if not rt.alive():
        return False
    if await sc.probe_quick(rt):
        return True
    await asyncio.sleep(1.0)
    return await sc.probe_quick(rt)


async def _wait_quiet(limit_s: float, up: sc.Upstream) -> float:
    """Wait (at most ``limit_s``) until other processes use < 25% of a core over 3 s; return their last %."""
    deadline = time.monotonic() + limit_s
    while True:
        probe = _Noise(Running(TARGETS["direct"], 0), up)
        await asyncio.sleep(3)
        other = probe.other_cpu_pct()
        if other < 25 or time.monotonic() >= deadline:
            return other
        log(f"other processes use {other}% CPU: waiting for a quieter machine")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = sc.Config.quick_config() if args.quick else sc.Config()
    mode = "quick" if args.quick else "full"
    t_start = time.monotonic()
    budget = args.budget or (420 if args.quick else 1800)
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    plan = {**PLAN, **AB_PLAN}
    names = args.targets.split(",") if args.targets else list(PLAN) + (list(AB_PLAN) if args.ab else [])
    for bad in (only - set(SCENARIOS)) | (set(names) - set(plan)):
        raise SystemExit(f"unknown scenario or target: {bad}")
    narrowed = bool(args.only or args.targets)
    res: dict[str, Any] = {"targets": {}}
    if narrowed and LATEST.exists():
        res = orjson.loads(LATEST.read_bytes())
    meta = _meta(mode)
    meta["scenario_modes"] = {**res.get("meta", {}).get("scenario_modes", {}), **{s: mode for s in only}}
    meta["log"] = []
    routed = {"ssegate_config": args.ssegate_config, "ssegate_models": args.ssegate_models}
    if args.ssegate_config or args.ssegate_models:
        meta["ssegate_routing"] = args.ssegate_config or f"a generated table of {args.ssegate_models} models"
    meta["config_by_mode"] = {**res.get("meta", {}).get("config_by_mode", {}), mode: dataclasses.asdict(cfg)}
    # what each run merged into these results measured (the report says which figures are from which run)
    run_record = {"date": meta["date"], "commit": meta.get("commit", "?"), "mode": mode,
                  "scenarios": sorted(only) if args.only else "all", "targets": names if args.targets else "all",
                  **({"pinned": pinned()} if pinned() else {})}
    meta["runs"] = [*(res.get("meta", {}).get("runs", []) if narrowed else []), run_record][-8:]
    res["meta"] = meta

    up_port = free_port()
    upstream = start("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(up_port)], up_port, cwd=ROOT,
                     role="rig")
    if not wait_http(upstream, "/health", 15):
        raise SystemExit(f"fake upstream did not start: {upstream.log_tail()}")
    up = sc.Upstream(up_port, upstream.ps)
    if args.wait_quiet:
        t_wait = time.monotonic()
        meta["other_cpu_at_start_pct"] = await _wait_quiet(args.wait_quiet, up)
        meta["waited_quiet_s"] = round(time.monotonic() - t_wait)
        t_start += time.monotonic() - t_wait  # the budget is for measuring, not for waiting
    try:
        for name in names:
            todo = [s for s in plan[name] if s in only]
            if not todo:
                continue
            entry = res["targets"].setdefault(name, {})
            entry.pop("unavailable", None)
            entry["notes"] = []
            scen = entry.setdefault("scenarios", {})
            for s in todo:
                scen.pop(s, None)
                entry.get("other_cpu_pct", {}).pop(s, None)
            if time.monotonic() - t_start > budget:
                meta["log"].append(f"{name}: skipped, time budget ({budget} s) spent")
                entry["unavailable"] = "skipped: time budget spent"
                continue
            log(f"starting {name}")
            try:
                rt = await asyncio.to_thread(start_target, TARGETS[name], up_port, meta["log"], **routed)
                why = await sc.probe(rt)
                if why:
                    rt.stop()
                    raise Unavailable(why)
            except (Unavailable, OSError, RuntimeError) as e:
                log(f"{name}: not available: {e}")
                entry["unavailable"] = str(e)
                meta["log"].append(f"{name}: not available: {e}")
                continue
            entry["startup_s"] = rt.extra.get("startup_s")
            try:
                await sc.warmup(rt, up)
                for s in todo:
                    if time.monotonic() - t_start > budget:
                        meta["log"].append(f"{name}/{s}: skipped, time budget ({budget} s) spent")
                        continue
                    if not await _health(rt):
                        entry["notes"].append(f"restarted before {s}")
                        log(f"{name}: unhealthy, restarting")
                        rt.stop()
                        rt = await asyncio.to_thread(start_target, TARGETS[name], up_port, meta["log"], **routed)
                        await sc.warmup(rt, up)
                    waited = await _measure(rt, up, cfg, args, s, entry, meta)
                    t_start += waited
            except (Unavailable, OSError, RuntimeError) as e:
                entry["notes"].append(f"could not restart: {e}")
            finally:
                await asyncio.to_thread(rt.stop)
    finally:
        await up.aclose()
        upstream.stop()
    meta["elapsed_s"] = round(time.monotonic() - t_start)
    meta["litellm"] = _meta(mode)["litellm"]  # installed during the run, when it was not yet
    return res


NOISY_PCT = 25.0
"""A scenario measured while other processes used more than this (% of one core) is noisy."""


async def _wait(up: sc.Upstream, limit_s: float, meta: dict[str, Any]) -> float:
    t_wait = time.monotonic()
    await _wait_quiet(limit_s, up)
    waited = time.monotonic() - t_wait
    meta["waited_quiet_s"] = round(meta.get("waited_quiet_s", 0) + waited)
    return waited


async def _measure(rt: Running, up: sc.Upstream, cfg: sc.Config, args: argparse.Namespace, s: str,
                   entry: dict[str, Any], meta: dict[str, Any]) -> float:
    """Run scenario ``s`` on ``rt`` into ``entry`` (again, up to ``--retry-noisy`` times, while other processes
    used more than ``NOISY_PCT`` of a core meanwhile: the least noisy result is kept); return the seconds spent
    waiting for a quieter machine (``--quiet-each``), which the time budget does not count."""
    scen, noise = entry["scenarios"], entry.setdefault("other_cpu_pct", {})
    name = rt.target.name
    waited = 0.0
    for attempt in range(1 + args.retry_noisy):
        if args.quiet_each or attempt:
            waited += await _wait(up, args.quiet_each or 60, meta)
        t0 = time.monotonic()
        log(f"{name}: {s}" + (f" (again: {noise[s]}% CPU used by other processes)" if attempt else ""))
        probe = _Noise(rt, up)
        try:
            with collector_paused():
                got = await RUNNERS[s](rt, up, cfg)
        except Exception as e:  # a broken target must not end the run: record and go on
            log(f"{name}/{s} failed: {e!r}")
            meta["log"].append(f"{name}/{s}: error {e!r}")
            with contextlib.suppress(Exception):
                await up.reset()
            return waited
        other = probe.other_cpu_pct()
        if s not in scen or other < noise[s]:
            scen[s], noise[s] = got, other
            pins = entry.setdefault("pinned", {})
            how = pinned()
            if how:
                pins[s] = how
            else:
                pins.pop(s, None)
        log(f"{name}: {s} done in {time.monotonic() - t0:.1f} s: {brief(s, got)} [other processes: {other}% CPU]")
        if noise[s] < NOISY_PCT or not await _health(rt):
            break
    return waited


class _Noise:
    """CPU that processes outside the bench used while a scenario ran (other users of the machine), in % of
    one core: system busy time minus the bench's own processes (target, Redis, upstream, this process, and what a
    scenario ran beside the target: ``Running.companion_cpu_s``)."""

    def __init__(self, rt: Running, up: sc.Upstream) -> None:
        self.rt, self.up = rt, up
        self.t0, self.sys0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
                     + getattr(t, "steal", 0))

    def _own(self) -> float:
        rt = self.rt
        return rt.cpu() + rt.redis_cpu() + rt.companion_cpu_s + self.up.cpu() + time.process_time()

    def other_cpu_pct(self) -> float:
        wall = time.monotonic() - self.t0
        other = (self._busy() - self.sys0) - (self._own() - self.own0)
        return round(max(0.0, other) / wall * 100, 1) if wall > 0 else 0.0


def _interrupted(signum: int, frame: Any) -> None:
    signal.raise_signal(signal.SIGINT)  # as Ctrl-C: the runner cancels the run, whose cleanups stop the processes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer repetitions and steps")
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--targets", help=f"comma-separated targets: {','.join([*PLAN, *AB_PLAN])}")
    parser.add_argument("--ab", action="store_true", help="also the A/B of upstream HTTP clients "
                        f"({', '.join(AB_PLAN)}; needs pycurl)")
    parser.add_argument("--budget", type=float, help="seconds after which remaining work is skipped "
                        "[1800, quick 420]")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S s for other processes to use < 25%% of a core [0]")
    parser.add_argument("--ssegate-config", metavar="FILE", help="start the ssegate targets with this routing file "
                        "(--config) instead of one upstream; it must route the model `bench` to the bench's upstream")
    parser.add_argument("--ssegate-models", type=int, default=0, metavar="N",
                        help="start the ssegate targets with a generated routing table of N models (the bench's "
                        "model found last, by a catch-all after every wildcard)")
    parser.add_argument("--quiet-each", type=float, default=0, metavar="S",
                        help="before each scenario, wait up to S s for other processes to use < 25%% of a core "
                        "(a machine shared with other work) [0]")
    parser.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                        help="run a scenario again, up to N times, when other processes used over 25%% of a core "
                        "meanwhile; the least noisy result is kept [0]")
    parser.add_argument("--pin", action="store_true", help="each target on a core of its own (the last CPU), the "
                        "load generator and the fake upstream on the others (Linux): what the target adds when the rig "
                        "does not share its core; the results say so and are not judged against the targets")
    parser.add_argument("--report-only", action="store_true", help="re-render docs/benchmarks.md from the "
                        "last results")
    args = parser.parse_args()
    raise_fd_limit()
    if args.pin:
        log(f"pinned: {pin()}")
    # stopped by a signal, the run still stops what it started (a background job ignores SIGINT unless told)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    if args.report_only:
        print(write_report(orjson.loads(LATEST.read_bytes())))
        return
    import uvloop

    try:
        res = uvloop.run(run(args))
    except KeyboardInterrupt:
        log("interrupted: the processes it started are stopped, the last results are left as they were")
        raise SystemExit(130) from None
    RESULTS.mkdir(parents=True, exist_ok=True)
    LATEST.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    doc = write_report(res)
    log(f"wrote {doc.relative_to(ROOT)} and {LATEST.relative_to(ROOT)} in {res['meta']['elapsed_s']} s")


if __name__ == "__main__":
    main()
