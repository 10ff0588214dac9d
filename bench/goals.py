"""The targets ssegate is held to, each read from the results and marked met / not met: the report's first table.

Every goal names the scenario it comes from (its section in docs/benchmarks.md explains how it is measured).
"Reported" rows have no target: figures worth seeing next to the targets (two workers with Redis, the ratio to
nginx, the fastest upstream client of the A/B). A goal whose scenario was measured with the processes pinned to
CPUs (``python -m bench --pin``: the target on a core of its own) is shown but not judged: the targets hold for
the machine as it is, the rig sharing its cores with the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .tables import fmt, result, sub, table

__all__ = ["GOALS", "REPORTED", "Goal", "Row", "rows", "section"]

Res = dict[str, Any]


@dataclass(frozen=True)
class Row:
    what: str
    goal: str
    measured: str
    met: bool | None
    """None: not measured (or, for a reported figure, no target; or measured pinned)."""
    pinned: bool = False
    """Its scenario was measured with ``--pin``: shown, not judged."""


@dataclass(frozen=True)
class Goal:
    what: str
    goal: str
    read: Callable[[Res], tuple[str, bool | None]]
    scenario: str
    """The scenario its figures come from."""


def _pinned(res: Res, scenario: str) -> bool:
    """Some target's result of ``scenario`` was measured with ``--pin``."""
    return any((t.get("pinned") or {}).get(scenario) for t in (res.get("targets") or {}).values())


def _setup(res: Res) -> tuple[str, bool | None]:
    d = result(res, "ssegate", "setup")
    if not d or d.get("gateway_us") is None:
        return "—", None
    v = d["gateway_us"]
    failed = d["attempted"] - d["ok"]
    text = f"{fmt(v)} µs" + (f" ⚠ {failed} of {d['attempted']} streams failed" if failed else "")
    return text, v <= 150 and not failed


SATURATED_PCT = 95.0
"""Below this delivered share a cpu run measured a saturated target: its ratio is shown, not judged."""


def _per_event_ratios(res: Res, num: Callable[[Res, str], tuple[float | None, float]],
                      den: Callable[[Res, str], tuple[float | None, float]], limit: float) -> tuple[str, bool | None]:
    """``num ÷ den`` per event at 50 and 500 streams; met when every ratio measured without saturation is within
    ``limit`` (None when none was)."""
    cells, judged = [], []
    for c in ("50", "500"):
        (a, da), (b, db) = num(res, c), den(res, c)
        if a is None or not b:
            cells.append(f"— @{c}")
            continue
        r = a / b
        if min(da, db) < SATURATED_PCT:
            cells.append(f"{r:.2f}× @{c} (⚠ saturated: {da:.0f}% / {db:.0f}% delivered, not judged)")
        else:
            cells.append(f"{r:.2f}× @{c}")
            judged.append(r <= limit)
    if all(cell.startswith("—") for cell in cells):
        return "—", None
    return ", ".join(cells), (all(judged) if judged else None)


def _us(target: str, scenario: str, with_redis: bool = False) -> Callable[[Res, str], tuple[float | None, float]]:
    """µs per event at ``c`` streams (Redis server's CPU added with ``with_redis``), and the delivered %."""
    def read(res: Res, c: str) -> tuple[float | None, float]:
        d = (result(res, target, scenario) or {}).get(c) or {}
        return _per_event(d, float(d.get("redis_us") or 0.0) if with_redis else 0.0)

    return read


def _per_event(d: dict[str, Any], extra_us: float = 0.0) -> tuple[float | None, float]:
    """(µs per event + ``extra_us``, delivered %) of one concurrency's summary; (None, 0) when not measured."""
    v = d.get("gateway_us")
    if v is None:
        return None, 0.0
    return float(v) + extra_us, float(d.get("delivered_pct") or 0.0)


def _parts(res: Res) -> tuple[str, bool | None]:
    return _per_event_ratios(res, _us("ssegate", "parts"), _parts_text, 1.10)


def _parts_text(res: Res, c: str) -> tuple[float | None, float]:
    """The text runs interleaved with the ``parts`` runs (results from before they were: the ``cpu`` scenario's)."""
    d = ((result(res, "ssegate", "parts") or {}).get(c) or {}).get("text")
    return _us("ssegate", "cpu")(res, c) if d is None else _per_event(d)


def _redis_memory(res: Res, c: str) -> tuple[float | None, float]:
    """The memory-mode runs interleaved with the Redis runs (results from before they were: the ``ssegate`` target's
    ``cpu``)."""
    d = ((result(res, "ssegate+redis", "cpu") or {}).get(c) or {}).get("memory")
    return _us("ssegate", "cpu")(res, c) if d is None else _per_event(d)


def _redis(res: Res) -> tuple[str, bool | None]:
    text, met = _per_event_ratios(res, _us("ssegate+redis", "cpu", with_redis=True), _redis_memory, 1.2)
    if text == "—":
        return text, met
    return f"{text}; Redis server's CPU included", met


def _ttft(n: str, limit_ms: float) -> Callable[[Res], tuple[str, bool | None]]:
    def read(res: Res) -> tuple[str, bool | None]:
        d = (result(res, "ssegate", "ttft") or {}).get(n) or {}
        ref = (result(res, "direct", "ttft") or {}).get(n) or {}
        added = sub(d.get("p99_ms"), ref.get("p99_ms"))
        if added is None:
            return "—", None
        text = f"{added:+.2f} ms (p99 {fmt(d['p99_ms'], 2)} vs direct {fmt(ref['p99_ms'], 2)})"
        if n != "1" and d.get("waiting_ms") is not None:  # (the rig's processes share the machine's cores)
            text += f"; ssegate waited {fmt(d['waiting_ms'], 1)} ms a burst for a core, ran {fmt(d['on_cpu_ms'], 1)}"
        if d.get("failed"):
            text += f" ⚠ {d['failed']} failed"
        return text, added <= limit_ms and not d.get("failed")

    return read


