"""The report's sections, one function per scenario: results in, Markdown out ("" when nothing ran)."""

from __future__ import annotations

from typing import Any

from .tables import (
    Bound,
    add,
    fmt,
    ratio,
    ratio_table,
    result,
    signed,
    sub,
    table,
    targets_with,
)

__all__ = ["ab", "cancel", "capacity", "cpu", "gc", "memory", "parts", "phases", "proxy", "setup", "ttft"]

Res = dict[str, Any]


def cpu(res: Res) -> str:
    names = targets_with(res, "cpu")
    if not names:
        return ""
    concs = sorted({c for n in names for c in result(res, n, "cpu") or {}}, key=int)
    direct = result(res, "direct", "cpu") or {}
    floor = {c: add((direct.get(c) or {}).get("upstream_us"), (direct.get(c) or {}).get("loadgen_us"))
             for c in concs}
    rows = []
    for n in names:
        d = result(res, n, "cpu") or {}
        row = [f"`{n}`"]
        for c in concs:
            x = d.get(c, {})
            cell = fmt(x.get("gateway_us"))
            if x.get("gateway_us_min") is not None and x.get("gateway_us_min") != x.get("gateway_us_max"):
                cell += f" ({fmt(x['gateway_us_min'])}–{fmt(x['gateway_us_max'])})"
            flow = fmt(x.get("delivered_pct"), 0, "%")
            if x and x.get("flowing", 0) < x.get("streams", 0):
                flow += f" ⚠ {x['flowing']}/{x['streams']} flowing"
            over = sub(x.get("gateway_us"), floor[c]) if n != "direct" else None
            row += [cell, fmt(over), flow, fmt(x.get("gateway_cpu_pct"), 0, "%")]
        last = d.get(concs[-1], {})
        row += [fmt(last.get("redis_us")), fmt(last.get("upstream_us")), fmt(last.get("loadgen_us"))]
        rows.append(row)
    header = ["target"]
    for c in concs:
        header += [f"µs/event @{c}", f"over floor @{c}", f"delivered @{c}", f"gateway CPU @{c}"]
    header += [f"redis µs/ev @{concs[-1]}", f"upstream µs/ev @{concs[-1]}", f"loadgen µs/ev @{concs[-1]}"]
    text = ""
    if any(v is not None for v in floor.values()):
        text += ("Floor: a relay does at least, per event, one socket read and one socket write, as the rig's own "
                 "processes do in the `direct` run: the upstream writing the token plus the load generator "
                 "reading it cost " + ", ".join(f"{fmt(floor[c])} µs @{c}" for c in concs) + " on this machine in "
                 "this run. `over floor` = the target's µs/event minus that: what its own code adds (the "
                 "interpreter, the framework, allocations, wake-ups). (The rig is Python: nginx, a relay written in "
                 "C, can come in under it.)\n\n")
    text += table(header, rows) + "\n\n"
    text += _redis_line(res, concs)
    for c in concs:
        text += ratio_table(res, "cpu", lambda d, c=c: (d.get(c) or {}).get("gateway_us"),
                             f"of CPU per event at {c} streams (below 1 = the gateway spends less)") + "\n"
    return text


def ttft(res: Res) -> str:
    names = targets_with(res, "ttft")
    if not names:
        return ""
    direct = result(res, "direct", "ttft") or {}
    concs = sorted({c for n in names for c in result(res, n, "ttft") or {}}, key=int)
    rows = []
    for n in names:
        d = result(res, n, "ttft") or {}
        row = [f"`{n}`"]
        for c in concs:
            x, ref = d.get(c, {}), direct.get(c, {})
            add50 = sub(x.get("p50_ms"), ref.get("p50_ms")) if n != "direct" else None
            add99 = sub(x.get("p99_ms"), ref.get("p99_ms")) if n != "direct" else None
            cell = f"{fmt(x.get('p50_ms'), 2)} / {fmt(x.get('p99_ms'), 2)}"
            if n != "direct":
                cell += f" ({signed(add50)} / {signed(add99)})"
            if x.get("failed"):
                cell += f" ⚠ {x['failed']} failed" + (", timed out" if x.get("timed_out") else "")
            row.append(cell)
        rows.append(row)
    text = table(["target", *(f"{c} stream{'s' if c != '1' else ''}: p50 / p99 ms (added vs direct)"
                               for c in concs)], rows) + "\n\n"
    text += _ttft_cpu(res, names, concs)
    for c in concs:
        text += ratio_table(
            res, "ttft", lambda d, c=c: (sub((d.get(c) or {}).get("p99_ms"), direct.get(c, {}).get("p99_ms")),
                                         ">=" if (d.get(c) or {}).get("timed_out") else ""),
            f"of added p99 TTFT at {c} concurrent (below 1 = the gateway adds less)") + "\n"
    return text


