"""Turn ``bench/results/latest.json`` into ``docs/benchmarks.md`` and the charts in ``docs/img/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .targets import LITELLM_PIN, TARGETS

__all__ = ["write_report"]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"

GATEWAYS = ("ssegate", "ssegate-openai", "ssegate+redis")
BASELINES = ("httpx_relay", "fastapi_native_openai", "sync_sdk", "litellm")
ORDER = ("direct", *GATEWAYS, *BASELINES)


def _f(v: Any, nd: int = 1, unit: str = "") -> str:
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


def _ratio(a: float | Bound | None, b: float | Bound | None) -> str:
    (va, ka), (vb, kb) = _bound(a), _bound(b)
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


def _bound(v: float | Bound | None) -> Bound:
    if isinstance(v, tuple):
        return v
    return v, ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _targets_with(res: dict[str, Any], scenario: str) -> list[str]:
    return [t for t in ORDER if scenario in res["targets"].get(t, {}).get("scenarios", {})]


def _sc(res: dict[str, Any], target: str, scenario: str) -> dict[str, Any] | None:
    return res["targets"].get(target, {}).get("scenarios", {}).get(scenario)


def _ratio_table(res: dict[str, Any], scenario: str, metric: Any, what: str) -> str:
    """ssegate variants (rows) ÷ each baseline (columns) on one metric."""
    gws = [g for g in GATEWAYS if _sc(res, g, scenario)]
    bls = [b for b in BASELINES if _sc(res, b, scenario)]
    if not gws or not bls:
        return ""
    rows = []
    for g in gws:
        mg = metric(_sc(res, g, scenario))
        rows.append([f"**{g}**"] + [_ratio(mg, metric(_sc(res, b, scenario))) for b in bls])
    return f"Ratio {what}:\n\n" + _table(["gateway ÷", *bls], rows) + "\n"


def _status_rows(res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name in ORDER:
        t = TARGETS[name]
        info = res["targets"].get(name)
        if info is None:
            status = "not run"
        elif info.get("unavailable"):
            status = "**not available**: " + info["unavailable"].replace("|", "\\|").replace("\n", " ")[:300]
        else:
            status = "ran" + (f" (ready in {info['startup_s']} s)" if info.get("startup_s") else "")
            if info.get("notes"):
                status += "; " + "; ".join(info["notes"])
        rows.append([f"`{name}`", t.description, status])
    return rows


# --- sections -----------------------------------------------------------------------------------
def _cpu(res: dict[str, Any]) -> str:
    names = _targets_with(res, "cpu")
    if not names:
        return ""
    concs = sorted({c for n in names for c in _sc(res, n, "cpu") or {}}, key=int)
    direct = _sc(res, "direct", "cpu") or {}
    floor = {c: _add((direct.get(c) or {}).get("upstream_us"), (direct.get(c) or {}).get("loadgen_us"))
             for c in concs}
    rows = []
    for n in names:
        d = _sc(res, n, "cpu") or {}
        row = [f"`{n}`"]
        for c in concs:
            x = d.get(c, {})
            cell = _f(x.get("gateway_us"))
            if x.get("gateway_us_min") is not None and x.get("gateway_us_min") != x.get("gateway_us_max"):
                cell += f" ({_f(x['gateway_us_min'])}–{_f(x['gateway_us_max'])})"
            flow = _f(x.get("delivered_pct"), 0, "%")
            if x and x.get("flowing", 0) < x.get("streams", 0):
                flow += f" ⚠ {x['flowing']}/{x['streams']} flowing"
            over = _sub(x.get("gateway_us"), floor[c]) if n != "direct" else None
            row += [cell, _f(over), flow, _f(x.get("gateway_cpu_pct"), 0, "%")]
        last = d.get(concs[-1], {})
        row += [_f(last.get("redis_us")), _f(last.get("upstream_us")), _f(last.get("loadgen_us"))]
        rows.append(row)
    header = ["target"]
    for c in concs:
        header += [f"µs/event @{c}", f"over floor @{c}", f"delivered @{c}", f"gateway CPU @{c}"]
    header += [f"redis µs/ev @{concs[-1]}", f"upstream µs/ev @{concs[-1]}", f"loadgen µs/ev @{concs[-1]}"]
    text = ""
    if any(v is not None for v in floor.values()):
        text += ("Floor: a relay does at least, per event, one socket read and one socket write, as the rig's own "
                 "processes do in the `direct` run: the upstream writing the token plus the load generator "
                 "reading it cost " + ", ".join(f"{_f(floor[c])} µs @{c}" for c in concs) + " on this machine in "
                 "this run. `over floor` = the target's µs/event minus that: what its own code adds (the "
                 "interpreter, the framework, allocations, wake-ups).\n\n")
    text += _table(header, rows) + "\n\n"
    for c in concs:
        text += _ratio_table(res, "cpu", lambda d, c=c: (d.get(c) or {}).get("gateway_us"),
                             f"of CPU per event at {c} streams (below 1 = the gateway spends less)") + "\n"
    return text


def _ttft(res: dict[str, Any]) -> str:
    names = _targets_with(res, "ttft")
    if not names:
        return ""
    direct = _sc(res, "direct", "ttft") or {}
    concs = sorted({c for n in names for c in _sc(res, n, "ttft") or {}}, key=int)
    rows = []
    for n in names:
        d = _sc(res, n, "ttft") or {}
        row = [f"`{n}`"]
        for c in concs:
            x, ref = d.get(c, {}), direct.get(c, {})
            add50 = _sub(x.get("p50_ms"), ref.get("p50_ms")) if n != "direct" else None
            add99 = _sub(x.get("p99_ms"), ref.get("p99_ms")) if n != "direct" else None
            cell = f"{_f(x.get('p50_ms'), 2)} / {_f(x.get('p99_ms'), 2)}"
            if n != "direct":
                cell += f" ({_signed(add50)} / {_signed(add99)})"
            if x.get("failed"):
                cell += f" ⚠ {x['failed']} failed" + (", timed out" if x.get("timed_out") else "")
            row.append(cell)
        rows.append(row)
    text = _table(["target", *(f"{c} stream{'s' if c != '1' else ''}: p50 / p99 ms (added vs direct)"
                               for c in concs)], rows) + "\n\n"
    for c in concs:
        text += _ratio_table(
            res, "ttft", lambda d, c=c: (_sub((d.get(c) or {}).get("p99_ms"), direct.get(c, {}).get("p99_ms")),
                                         ">=" if (d.get(c) or {}).get("timed_out") else ""),
            f"of added p99 TTFT at {c} concurrent (below 1 = the gateway adds less)") + "\n"
    return text


def _signed(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:+,.0f}" if abs(v) >= 1000 else f"{v:+.2f}"


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 3)


def _capacity(res: dict[str, Any]) -> str:
    names = _targets_with(res, "capacity")
    if not names:
        return ""
    rows = []
    for n in names:
        d = _sc(res, n, "capacity") or {}
        steps = " · ".join(
            f"{s['streams']}: {_f(s['p99_added_ms'], 1)} ms{'' if s['pass'] else ' ✗'}"
            + (f" (silent {s['silent']})" if s.get("silent") else "")
            + (f" (gw {_f(s['gateway_cpu_pct'], 0)}%, lg {_f(s['loadgen_cpu_pct'], 0)}%)"
               if s is d["steps"][-1] else "")
            for s in d.get("steps", []))
        cap = d.get("capacity", 0)
        cap_s = (f"**{cap}**" if cap else f"< {min(s['streams'] for s in d['steps'])}" if d.get("steps") else "—")
        if cap and cap == d.get("bounded_at"):
            cap_s += " (bound reached)"
        rows.append([f"`{n}`", cap_s, steps])
    return (_table(["target", "max streams", "p99 added inter-token delay per step (✗ = failed)"], rows) + "\n\n"
            + _ratio_table(res, "capacity", _capacity_bound,
                           "of capacity (above 1 = the gateway carries more)") + "\n")


def _capacity_bound(d: dict[str, Any]) -> Bound:
    if d.get("capacity"):
        return float(d["capacity"]), ""
    steps = d.get("steps") or []
    return (float(min(s["streams"] for s in steps)), "<=") if steps else (None, "")


def _cancel_bound(d: dict[str, Any]) -> Bound:
    if d.get("not_closed"):
        return float((d.get("runs") or [{}])[0].get("wait_s", 0)) * 1000, ">="
    return d.get("max_ms"), ""


def _memory(res: dict[str, Any]) -> str:
    names = _targets_with(res, "memory")
    if not names:
        return ""
    rows = []
    for n in names:
        d = _sc(res, n, "memory") or {}
        r0 = (d.get("runs") or [{}])[0]
        reached = d.get("reached_upstream")
        note = "" if reached == d.get("streams") else f" ⚠ only {reached} of {d.get('streams')} reached the upstream"
        rows.append([f"`{n}`", _f(d.get("mb_per_1000"), 1) + note, _f(r0.get("rss0_mb")), _f(r0.get("rss1_mb"))])
    return (_table(["target", "MB RSS per 1000 open streams", "RSS before (MB)", "RSS with streams open (MB)"],
                   rows) + "\n\n"
            + _ratio_table(res, "memory", lambda d: d.get("mb_per_1000"),
                           "of memory per stream (below 1 = the gateway uses less)") + "\n")


def _cancel(res: dict[str, Any]) -> str:
    names = _targets_with(res, "cancel")
    if not names:
        return ""
    rows = []
    for n in names:
        d = _sc(res, n, "cancel") or {}
        wait = (d.get("runs") or [{}])[0].get("wait_s")
        nc = d.get("not_closed", 0)
        rows.append([f"`{n}`", _f(d.get("streaming_at_disconnect")), _f(d.get("p50_ms"), 1), _f(d.get("p99_ms"), 1),
                     _f(d.get("max_ms"), 1), (f"**{nc}** (after {wait} s)" if nc else "0"),
                     _f(d.get("tokens_after_per_stream"), 2)])
    return (_table(["target", "upstream streams at disconnect (all reps)", "close p50 ms", "close p99 ms",
                    "close max ms", "upstream streams still open at the end",
                    "tokens written after disconnect, per stream"], rows) + "\n\n"
            + _ratio_table(res, "cancel", _cancel_bound,
                           "of time until every upstream connection is closed (below 1 = faster; a target that "
                           "left some open counts as the wait, a lower bound)") + "\n")


def _proxy(res: dict[str, Any]) -> str:
    rows = []
    for n in _targets_with(res, "proxy"):
        d = _sc(res, n, "proxy") or {}
        for route in ("direct", "proxy"):
            x = d.get(route) or {}
            cell = _f(x.get("gateway_us"))
            if x.get("gateway_us_min") is not None and x.get("gateway_us_min") != x.get("gateway_us_max"):
                cell += f" ({_f(x['gateway_us_min'])}–{_f(x['gateway_us_max'])})"
            what = "direct" if route == "direct" else f"`HTTP_PROXY` → {d.get('proxy_server', 'proxy')}"
            rows.append([f"`{n}`", what, cell, _f(x.get("delivered_pct"), 0, "%"), _f(x.get("proxy_us"))])
    if not rows:
        return ""
    return _table(["target", "upstream route", "gateway µs/event", "delivered", "proxy process µs/event"],
                  rows) + "\n"


# --- charts -------------------------------------------------------------------------------------
def _charts(res: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    IMG.mkdir(parents=True, exist_ok=True)
    made = []
    direct = _sc(res, "direct", "ttft") or {}
    names = [n for n in _targets_with(res, "ttft") if n != "direct"]
    if names and direct:
        concs = sorted(direct, key=int)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        width = 0.8 / len(names)
        for ax, q in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            for i, n in enumerate(names):
                d = _sc(res, n, "ttft") or {}
                added = [_sub(d.get(c, {}).get(q), direct[c].get(q)) for c in concs]
                vals = [float("nan") if a is None else max(0.1, a) for a in added]
                ax.bar([j + i * width for j in range(len(concs))], vals, width, label=n)
            ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(concs))],
                          [f"{c} concurrent" for c in concs])
            ax.set_yscale("log")
            ax.set_title(f"TTFT added vs direct, {q[:3]} (ms, log)")
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(IMG / "bench-ttft-overhead.png", dpi=110)
        plt.close(fig)
        made.append("bench-ttft-overhead.png")
    names = _targets_with(res, "capacity")
    if names:
        caps = [(_sc(res, n, "capacity") or {}).get("capacity", 0) for n in names]
        lowest = [min((s["streams"] for s in (_sc(res, n, "capacity") or {}).get("steps", [])), default=0)
                  for n in names]
        fig, ax = plt.subplots(figsize=(9, 4))
        bars = ax.bar(names, caps, color=["#888" if n == "direct" else "#2a7" if n.startswith("ssegate")
                                          else "#c64" for n in names])
        for b, c, low in zip(bars, caps, lowest, strict=True):
            ax.annotate(str(c) if c else f"< {low}", (b.get_x() + b.get_width() / 2, c), ha="center",
                        va="bottom", fontsize=8)
        ax.set_ylabel("concurrent streams")
        ax.set_title("Capacity: streams at 40 tok/s with p99 added inter-token delay < 20 ms (one worker)")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(IMG / "bench-capacity.png", dpi=110)
        plt.close(fig)
        made.append("bench-capacity.png")
    names = [n for n in _targets_with(res, "cpu") if n != "direct"]
    if names:
        concs = sorted({c for n in names for c in _sc(res, n, "cpu") or {}}, key=int)
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(concs)
        handles: list[Any] = []
        for i, c in enumerate(concs):
            cells = [((_sc(res, n, "cpu") or {}).get(c) or {}) for n in names]
            vals = [x.get("gateway_us") or 0 for x in cells]
            bars = ax.bar([j + i * width for j in range(len(names))], vals, width, color=f"C{i}")
            for b, x in zip(bars, cells, strict=True):
                if (x.get("delivered_pct") or 0) < 50:
                    b.set_hatch("//")
            handles.append(Patch(color=f"C{i}", label=f"{c} streams"))
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="saturated: < 50% delivered"))
        ax.set_xticks([j + width * (len(concs) - 1) / 2 for j in range(len(names))], names, rotation=20, ha="right")
        ax.set_ylabel("CPU µs per relayed event")
        ax.set_yscale("log")
        ax.set_title("Gateway CPU per relayed event (lower is better, log)")
        ax.legend(handles=handles)
        fig.tight_layout()
        fig.savefig(IMG / "bench-cpu.png", dpi=110)
        plt.close(fig)
        made.append("bench-cpu.png")
    return made


def _noise_warning(res: dict[str, Any]) -> list[str]:
    vals = [v for t in res["targets"].values() for v in t.get("other_cpu_pct", {}).values()]
    if not vals or sum(vals) / len(vals) < 25:
        return []
    return [f"> **Noisy run**: other processes used on average {sum(vals) / len(vals):.0f}% of a core (of 200%) "
            "while the scenarios ran (see *Other load on the machine* at the end). Every target got less CPU than "
            "the machine has, so absolute figures are pessimistic and ratios are approximate; re-run "
            "`make bench` (or `python -m bench --wait-quiet 300`) on a quiet machine.", ""]


def _rate(interval: Any) -> str:
    return f"{1 / interval:g}" if isinstance(interval, int | float) and interval > 0 else "?"


# --- the document -------------------------------------------------------------------------------
def write_report(res: dict[str, Any]) -> Path:
    meta = res["meta"]
    charts = _charts(res)
    m = meta["machine"]
    pkgs = ", ".join(f"{k} {v}" for k, v in sorted(meta["packages"].items()))
    modes = sorted({v for v in meta.get("scenario_modes", {}).values()})
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (`python -m bench`): edit bench/report.py, not this file. -->",
        "",
        f"Last run: {meta['date']} ({', '.join(modes) or meta['mode']} mode), commit `{meta.get('commit', '?')}`, "
        f"total {meta.get('elapsed_s', '?')} s.",
        "",
        "Every number here was measured on the machine below, with the load generator, the fake upstream and "
        "the target sharing its cores, over loopback. Read them as ratios between targets on the same "
        "machine, not as absolute capacity of a production host.",
        "",
        *_noise_warning(res),
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory_gb']} GiB; Linux {m['kernel']}",
        f"- Python {m['python']}; {pkgs}",
        f"- LiteLLM: {meta.get('litellm', 'not installed')} (pinned `litellm[proxy]=={LITELLM_PIN}`, in "
        "`bench/.venv-litellm`); redis-server " + meta.get("redis", "?"),
        "",
        "## How to reproduce",
        "",
        "```",
        "make bench                                   # full run, ~11-14 min, rewrites this file",
        ".venv/bin/python -m bench --wait-quiet 300   # first wait (≤ 5 min) for other load to settle",
        ".venv/bin/python -m bench --quick            # ~3 min smoke run (fewer streams, steps, repetitions)",
        ".venv/bin/python -m bench --only cpu,ttft    # some scenarios (merged into the last results)",
        ".venv/bin/python -m bench --targets ssegate,httpx_relay --only capacity",
        ".venv/bin/python -m bench --report-only      # re-render from bench/results/latest.json",
        "```",
        "",
        "Pieces: `bench/upstream.py` (fake OpenAI upstream: raw asyncio protocol on uvloop, one timer heap for "
        "every stream), `bench/loadgen.py` (raw-socket SSE clients on uvloop; counts tokens by the upstream's "
        "token text, so every framing is measured the same way), `bench/baselines/`, `bench/scenarios.py`. "
        "Raw results and process logs: `bench/results/`.",
        "",
        "## Targets",
        "",
        _table(["target", "what", "status"], _status_rows(res)),
        "",
        "All baselines run on uvicorn with one worker (uvloop, httptools, no access log) and an upstream client "
        "pool large enough not to cap concurrency. LiteLLM runs its own CLI (`--num_workers 1`) with its defaults.",
        "",
    ]
    cfgs = meta.get("config_by_mode", {})
    modes_by = meta.get("scenario_modes", {})

    def c(scenario: str, key: str) -> Any:
        return cfgs.get(modes_by.get(scenario, meta["mode"]), {}).get(key, "?")

    sections = [
        ("CPU per relayed event", "cpu", _cpu,
         "Steady state: N streams opened at once, the upstream sending each a token every 10 ms, the streams' "
         "ticks spread evenly over those 10 ms as independent users' are (`spread=N`, bench/upstream.py; "
         "streams that tick together would let a gateway handle several tokens per wake-up); once every "
         f"stream flows (or {c('cpu', 'cpu_settle_s')} s passed), the gateway's CPU time (user + system of "
         f"its process tree, psutil) over a {c('cpu', 'cpu_window_s')} s window divided by the tokens the "
         f"clients received in that window; {c('cpu', 'cpu_reps')} repetitions, median (min–max). "
         "An event is one upstream token received by a client, whatever the framing (a gateway that coalesces "
         "a backlog of tokens into one SSE event is credited with every token). `delivered` = tokens received "
         "÷ what all N streams would receive at 100 tokens/s; ⚠ marks streams still waiting for their first "
         "token when the window opened. Below 100% the target is saturated (or starving new streams), and its "
         "µs/event is the cost at saturation. The redis, upstream and load generator columns show what the rest "
         "of the rig spent per event.", "bench-cpu.png"),
        ("Time to first token", "ttft", _ttft,
         "From the client's connect to the first token in the response; the upstream waits 20 ms before its "
         f"first token. 1 = {c('ttft', 'ttft_serial')} sequential single streams; more = that many opened at "
         f"once ({c('ttft', 'ttft_reps')} repetitions, percentiles over all streams). "
         "`added` = target − direct at the same percentile. ⚠ timed out: some streams had no first token by the "
         "deadline, so the real percentile is at least the one shown (ratios then read ≤). In the chart, "
         "added values ≤ 0.1 ms are drawn at 0.1 ms.", "bench-ttft-overhead.png"),
        ("Capacity at 40 tokens/s per stream", "capacity", _capacity,
         f"Streams opened over N/1000 s, then after 1 s a {c('capacity', 'cap_window_s')} s measuring window; "
         "passes when every stream received tokens in the window, none failed, and the p99 of (inter-token "
         "gap − 25 ms) is below 20 ms (tokens arriving in one read count as gap 0; a stall still running at "
         "the window's end counts). Steps stop at the first failure; when the first step fails, smaller ones "
         f"({c('capacity', 'cap_below')}) are tried. `gw`/`lg` = gateway/load generator CPU in the last step "
         "(100% = one core). `direct` shows the ceiling of the rig itself (load generator + upstream on the "
         "same two cores).", "bench-capacity.png"),
        ("Memory per open stream", "memory", _memory,
         f"{c('memory', 'mem_streams')} streams, {c('memory', 'mem_reps')} repetition(s). RSS growth of the "
         "target's process tree while the streams are open and waiting for a first token that does not come "
         "(upstream TTFT 300 s), measured 2.5 s after the upstream saw all of them (past the gateway's commit "
         "timeout). No figure when fewer than half of the streams reached the upstream.", None),
        ("Cancel storm", "cancel", _cancel,
         f"{c('cancel', 'cancel_streams')} streams at {_rate(c('cancel', 'cancel_interval'))} tokens/s each, "
         "all receiving (at most 10 s to get there); then every client disconnects at once (FIN). Close time "
         "= when the upstream saw each upstream connection closed by the peer, from the moment the clients "
         "started closing. Tokens written after the disconnect = tokens the upstream wrote for those streams "
         "after that moment.", None),
    ]
    sections.append((
        "Through an HTTP proxy", "proxy", _proxy,
        "The CPU-per-event measurement above at 50 streams, for the gateway direct and for a second gateway "
        "started with `HTTP_PROXY` pointing at a loopback tinyproxy (its upstream requests then go through the "
        f"proxy), {c('cpu', 'cpu_reps')} repetitions of each, alternating (and which goes first), median "
        "(min–max). The proxy's own CPU per event is in the last column; the gateway's per-token path is the same "
        "on both routes.", None))
    for title, key, fn, text, chart in sections:
        body = fn(res)
        if not body:
            continue
        mode = meta.get("scenario_modes", {}).get(key)
        parts += [f"## {title}", "", text + (f" ({mode} mode.)" if mode else ""), "", body]
        if chart and chart in charts:
            parts += [f"![{title}](img/{chart})", ""]
    noise = [(n, res["targets"][n].get("other_cpu_pct", {})) for n in ORDER if res["targets"].get(n, {}).get(
        "other_cpu_pct")]
    if noise:
        scen_names = [x for x in ("memory", "cpu", "ttft", "cancel", "capacity", "proxy")
                      if any(x in d for _, d in noise)]
        peak = max(v for _, d in noise for v in d.values())
        parts += ["## Other load on the machine", "",
                  "CPU used by processes outside the bench while each scenario ran (system busy time minus the "
                  "target, Redis, the upstream and the load generator), in % of one core. Anything well above "
                  "zero means another user of the machine (e.g. a test suite) competed for the same two cores "
                  f"and the affected figures are pessimistic; the peak in this run was {peak:.0f}%.", "",
                  _table(["target", *scen_names], [[f"`{n}`", *(_f(d.get(x), 0, "%") for x in scen_names)]
                                                   for n, d in noise]), ""]
    if meta.get("log"):
        parts += ["## Run log", "", *(f"- {line}" for line in meta["log"]), ""]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(parts).rstrip() + "\n")
    return DOC
