"""The scenarios: each runs against one started target and returns plain JSON-able results.

- ``cpu``: gateway CPU µs per relayed token at 50 and 500 concurrent streams (a token every 10 ms);
- ``parts``: the same with reasoning and tool-call argument fragments instead of text (``parts=1`` upstream),
  alternating with text; a gateway in Redis mode's ``cpu`` alternates with the same gateway in memory mode;
- ``setup``: gateway CPU µs per short stream (one token, a new client connection per stream, 20 at once);
- ``ttft``: time to first token at 1, 100 and 1000 concurrent streams (added vs ``direct`` in the report);
- ``capacity``: most concurrent 40 tokens/s streams with p99 added inter-token delay < 20 ms;
- ``memory``: RSS growth per 1000 open streams waiting for a slow first token;
- ``cancel``: 1000 streams disconnected at once: time until the upstream sees each connection closed,
  and tokens the upstream wrote after the disconnect;
- ``proxy``: the ``cpu`` measurement at 50 streams for the gateway as started and for a second one whose
  upstream requests go through a loopback HTTP proxy (``HTTP_PROXY`` → tinyproxy), alternating.

Every wait is bounded; a repetition that hits its deadline ends the repetitions of that measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from .loadgen import Fleet, build_request, closed_loop, gaps_in_window
from .proc import Proc, tree_cpu
from .targets import TARGETS, Running, Unavailable, start_target, start_tinyproxy

__all__ = ["SCENARIOS", "Config", "Upstream"]

SCENARIOS = ("memory", "cpu", "parts", "setup", "ttft", "cancel", "capacity", "proxy")


@dataclass
class Config:
    quick: bool = False
    cpu_conc: tuple[int, ...] = (50, 500)
    cpu_settle_s: float = 6.0
    cpu_window_s: float = 4.0
    cpu_reps: int = 3
    ttft_conc: tuple[int, ...] = (1, 100, 1000)
    ttft_serial: int = 30
    ttft_reps: int = 3
    ttft_upstream_s: float = 0.02
    cap_steps: tuple[int, ...] = (250, 500, 1000, 1500, 2000, 2500, 3000)
    cap_below: tuple[int, ...] = (100, 50)
    """Tried, in this order, only when the first step fails, to resolve a capacity below it."""
    cap_window_s: float = 3.0
    cap_interval: float = 0.025
    cap_max_added_ms: float = 20.0
    mem_streams: int = 1000
    mem_reps: int = 2
    cancel_streams: int = 1000
    cancel_reps: int = 2
    cancel_interval: float = 0.5
    cancel_wait_s: float = 5.0
    setup_streams: int = 2000
    setup_in_flight: int = 20
    setup_reps: int = 3
    setup_timeout_s: float = 60.0
    setup_budget_s: float = 30.0
    """No further repetition once the setup scenario has run this long (a slow target gets one)."""
    stall_s: float = 3.0
    """Stop waiting for streams to start when none started for this long."""
    phases_warm: int = 200
    """``phases``: one-token streams sent back to back (its cold streams are the ``ttft`` scenario's single ones)."""
    gc_streams: int = 20_000
    """``gc``: one-token streams, ``setup_in_flight`` at once (``bench/gc_pauses.py``)."""

    @classmethod
    def quick_config(cls) -> Config:
        return cls(quick=True, cpu_settle_s=3.0, cpu_window_s=1.0, cpu_reps=1, ttft_conc=(1, 100), ttft_serial=5,
                   ttft_reps=1, cap_steps=(250, 500), cap_below=(50,), cap_window_s=1.0, mem_streams=300,
                   mem_reps=1, cancel_streams=300, cancel_reps=1, cancel_wait_s=2.0, stall_s=2.0, setup_streams=300,
                   setup_reps=1, setup_timeout_s=30.0, phases_warm=50, gc_streams=3000)

    def deadline(self, nominal_s: float) -> float:
        return 1.5 * nominal_s + 3.0 if self.quick else 2.0 * nominal_s + 5.0


class Upstream:
    """Control of the fake upstream: reset, mark, stats, and its process's CPU."""

    def __init__(self, port: int, ps: Any) -> None:
        self.port = port
        self.ps = ps
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

    async def reset(self, abort: bool = True) -> None:
        await self.client.post("/stats/reset", json={"abort": abort})

    async def mark(self, t: float) -> None:
        await self.client.post("/stats/mark", json={"t": t})

    async def stats(self) -> dict[str, Any]:
        r = await self.client.get("/stats")
        return r.json()  # type: ignore[no-any-return]

    def cpu(self) -> float:
        return tree_cpu(self.ps) if self.ps is not None else 0.0

    async def wait_streams(self, *, at_least: int | None = None, at_most: int | None = None, timeout: float,
                           stall_s: float | None = None) -> dict[str, Any]:
        """Poll until ``streams_active`` reaches the bound, timeout, or (``stall_s``) stops changing."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            st = await self.stats()
            n = st["streams_active"]
            if (at_least is not None and n >= at_least) or (at_most is not None and n <= at_most):
                return st
            now = time.monotonic()
            if n != last:
                last, since = n, now
            if now >= deadline or (stall_s is not None and now - since >= stall_s):
                return st
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        await self.client.aclose()


def pct(values: list[float] | np.ndarray, q: float) -> float | None:
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def _fleet(rt: Running, n: int, tokens: int, interval: float, ttft: float, spread: int = 0,
           shape: dict[str, float] | None = None) -> Fleet:
    host, port, req = build_request(rt.url, native=rt.target.native, tokens=tokens, interval=interval, ttft=ttft,
                                    spread=spread, shape=shape)
    return Fleet(host, port, req, n)


async def warmup(rt: Running, up: Upstream) -> None:
    fleet = _fleet(rt, 20, 10, 0.005, 0.0)
    fleet.open()
    await fleet.wait(15)
    await fleet.aclose()
    await up.reset()


async def probe(rt: Running, timeout: float = 15.0) -> str | None:
    """One short stream; None when it works, else why not."""
    fleet = _fleet(rt, 1, 3, 0.001, 0.0)
    fleet.open()
    await fleet.wait(timeout)
    await fleet.aclose()
    s = fleet.streams[0] if fleet.streams else None
    if s is None or s.error or s.tokens != 3:
        why = s.error if s and s.error else f"{s.tokens if s else 0} of 3 tokens"
        return f"`POST {rt.target.path}`: {why}"
    return None


async def probe_quick(rt: Running) -> bool:
    return await probe(rt, timeout=2.0) is None


# --- cpu ---------------------------------------------------------------------------------------
async def cpu(rt: Running, up: Upstream, cfg: Config, shape: dict[str, float] | None = None) -> dict[str, Any]:
    """Steady state: open the streams, wait until they all flow (bounded), then divide the CPU the gateway
    spent in a window by the tokens the clients received in that window. Connection setup is left out
    (``setup``, TTFT and capacity cover it); a saturated gateway shows as a delivered rate below 100%.
    ``shape``: more of the upstream's words for every stream (``parts``, ``split``). A gateway in Redis mode is
    measured against the same gateway in memory mode (``_cpu_against_memory``)."""
    if rt.redis is not None and shape is None:
        return await _cpu_against_memory(rt, up, cfg)
    out: dict[str, Any] = {}
    for conc in cfg.cpu_conc:
        runs = []
        for _ in range(cfg.cpu_reps):
            runs.append(await _cpu_run(rt, up, cfg, conc, shape=shape))
            if runs[-1]["delivered_pct"] < 50:
                break  # saturated: another repetition would tell the same at the same cost
        out[str(conc)] = _cpu_summary(runs, conc)
    await up.reset()
    return out


_CPU_KEYS = ("gateway_us", "redis_us", "upstream_us", "loadgen_us", "delivered_pct", "gateway_cpu_pct",
             "loadgen_cpu_pct")


def _cpu_summary(runs: list[dict[str, Any]], conc: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {"runs": runs, **_summary(runs, _CPU_KEYS + extra)}
    out["flowing"] = min(r["flowing"] for r in runs)
    out["streams"] = conc
    return out


async def _cpu_run(rt: Running, up: Upstream, cfg: Config, conc: int, proxy: Proc | None = None,
                   shape: dict[str, float] | None = None) -> dict[str, Any]:
    """One repetition of the ``cpu`` measurement at ``conc`` streams (and the CPU of ``proxy``, if given)."""
    interval = 0.01
    await up.reset()
    tokens = int((cfg.cpu_settle_s + cfg.cpu_window_s + 10) / interval)
    fleet = _fleet(rt, conc, tokens, interval, 0.0, spread=conc, shape=shape)
    fleet.open()
    flowing = await fleet.wait_until("t_first", conc, timeout=cfg.cpu_settle_s, stall_s=min(2.0, cfg.stall_s))
    await asyncio.sleep(0.3)

    def proxy_cpu() -> float:
        return tree_cpu(proxy.ps) if proxy is not None else 0.0

    g0, r0, u0, l0, p0, w0 = rt.cpu(), rt.redis_cpu(), up.cpu(), time.process_time(), proxy_cpu(), time.monotonic()
    await asyncio.sleep(cfg.cpu_window_s)
    g1, r1, u1, l1, p1, w1 = rt.cpu(), rt.redis_cpu(), up.cpu(), time.process_time(), proxy_cpu(), time.monotonic()
    fleet.close_all()
    wall = w1 - w0
    events = sum(c for s in fleet.streams for t, c in zip(s.times, s.counts, strict=True) if w0 <= t <= w1)
    st = fleet.stats()
    await fleet.aclose()
    per = _per_event(events)
    run = {
        "events": events, "flowing": flowing, "window_s": round(wall, 3),
        "delivered_pct": round(events / (conc * wall / interval) * 100, 1),
        "gateway_us": per(g1 - g0) if rt.proc else None, "redis_us": per(r1 - r0) if rt.redis else None,
        "upstream_us": per(u1 - u0), "loadgen_us": per(l1 - l0),
        "gateway_cpu_pct": round((g1 - g0) / wall * 100, 1) if rt.proc else None,
        "loadgen_cpu_pct": round((l1 - l0) / wall * 100, 1), "errors": st.errors,
    }
    if proxy is not None:
        run["proxy_us"] = per(p1 - p0)
    await up.reset()
    await asyncio.sleep(0.5)
    return run


async def parts(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    """``cpu`` with reasoning deltas and tool-call argument fragments instead of text tokens, its repetitions
    alternating with repetitions of plain text (``_alternating``), so that the ratio of the two compares figures
    of the same minutes: run one after the other, the ``cpu`` and ``parts`` scenarios saw this machine's speed move
    by more than the difference they measure. The text figures are under ``"text"``."""
    out: dict[str, Any] = {}
    for conc in cfg.cpu_conc:
        runs = await _alternating({
            "parts": lambda c=conc: _cpu_run(rt, up, cfg, c, shape={"parts": 1}),
            "text": lambda c=conc: _cpu_run(rt, up, cfg, c),
        }, cfg.cpu_reps)
        out[str(conc)] = {**_cpu_summary(runs["parts"], conc), "text": _cpu_summary(runs["text"], conc)}
    await up.reset()
    return out


async def _cpu_against_memory(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    """``cpu`` of a gateway in Redis mode (``rt``), its repetitions alternating with those of the same gateway in
    memory mode (a second process, started for them: ``_alternating``), so that the ratio of the two compares
    figures of the same minutes, as ``parts`` does with text: measured minutes apart, the two read 0.95× to 1.29×
    at 50 streams in runs whose instruction counts differed by 5-8%. The memory figures are under ``"memory"``."""
    log: list[str] = []
    mem = await asyncio.to_thread(start_target, TARGETS["ssegate"], up.port, log)
    out: dict[str, Any] = {}
    try:
        why = await probe(mem)
        if why:
            raise Unavailable(f"in memory mode: {why}")
        await warmup(mem, up)
        for conc in cfg.cpu_conc:
            runs = await _alternating({
                "redis": lambda c=conc: _cpu_run(rt, up, cfg, c),
                "memory": lambda c=conc: _cpu_run(mem, up, cfg, c),
            }, cfg.cpu_reps)
            out[str(conc)] = {**_cpu_summary(runs["redis"], conc), "memory": _cpu_summary(runs["memory"], conc)}
    finally:
        rt.companion_cpu_s += mem.cpu()
        await asyncio.to_thread(mem.stop)
    await up.reset()
    return out


async def _alternating(measure: dict[str, Callable[[], Awaitable[dict[str, Any]]]],
                       reps: int) -> dict[str, list[dict[str, Any]]]:
    """Repetitions of two ``cpu`` measurements, alternating, after one unmeasured run of each: which goes first
    alternates too, over an even number of repetitions (``reps`` rounded up), so that neither always runs first
    after the other, nor first at a new concurrency (a first run at 50 streams read 33.5 µs an event, the next two
    of the same kind 27.5 and 29.5). Stops early when either is saturated: another repetition would tell the same
    at the same cost."""
    first, second = measure
    for kind in (first, second):
        await measure[kind]()
    runs: dict[str, list[dict[str, Any]]] = {first: [], second: []}
    for i in range(reps + reps % 2):
        for kind in (first, second) if i % 2 == 0 else (second, first):
            runs[kind].append(await measure[kind]())
        if min(runs[first][-1]["delivered_pct"], runs[second][-1]["delivered_pct"]) < 50:
            break
    return runs


# --- setup --------------------------------------------------------------------------------------
async def setup(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    """The cost of a stream's life apart from its tokens: ``setup_streams`` one-token streams, at most
    ``setup_in_flight`` at once, each on a new client connection (connect, request, head, one token, end,
    close); the gateway's CPU over the whole run (and 0.3 s after, for the closes) divided by the streams that
    ended well. The upstream's connection count shows whether the target reuses its upstream connections."""
    runs = []
    t_start = time.monotonic()
    for _ in range(cfg.setup_reps):
        await up.reset()
        host, port, req = build_request(rt.url, native=rt.target.native, tokens=1, interval=0.0, ttft=0.0)
        (user0, k0), r0, u0, l0, w0 = rt.cpu_split(), rt.redis_cpu(), up.cpu(), time.process_time(), time.monotonic()
        g0 = user0 + k0
        streams, finished = await closed_loop(host, port, req, cfg.setup_streams, cfg.setup_in_flight,
                                              cfg.setup_timeout_s)
        w_end = time.monotonic()
        await asyncio.sleep(0.3)
        (user1, k1), r1, u1, l1, w1 = rt.cpu_split(), rt.redis_cpu(), up.cpu(), time.process_time(), time.monotonic()
        g1 = user1 + k1
        st = await up.stats()
        good = sum(1 for s in streams if s.ok and s.tokens == 1 and s.t_end)
        errors: dict[str, int] = {}
        for s in streams:
            if not s.ok or s.tokens != 1:
                key = s.error.split(" (")[0] if s.error else f"{s.tokens} tokens"
                errors[key] = errors.get(key, 0) + 1
        per = _per_event(good)
        runs.append({
            "streams": len(streams), "ok": good, "finished": finished, "errors": errors,
            "wall_s": round(w_end - w0, 3), "streams_per_s": round(good / (w_end - w0), 1) if good else 0,
            "gateway_us": per(g1 - g0) if rt.proc else None, "gateway_system_us": per(k1 - k0) if rt.proc else None,
            "redis_us": per(r1 - r0) if rt.redis else None,
            "upstream_us": per(u1 - u0), "loadgen_us": per(l1 - l0),
            "gateway_cpu_pct": round((g1 - g0) / (w1 - w0) * 100, 1) if rt.proc else None,
            "upstream_connections": st["chat_connections"], "upstream_requests": st["chat_requests"],
        })
        await up.reset()
        await asyncio.sleep(0.5)
        if not finished or time.monotonic() - t_start > cfg.setup_budget_s:
            break
    out = {"runs": runs, "in_flight": cfg.setup_in_flight, "streams": cfg.setup_streams,
           **_summary(runs, ("gateway_us", "gateway_system_us", "redis_us", "upstream_us", "loadgen_us",
                             "streams_per_s", "gateway_cpu_pct"))}
    out["ok"] = sum(r["ok"] for r in runs)
    out["attempted"] = sum(r["streams"] for r in runs)
    out["upstream_connections_per_stream"] = round(sum(r["upstream_connections"] for r in runs)
                                                   / max(1, sum(r["upstream_requests"] for r in runs)), 3)
    return out


def _per_event(events: int) -> Any:
    def per(cpu_s: float) -> float | None:
        return round(cpu_s / events * 1e6, 2) if events else None

    return per


def _summary(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        res[k] = round(float(np.median(vals)), 2) if vals else None
        if k == "gateway_us" and vals:
            res["gateway_us_min"], res["gateway_us_max"] = min(vals), max(vals)
    return res


# --- ttft ---------------------------------------------------------------------------------------
class _Sched:
    """The target's time on a CPU and waiting for one (``Running.sched``), summed over the measured bursts (or
    single streams): in ms per burst (per stream at 1), None for ``direct``."""

    def __init__(self, rt: Running) -> None:
        self.rt, self.run, self.wait, self.n = rt, 0.0, 0.0, 0
        self._at: tuple[float, float] | None = None

    def __enter__(self) -> None:
        self._at = self.rt.sched()

    def __exit__(self, *exc: object) -> None:
        now = self.rt.sched()
        if now is not None and self._at is not None:
            self.run += now[0] - self._at[0]
            self.wait += now[1] - self._at[1]
            self.n += 1

    def result(self) -> dict[str, float | None]:
        n = self.n
        return {"on_cpu_ms": round(self.run / n * 1000, 2) if n else None,
                "waiting_ms": round(self.wait / n * 1000, 2) if n else None}


async def ttft(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    """Each level's p50/p99/max TTFT, and the target's CPU time in each burst: on a core, and runnable but
    waiting for one (``on_cpu_ms``, ``waiting_ms``: the rig's processes share this machine's cores with the target,
    and a burst keeps all three busy)."""
    out: dict[str, Any] = {}
    tokens, interval, first = 5, 0.01, cfg.ttft_upstream_s
    nominal = first + tokens * interval
    for conc in cfg.ttft_conc:
        ttfts: list[float] = []
        failed = 0
        timed_out = False
        sched = _Sched(rt)
        await up.reset()
        if conc == 1:
            for _ in range(cfg.ttft_serial):
                with sched:
                    fleet = _fleet(rt, 1, tokens, interval, first)
                    fleet.open()
                    ok = await fleet.wait(cfg.deadline(nominal))
                await fleet.aclose()
                s = fleet.streams[0]
                if s.ttft is None or s.error:
                    failed += 1
                else:
                    ttfts.append(s.ttft)
                if not ok:
                    timed_out = True
                    break
        else:
            for _ in range(cfg.ttft_reps):
                with sched:
                    fleet = _fleet(rt, conc, tokens, interval, first)
                    fleet.open()
                    ok = await fleet.wait(cfg.deadline(nominal + conc / 500))
                await fleet.aclose()
                for s in fleet.streams:
                    if s.ttft is None or s.error:
                        failed += 1
                    else:
                        ttfts.append(s.ttft)
                failed += conc - len(fleet.streams)
                await up.reset()
                if not ok:
                    timed_out = True
                    break
        out[str(conc)] = {"n": len(ttfts), "failed": failed, "timed_out": timed_out,
                          "p50_ms": _ms(pct(ttfts, 50)), "p99_ms": _ms(pct(ttfts, 99)),
                          "max_ms": _ms(max(ttfts) if ttfts else None), **sched.result()}
    await up.reset()
    return out


# --- capacity -----------------------------------------------------------------------------------
async def capacity(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best = 0
    interval = cfg.cap_interval
    plan = list(cfg.cap_steps)
    while plan:
        n = plan.pop(0)
        await up.reset()
        ramp = max(0.25, n / 1000)
        tokens = int((ramp + 1.0 + cfg.cap_window_s + 10) / interval)
        fleet = _fleet(rt, n, tokens, interval, 0.0)
        fleet.open(ramp)
        await asyncio.sleep(ramp + 1.0)
        g0, l0, u0, w0 = rt.cpu(), time.process_time(), up.cpu(), time.monotonic()
        await asyncio.sleep(cfg.cap_window_s)
        g1, l1, u1, w1 = rt.cpu(), time.process_time(), up.cpu(), time.monotonic()
        fleet.close_all()
        added, silent = gaps_in_window(fleet.streams, w0, w1, interval)
        st = fleet.stats()
        errors = sum(st.errors.values()) - 0
        p99 = pct(added, 99)
        wall = w1 - w0
        passed = bool(silent == 0 and errors == 0 and st.opened == n and p99 is not None
                      and p99 * 1000 < cfg.cap_max_added_ms)
        steps.append({
            "streams": n, "pass": passed, "silent": silent, "errors": st.errors, "with_first": st.with_first,
            "p50_added_ms": _ms(pct(added, 50)), "p99_added_ms": _ms(p99), "max_added_ms": _ms(max(added, default=0)),
            "tokens_per_s": round(sum(1 for _ in added) / wall) if wall else None,
            "gateway_cpu_pct": round((g1 - g0) / wall * 100, 1) if rt.proc else None,
            "loadgen_cpu_pct": round((l1 - l0) / wall * 100, 1),
            "upstream_cpu_pct": round((u1 - u0) / wall * 100, 1),
        })
        await fleet.aclose()
        await up.reset()
        await up.wait_streams(at_most=0, timeout=3)
        await asyncio.sleep(1.0)  # let the gateway notice the disconnects
        if passed:
            best = max(best, n)
            if n < cfg.cap_steps[0]:
                break  # resolving below the first step: the largest passing one is the answer
        elif n == cfg.cap_steps[0]:
            plan = [m for m in cfg.cap_below if m < n]
        elif n > cfg.cap_steps[0]:
            break
    return {"capacity": best, "steps": steps, "interval_s": interval, "limit_ms": cfg.cap_max_added_ms,
            "bounded_at": max(cfg.cap_steps)}


# --- memory -------------------------------------------------------------------------------------
async def memory(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    runs = []
    n = cfg.mem_streams
    for _ in range(cfg.mem_reps):
        await up.reset()
        await asyncio.sleep(0.5)
        rss0 = rt.rss()
        fleet = _fleet(rt, n, 1, 0.01, 300.0)  # the first token never comes while we measure
        fleet.open(ramp_s=n / 2000)
        st = await up.wait_streams(at_least=n, timeout=10, stall_s=cfg.stall_s)
        reached = st["streams_active"]
        await asyncio.sleep(2.5)  # past the gateway's commit timeout (2 s): headers sent, heartbeats armed
        rss1 = max(rt.rss() for _ in range(3))
        fstats = fleet.stats()
        await fleet.aclose()
        await up.reset()
        runs.append({
            "streams": n, "reached_upstream": reached, "rss0_mb": round(rss0 / 2**20, 1),
            "rss1_mb": round(rss1 / 2**20, 1),
            # fewer than half the streams open says more about the target than its memory: no figure then
            "mb_per_1000": round((rss1 - rss0) / 2**20 / reached * 1000, 2) if reached >= n / 2 else None,
            "client_errors": fstats.errors, "with_head": fstats.with_head,
        })
        await asyncio.sleep(1.0)
        if reached < n:
            break
    vals = [r["mb_per_1000"] for r in runs if r["mb_per_1000"] is not None]
    return {"runs": runs, "mb_per_1000": round(float(np.median(vals)), 2) if vals else None,
            "reached_upstream": min(r["reached_upstream"] for r in runs), "streams": n}


# --- cancel -------------------------------------------------------------------------------------
async def cancel(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    runs = []
    lat_all: list[float] = []
    n = cfg.cancel_streams
    for _ in range(cfg.cancel_reps):
        await up.reset()
        fleet = _fleet(rt, n, 100_000, cfg.cancel_interval, 0.0)
        fleet.open(ramp_s=n / 1000)
        have = await fleet.wait_until("t_first", n, timeout=10, stall_s=cfg.stall_s)
        await asyncio.sleep(0.5)
        mark = time.monotonic() + 0.2
        await up.mark(mark)
        await asyncio.sleep(max(0.0, mark - time.monotonic()))
        t0, t1 = fleet.close_all()
        st = await up.wait_streams(at_most=0, timeout=cfg.cancel_wait_s)
        lat = [t - t0 for t in st["peer_closed_after_mark"]]
        lat_all += lat
        active = st["active_at_mark"]
        runs.append({
            "streams": n, "streaming_at_disconnect": active, "clients_with_tokens": have,
            "closed": len(lat), "not_closed": st["streams_active"], "wait_s": cfg.cancel_wait_s,
            "close_loop_ms": round((t1 - t0) * 1000, 2),
            "p50_ms": _ms(pct(lat, 50)), "p99_ms": _ms(pct(lat, 99)), "max_ms": _ms(max(lat, default=None)),
            "tokens_after": st["tokens_after_mark"],
            "tokens_after_per_stream": round(st["tokens_after_mark"] / active, 2) if active else None,
        })
        await fleet.aclose()
        await up.reset()
        await asyncio.sleep(1.0)
        if st["streams_active"]:
            break
    return {
        "runs": runs, "streams": n, "interval_s": cfg.cancel_interval,
        "p50_ms": _ms(pct(lat_all, 50)), "p99_ms": _ms(pct(lat_all, 99)), "max_ms": _ms(max(lat_all, default=None)),
        "not_closed": sum(r["not_closed"] for r in runs),
        "streaming_at_disconnect": sum(r["streaming_at_disconnect"] for r in runs),
        "tokens_after_per_stream": runs[0]["tokens_after_per_stream"] if len(runs) == 1 else (
            round(float(np.median([r["tokens_after_per_stream"] or 0 for r in runs])), 2)),
    }


# --- proxy --------------------------------------------------------------------------------------
PROXY_STREAMS = 50


async def proxy(rt: Running, up: Upstream, cfg: Config) -> dict[str, Any]:
    """The gateway's CPU per relayed event at 50 streams, direct (``rt``) and with its upstream requests going
    through a loopback HTTP proxy (a second gateway, ``HTTP_PROXY`` pointing at tinyproxy), repetitions of the two
    alternating (``_alternating``) so that both see the same machine. The proxy's own CPU per event is
    reported apart."""
    if rt.target.kind != "ssegate":
        raise Unavailable("the proxy scenario measures ssegate")
    log: list[str] = []
    tinyproxy = await asyncio.to_thread(start_tinyproxy)
    via: Running | None = None
    try:
        via = await asyncio.to_thread(start_target, rt.target, up.port, log,
                                      {"HTTP_PROXY": f"http://127.0.0.1:{tinyproxy.port}"})
        why = await probe(via)
        if why:
            raise Unavailable(f"through the proxy: {why}")
        await warmup(via, up)
        runs = await _alternating({
            "direct": lambda: _cpu_run(rt, up, cfg, PROXY_STREAMS),
            "proxy": lambda: _cpu_run(via, up, cfg, PROXY_STREAMS, tinyproxy),
        }, cfg.cpu_reps)
    finally:
        rt.companion_cpu_s += tree_cpu(tinyproxy.ps) + (via.cpu() if via is not None else 0.0)
        if via is not None:
            await asyncio.to_thread(via.stop)
        tinyproxy.stop(grace=2.0)
    await up.reset()
    return {"direct": _cpu_summary(runs["direct"], PROXY_STREAMS),
            "proxy": _cpu_summary(runs["proxy"], PROXY_STREAMS, ("proxy_us",)), "proxy_server": "tinyproxy"}


RUNNERS = {"cpu": cpu, "parts": parts, "setup": setup, "ttft": ttft, "capacity": capacity, "memory": memory,
           "cancel": cancel, "proxy": proxy}
