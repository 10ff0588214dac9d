"""Reading ``bench/results/latest.json`` and writing Markdown tables: what the report, the charts and the
targets table share."""

from __future__ import annotations

from typing import Any

__all__ = ["AB", "BASELINES", "GATEWAYS", "ORDER", "PEERS", "Bound", "add", "bound", "brief", "fmt", "ratio",
           "ratio_table", "result", "signed", "sub", "table", "targets_with"]

GATEWAYS = ("ssegate", "ssegate-openai", "ssegate+redis", "ssegate-w2+redis")
BASELINES = ("httpx_relay", "fastapi_native_openai", "sync_sdk", "litellm")
PEERS = ("nginx", *BASELINES)
"""What the gateways are compared with: a C byte relay and the Python ways to put a stream behind FastAPI."""
AB = ("ab-httpclient", "ab-aiohttp", "ab-pycurl")
ORDER = ("direct", *GATEWAYS, "ssegate-probed", "ssegate+redis-probed", *PEERS, *AB)


def fmt(v: Any, nd: int = 1, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}{unit}"
        return f"{v:.{nd}f}{unit}"
    return f"{v}{unit}"


Bound = tuple[float | None, str]
"""A metric value and what it is: "" exact, ">=" a lower bound (the true value is at least this), "<=" an
upper bound (a run that timed out, or a capacity below the smallest step)."""


def ratio(a: float | Bound | None, b: float | Bound | None) -> str:
    (va, ka), (vb, kb) = bound(a), bound(b)
    if va is None or vb is None or vb == 0 or va < 0 or vb < 0:
        return "—"
    # a / b grows with a and shrinks with b
    up = ka == ">=" or kb == "<="
    down = ka == "<=" or kb == ">="
    if up and down:
        return "—"
    r = va / vb
    text = f"{r:.1g}×" if r < 0.01 else f"{r:.2f}×" if r < 10 else f"{r:.0f}×"
    return ("≥ " if up else "≤ " if down else "") + text


def bound(v: float | Bound | None) -> Bound:
    if isinstance(v, tuple):
        return v
    return v, ""


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def targets_with(res: dict[str, Any], scenario: str) -> list[str]:
    return [t for t in ORDER if scenario in res["targets"].get(t, {}).get("scenarios", {})]


def result(res: dict[str, Any], target: str, scenario: str) -> dict[str, Any] | None:
    return res["targets"].get(target, {}).get("scenarios", {}).get(scenario)


def ratio_table(res: dict[str, Any], scenario: str, metric: Any, what: str) -> str:
    """ssegate variants (rows) ÷ each peer (columns: nginx, then the Python baselines) on one metric."""
    gws = [g for g in GATEWAYS if result(res, g, scenario)]
    bls = [b for b in PEERS if result(res, b, scenario)]
    if not gws or not bls:
        return ""
    rows = []
    for g in gws:
        mg = metric(result(res, g, scenario))
        rows.append([f"**{g}**"] + [ratio(mg, metric(result(res, b, scenario))) for b in bls])
    return f"Ratio {what}:\n\n" + table(["gateway ÷", *bls], rows) + "\n"


def signed(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:+,.0f}" if abs(v) >= 1000 else f"{v:+.2f}"


def sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 3)


def brief(s: str, r: Any) -> str:
    """One line of a scenario's result, for the run's log."""
    if not r:
        return "no result"
    if s in ("cpu", "parts"):
        return ", ".join(f"@{c}: {v.get('gateway_us')} µs/ev ({v.get('delivered_pct')}% delivered)"
                         for c, v in r.items())
    if s == "setup":
        return (f"{r.get('gateway_us')} µs/stream, {r['ok']}/{r['attempted']} ok, "
                f"{r['upstream_connections_per_stream']} upstream connections per stream")
    if s == "ab":
        return f"{brief('cpu', r.get('cpu'))}; checks {r.get('checks')}"
    if s == "ttft":
        return ", ".join(f"@{c}: p50 {v['p50_ms']} p99 {v['p99_ms']} ms" for c, v in r.items())
    if s == "capacity":
        return f"capacity {r['capacity']}"
    if s == "memory":
        return f"{r['mb_per_1000']} MB/1000 streams"
    if s == "proxy":
        return ", ".join(f"{k}: {r[k].get('gateway_us')} µs/ev ({r[k].get('delivered_pct')}% delivered)"
                         for k in ("direct", "proxy")) + f", proxy process {r['proxy'].get('proxy_us')} µs/ev"
    if s == "phases":
        total = "= accept to upstream request written"
        return ", ".join(f"{m}: accept to upstream request {r[m]['steps'][total]['median_us']} µs ({r[m]['streams']} "
                         "streams)" for m in ("warm", "cold") if m in r)
    if s == "gc":
        g0 = r["generations"]["0"]
        return (f"generation 0: {g0['collections']} collections in {r['streams']} streams"
                + (f", pause p50 {g0['pause_p50_ms']} max {g0['pause_max_ms']} ms" if g0["collections"] else ""))
    if s == "cancel":
        return (f"close p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms, not closed {r['not_closed']}"
               )
    return ""