def _capacity(res: Res) -> tuple[str, bool | None]:
    d = result(res, "ssegate", "capacity")
    if not d:
        return "—", None
    return _streams(d), d["capacity"] >= 1000


def _streams(d: dict[str, Any]) -> str:
    """A capacity result: its streams, or below the smallest step tried when even that failed."""
    if d.get("capacity"):
        return f"{d['capacity']} streams"
    steps = [s["streams"] for s in d.get("steps", [])]
    return f"< {min(steps)} streams" if steps else "—"


def _cancel(res: Res) -> tuple[str, bool | None]:
    d = result(res, "ssegate", "cancel")
    if not d or d.get("p99_ms") is None:
        return "—", None
    text = f"p99 {fmt(d['p99_ms'])} ms (p50 {fmt(d['p50_ms'])}, max {fmt(d['max_ms'])}), {d['not_closed']} left open"
    ref = result(res, "direct", "cancel") or {}
    if ref.get("p99_ms") is not None:  # the rig alone: clients closing straight to the upstream
        text += f"; direct p99 {fmt(ref['p99_ms'])} ms"
    return text, d["p99_ms"] <= 50 and not d["not_closed"]


def _w2(res: Res) -> tuple[str, bool | None]:
    d = result(res, "ssegate-w2+redis", "capacity")
    one = result(res, "ssegate", "capacity")
    if not d:
        return "—", None
    return _streams(d) + (f" (one worker, in memory: {_streams(one)})" if one else ""), None


def _vs_nginx(res: Res) -> tuple[str, bool | None]:
    cells = []
    for c in ("50", "500"):
        (a, da), (b, db) = _us("ssegate", "cpu")(res, c), _us("nginx", "cpu")(res, c)
        if a is not None and b:
            cells.append(f"{a / b:.1f}× per event @{c}" + (" (⚠ saturated)" if min(da, db) < SATURATED_PCT else ""))
    s, n = result(res, "ssegate", "setup") or {}, result(res, "nginx", "setup") or {}
    if s.get("gateway_us") and n.get("gateway_us"):
        cells.append(f"{s['gateway_us'] / n['gateway_us']:.1f}× per short stream")
    return (", ".join(cells) or "—"), None


def _ab(res: Res) -> tuple[str, bool | None]:
    out = []
    for c in ("50", "500"):
        found = []
        for name in ("ab-httpclient", "ab-aiohttp", "ab-pycurl"):
            x = (((result(res, name, "ab") or {}).get("cpu") or {}).get(c)) or {}
            if x.get("gateway_us") is not None:
                found.append((x["gateway_us"], name, x.get("delivered_pct") or 0.0))
        if found:
            found.sort(key=lambda f: f[0])
            cells = [f"`{name.removeprefix('ab-')}` {fmt(v)}" + (f" (⚠ {d:.0f}% delivered)" if d < SATURATED_PCT
                                                               else "") for v, name, d in found]
            out.append(f"µs/event @{c}: " + " < ".join(cells))
    return ("; ".join(out) or "—"), None


GOALS = (
    Goal("CPU per short stream (`setup`: 1 token, new connection, 20 at once), ssegate", "≤ 150 µs", _setup,
         "setup"),
    Goal("Reasoning + tool-call events ÷ text, CPU per event (`parts`, text runs interleaved), ssegate", "≤ 1.10×",
         _parts, "parts"),
    Goal("ssegate+redis ÷ ssegate, CPU per event (`cpu`)", "≤ 1.2×", _redis, "cpu"),
    Goal("Added TTFT p99 vs direct, 1 stream (`ttft`)", "≤ 1 ms", _ttft("1", 1.0), "ttft"),
    Goal("Added TTFT p99 vs direct, 100 streams at once (`ttft`)", "≤ 10 ms", _ttft("100", 10.0), "ttft"),
    Goal("Added TTFT p99 vs direct, 1000 streams at once (`ttft`)", "≤ 150 ms", _ttft("1000", 150.0), "ttft"),
    Goal("Capacity at 40 tokens/s, one worker (`capacity`)", "≥ 1000 streams", _capacity, "capacity"),
    Goal("Cancel storm, 1000 clients: every upstream connection closed (`cancel`)", "p99 ≤ 50 ms", _cancel,
         "cancel"),
)
REPORTED = (
    Goal("Capacity at 40 tokens/s, `--workers 2` + Redis (`capacity`)", "reported", _w2, "capacity"),
    Goal("ssegate ÷ nginx (a C byte relay), CPU", "reported", _vs_nginx, "cpu"),
    Goal("Upstream HTTP client A/B (`--ab`), fastest first", "reported", _ab, "ab"),
)


def rows(res: Res) -> list[Row]:
    out = []
    for g in (*GOALS, *REPORTED):
        measured, met = g.read(res)
        if _pinned(res, g.scenario):
            out.append(Row(g.what, g.goal, measured + " (pinned run)", None, pinned=True))
        else:
            out.append(Row(g.what, g.goal, measured, met))
    return out


def section(res: Res) -> str:
    lines = []
    for r in rows(res):
        if r.goal == "reported":
            status = "—"
        elif r.pinned:
            status = "not judged (`--pin`)"
        else:
            status = "not measured" if r.met is None else "met" if r.met else "**not met**"
        lines.append([r.what, r.goal, r.measured, status])
    return table(["what", "target", "measured", "status"], lines)