def _ttft_cpu(res: Res, names: list[str], concs: list[str]) -> str:
    """The targets' CPU time in a burst: on a core, and runnable but waiting for one (``scenarios.ttft``)."""
    rows = []
    pinned = set()
    for n in names:
        d = result(res, n, "ttft") or {}
        how = (res["targets"][n].get("pinned") or {}).get("ttft")
        if how:
            pinned.add(how)
        cells = [(d.get(c) or {}) for c in concs]
        if all(x.get("on_cpu_ms") is None for x in cells):
            continue
        rows.append([f"`{n}`", *(f"{fmt(x.get('on_cpu_ms'), 2)} / {fmt(x.get('waiting_ms'), 2)}" for x in cells)])
    text = ""
    if rows:
        text += ("The target's own processes in these runs: CPU time on a core, and time runnable but waiting for "
                 "one (the scheduler's run queue, `/proc/<pid>/task/*/schedstat`), in ms per stream at 1 and per "
                 "burst above, from its start until its last stream ended. On this machine the load generator and "
                 "the fake upstream run on the same cores as the target: what a target waits delays its streams, "
                 "and `direct` has no third process to wait for.\n\n")
        text += table(["target", *(f"{c}: on a core / waiting, ms" for c in concs)], rows) + "\n\n"
    if pinned:
        text += (f"Measured with `--pin` ({'; '.join(sorted(pinned))}): the target had a core of its own, the load "
                 "generator and the fake upstream shared the other(s). Shown, not judged against the targets.\n\n")
    return text


def capacity(res: Res) -> str:
    names = targets_with(res, "capacity")
    if not names:
        return ""
    rows = []
    for n in names:
        d = result(res, n, "capacity") or {}
        steps = " · ".join(
            f"{s['streams']}: {fmt(s['p99_added_ms'], 1)} ms{'' if s['pass'] else ' ✗'}"
            + (f" (silent {s['silent']})" if s.get("silent") else "")
            + (f" (gw {fmt(s['gateway_cpu_pct'], 0)}%, lg {fmt(s['loadgen_cpu_pct'], 0)}%)"
               if s is d["steps"][-1] else "")
            for s in d.get("steps", []))
        cap = d.get("capacity", 0)
        cap_s = (f"**{cap}**" if cap else f"< {min(s['streams'] for s in d['steps'])}" if d.get("steps") else "—")
        if cap and cap == d.get("bounded_at"):
            cap_s += " (bound reached)"
        rows.append([f"`{n}`", cap_s, steps])
    return (table(["target", "max streams", "p99 added inter-token delay per step (✗ = failed)"], rows) + "\n\n"
            + ratio_table(res, "capacity", _capacity_bound,
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


def memory(res: Res) -> str:
    names = targets_with(res, "memory")
    if not names:
        return ""
    rows = []
    for n in names:
        d = result(res, n, "memory") or {}
        r0 = (d.get("runs") or [{}])[0]
        reached = d.get("reached_upstream")
        note = "" if reached == d.get("streams") else f" ⚠ only {reached} of {d.get('streams')} reached the upstream"
        rows.append([f"`{n}`", fmt(d.get("mb_per_1000"), 1) + note, fmt(r0.get("rss0_mb")), fmt(r0.get("rss1_mb"))])
    return (table(["target", "MB RSS per 1000 open streams", "RSS before (MB)", "RSS with streams open (MB)"],
                   rows) + "\n\n"
            + ratio_table(res, "memory", lambda d: d.get("mb_per_1000"),
                           "of memory per stream (below 1 = the gateway uses less)") + "\n")


def cancel(res: Res) -> str:
    names = targets_with(res, "cancel")
    if not names:
        return ""
    rows = []
    for n in names:
        d = result(res, n, "cancel") or {}
        wait = (d.get("runs") or [{}])[0].get("wait_s")
        nc = d.get("not_closed", 0)
        rows.append([f"`{n}`", fmt(d.get("streaming_at_disconnect")), fmt(d.get("p50_ms"), 1), fmt(d.get("p99_ms"), 1),
                     fmt(d.get("max_ms"), 1), (f"**{nc}** (after {wait} s)" if nc else "0"),
                     fmt(d.get("tokens_after_per_stream"), 2)])
    return (table(["target", "upstream streams at disconnect (all reps)", "close p50 ms", "close p99 ms",
                    "close max ms", "upstream streams still open at the end",
                    "tokens written after disconnect, per stream"], rows) + "\n\n"
            + ratio_table(res, "cancel", _cancel_bound,
                           "of time until every upstream connection is closed (below 1 = faster; a target that "
                           "left some open counts as the wait, a lower bound)") + "\n")


def _redis_line(res: Res, concs: list[str]) -> str:
    base, red = result(res, "ssegate", "cpu") or {}, result(res, "ssegate+redis", "cpu") or {}
    cells = []
    for c in concs:
        r = red.get(c) or {}
        b = (r.get("memory") or base.get(c) or {}).get("gateway_us")  # the interleaved memory runs, when measured
        if b and r.get("gateway_us") is not None:
            total = r["gateway_us"] + (r.get("redis_us") or 0)
            cells.append(f"{total / b:.2f}× @{c} ({fmt(r['gateway_us'])} + Redis {fmt(r.get('redis_us'))} µs vs "
                         f"{fmt(b)} µs)")
    if not cells:
        return ""
    return ("With Redis (the event log in Redis Streams, every event also written there), per event, gateway + "
            "redis-server ÷ ssegate in memory (its runs alternating with the Redis runs): " + "; ".join(cells)
            + ".\n\n")


def parts(res: Res) -> str:
    parts_cpu = result(res, "ssegate", "parts") or {}
    if not parts_cpu:
        return ""
    interleaved = all("text" in v for v in parts_cpu.values())
    text_cpu = ({c: v["text"] for c, v in parts_cpu.items()} if interleaved
                else result(res, "ssegate", "cpu") or {})
    concs = sorted(set(text_cpu) | set(parts_cpu), key=int)
    rows = []
    text_label = "text (interleaved)" if interleaved else "text (`cpu`)"
    for label, d in ((text_label, text_cpu), ("reasoning + tool calls (`parts`)", parts_cpu)):
        row = [label]
        for c in concs:
            x = d.get(c) or {}
            cell = fmt(x.get("gateway_us"))
            if x.get("gateway_us_min") is not None and x.get("gateway_us_min") != x.get("gateway_us_max"):
                cell += f" ({fmt(x['gateway_us_min'])}–{fmt(x['gateway_us_max'])})"
            row += [cell, fmt(x.get("delivered_pct"), 0, "%")]
        rows.append(row)
    row = ["parts ÷ text"]
    for c in concs:
        a, b = (parts_cpu.get(c) or {}).get("gateway_us"), (text_cpu.get(c) or {}).get("gateway_us")
        row += [ratio(a, b), ""]
    rows.append(row)
    header = ["`ssegate`, stream of"]
    for c in concs:
        header += [f"µs/event @{c}", f"delivered @{c}"]
    return table(header, rows) + "\n"


def setup(res: Res) -> str:
    names = targets_with(res, "setup")
    if not names:
        return ""
    direct = result(res, "direct", "setup") or {}
    floor = add(direct.get("upstream_us"), direct.get("loadgen_us"))
    rows = []
    for n in names:
        d = result(res, n, "setup") or {}
        if n == "direct":
            cell = f"{fmt(floor)} (the rig: upstream + load generator)"
        else:
            cell = fmt(d.get("gateway_us"))
            if d.get("gateway_us_min") is not None and d.get("gateway_us_min") != d.get("gateway_us_max"):
                cell += f" ({fmt(d['gateway_us_min'])}–{fmt(d['gateway_us_max'])})"
        ok = f"{d.get('ok')} / {d.get('attempted')}"
        if d.get("ok") != d.get("attempted"):
            errors: dict[str, int] = {}
            for r in d.get("runs", []):
                for k, v in r.get("errors", {}).items():
                    errors[k] = errors.get(k, 0) + v
            ok = f"**{ok}** ({', '.join(f'{k}: {v}' for k, v in errors.items())})"
        kernel = d.get("gateway_system_us")
        share = f" ({kernel / d['gateway_us'] * 100:.0f}%)" if kernel is not None and d.get("gateway_us") else ""
        rows.append([f"`{n}`", cell, "—" if n == "direct" else fmt(kernel) + share, fmt(d.get("streams_per_s"), 0),
                     ok, fmt(d.get("upstream_connections_per_stream"), 2), fmt(d.get("redis_us")),
                     fmt(d.get("upstream_us")), fmt(d.get("loadgen_us"))])
    text = ""
    if floor is not None:
        text += (f"Reference: in the `direct` run the rig's own processes spent {fmt(floor)} µs per stream (the "
                 "load generator connecting, writing a request, reading the answer and closing; the upstream "
                 "accepting and answering), about what any relay in Python pays for the same socket work; nginx "
                 "shows what it costs in C.\n\n")
    text += table(["target", "µs CPU per stream", "of which kernel", "streams/s", "streams ok",
                   "upstream connections opened per stream",
                   "redis µs/stream", "upstream µs/stream", "loadgen µs/stream"], rows) + "\n\n"
    text += ratio_table(res, "setup", lambda d: d.get("gateway_us"),
                        "of CPU per short stream (below 1 = the gateway spends less)") + "\n"
    return text


def phases(res: Res) -> str:
    d = result(res, "ssegate-probed", "phases")
    if not d or not all(m in d for m in ("warm", "cold")):
        return ""
    warm, cold = d["warm"]["steps"], d["cold"]["steps"]
    rows = []
    for step, w in warm.items():
        c = cold.get(step, {})
        wv, cv = w.get("median_us"), c.get("median_us")
        name = f"**{step}**" if step.startswith("=") else step
        rows.append([name, fmt(wv), fmt(cv), f"{cv / wv:.1f}×" if wv and cv else "—"])
    text = table(["step (median of the streams)", "warm µs", "cold µs", "cold ÷ warm"], rows) + "\n\n"
    text += (f"Streams: {d['warm']['streams']} warm ({d['warm']['failed']} failed), {d['cold']['streams']} cold "
             f"({d['cold']['failed']} failed).\n")
    return text


def gc(res: Res) -> str:
    rows, ended = [], []
    for name in targets_with(res, "gc"):
        d = result(res, name, "gc")
        if not d or "generations" not in d:
            continue
        log = "Redis" if "redis" in name else "memory"
        for gen, g in d["generations"].items():
            if not g.get("collections"):
                rows.append([f"`{name}`", log, gen, "0", "—", "—", "—", "—"])
                continue
            rows.append([f"`{name}`", log, gen, str(g["collections"]), fmt(g["streams_per_collection"], 0),
                         fmt(g["pause_p50_ms"]), fmt(g["pause_max_ms"]), fmt(g["collected_mean"], 0)])
        ended.append(f"`{name}` {d['streams']} of {d['attempted']}")
    if not rows:
        return ""
    text = table(["target", "event log", "generation", "collections", "streams per collection", "pause p50 ms",
                  "pause max ms", "objects found in cycles per collection"], rows) + "\n\n"
    text += f"Streams that ended well: {', '.join(ended)}.\n"
    return text


def ab(res: Res) -> str:
    names = targets_with(res, "ab")
    if not names:
        return ""
    rows = []
    for n in names:
        d = result(res, n, "ab") or {}
        cpu_d, checks = d.get("cpu") or {}, d.get("checks") or {}
        row = [f"`{n.removeprefix('ab-')}`"]
        for c in sorted(cpu_d, key=int):
            x = cpu_d[c]
            cell = fmt(x.get("gateway_us"))
            if x.get("gateway_us_min") is not None and x.get("gateway_us_min") != x.get("gateway_us_max"):
                cell += f" ({fmt(x['gateway_us_min'])}–{fmt(x['gateway_us_max'])})"
            row += [cell, fmt(x.get("delivered_pct"), 0, "%")]
        tok, reuse, canc = checks.get("tokens") or {}, checks.get("reuse") or {}, checks.get("cancel") or {}
        row.append(("yes" if tok.get("ok") else "**no**")
                   + f" ({tok.get('whole')}/{tok.get('streams')} whole, {tok.get('tokens')}/{tok.get('expected')})")
        row.append(f"{fmt(reuse.get('connections_per_request'), 2)} ({reuse.get('upstream_connections')} for "
                   f"{reuse.get('upstream_requests')})" + ("" if reuse.get("ok") else " ⚠ streams failed"))
        row.append(fmt(reuse.get("gateway_us_per_stream")))
        row.append(f"{fmt(canc.get('p99_ms'))} / {canc.get('not_closed')}"
                   + ("" if canc.get("ok") else " ⚠"))
        rows.append(row)
    concs = sorted({c for n in names for c in ((result(res, n, "ab") or {}).get("cpu") or {})}, key=int)
    header = ["client"]
    for c in concs:
        header += [f"µs/event @{c}", f"delivered @{c}"]
    header += ["every token arrives", "upstream connections opened per request", "µs CPU per short stream",
               "cancel: close p99 ms / left open"]
    return table(header, rows) + "\n"


def proxy(res: Res) -> str:
    rows = []
    for n in targets_with(res, "proxy"):
        d = result(res, n, "proxy") or {}
        for route in ("direct", "proxy"):
            x = d.get(route) or {}
            cell = fmt(x.get("gateway_us"))
            if x.get("gateway_us_min") is not None and x.get("gateway_us_min") != x.get("gateway_us_max"):
                cell += f" ({fmt(x['gateway_us_min'])}–{fmt(x['gateway_us_max'])})"
            what = "direct" if route == "direct" else f"`HTTP_PROXY` → {d.get('proxy_server', 'proxy')}"
            rows.append([f"`{n}`", what, cell, fmt(x.get("delivered_pct"), 0, "%"), fmt(x.get("proxy_us"))])
    if not rows:
        return ""
    return table(["target", "upstream route", "gateway µs/event", "delivered", "proxy process µs/event"],
                 rows) + "\n"
