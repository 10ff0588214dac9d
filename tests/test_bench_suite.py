"""The benchmark suite's own pieces: the fake upstream's stream shapes (``parts``, ``split``), the load generator's
closed loop (the ``setup`` scenario) against the real upstream process, the report's targets table, and
``bench.accept``."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench import goals
from bench.loadgen import build_request, closed_loop
from bench.report import _merged_runs

from tests.support.bench_upstream import BenchUpstream


@pytest.fixture(scope="module")
def bench_upstream() -> Iterator[BenchUpstream]:
    up = BenchUpstream().start()
    yield up
    up.stop()


def _request(up: BenchUpstream, prompt: str) -> bytes:
    body = orjson.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": prompt}]})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _chunks(raw: bytes) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a whole chunked SSE response."""
    out = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            out.append(orjson.loads(line[6:]))
    return out


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        piece = await asyncio.wait_for(reader.read(65536), 10)
        assert piece, "the upstream closed before the end of the response"
        data += piece
    return data


async def test_parts_stream_is_reasoning_then_tool_calls(bench_upstream: BenchUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bench_upstream.port)
    try:
        writer.write(_request(bench_upstream, "tokens=35 interval=0.001 parts=1"))
        raw = await _read_all(reader)
    finally:
        writer.close()
    chunks = _chunks(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    reasoning = [d for d in deltas if "reasoning_content" in d]
    calls: dict[int, dict[str, str]] = {}
    for d in deltas:
        for frag in d.get("tool_calls", []):
            call = calls.setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] = frag.get("id", call["id"])
            call["name"] = frag["function"].get("name", call["name"])
            call["arguments"] += frag["function"]["arguments"]
    assert len(reasoning) == 20  # 10 per cycle, then a call of 10 chunks, and the second call cut at 5
    assert [c["id"] for c in calls.values()] == ["call_0", "call_1"]
    assert {c["name"] for c in calls.values()} == {"lookup"}
    assert all(orjson.loads(c["arguments"])["q"] for c in calls.values())  # the last fragment closes the JSON
    assert raw.count(b"~") == 35  # one token per chunk, as clients count them
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_split_writes_the_chunked_end_apart_from_done(bench_upstream: BenchUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bench_upstream.port)
    try:
        writer.write(_request(bench_upstream, "tokens=2 interval=0.001 split=1"))
        data = b""
        while b"data: [DONE]\n\n\r\n" not in data:
            data += await asyncio.wait_for(reader.read(65536), 10)
        assert not data.endswith(b"0\r\n\r\n")  # [DONE] came; the terminator waits 1 s
        rest = await asyncio.wait_for(reader.read(65536), 10)
        assert rest == b"0\r\n\r\n"
        writer.write(_request(bench_upstream, "tokens=1 interval=0.001"))  # the connection serves the next request
        assert (await _read_all(reader)).count(b"~") == 1
    finally:
        writer.close()


async def test_closed_loop_opens_a_connection_per_stream(bench_upstream: BenchUpstream) -> None:
    await bench_upstream.reset()
    host, port, req = build_request(bench_upstream.completions, native=False, tokens=1, interval=0.0, ttft=0.0)
    streams, finished = await closed_loop(host, port, req, 40, 4, timeout=30)
    st = await bench_upstream.stats()
    assert finished
    assert len(streams) == 40
    assert all(s.ok and s.tokens == 1 and s.t_end for s in streams)
    assert st["chat_requests"] == 40 and st["chat_connections"] == 40


async def test_closed_loop_ends_at_its_timeout(bench_upstream: BenchUpstream) -> None:
    """A target that never answers: the loop stops at its deadline instead of waiting for ever."""
    with socket.socket() as silent:  # listens, accepts nothing, answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        host, port = silent.getsockname()
        req = build_request(f"http://{host}:{port}/v1/chat/completions", native=False, tokens=1, interval=0.0,
                            ttft=0.0)[2]
        streams, finished = await closed_loop(host, port, req, 10, 2, timeout=0.5)
    assert not finished
    assert streams and all(not s.ok for s in streams)


def _res(**scenarios: dict[str, Any]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for key, value in scenarios.items():
        target, scenario = key.split("__")
        targets.setdefault(target.replace("_plus_", "+").replace("_", "-"), {"scenarios": {}})["scenarios"][
            scenario] = value
    return {"targets": targets}


def _cpu(us50: float, us500: float, redis: float | None = None, delivered500: float = 100.0) -> dict[str, Any]:
    return {"50": {"gateway_us": us50, "redis_us": redis, "delivered_pct": 100.0},
            "500": {"gateway_us": us500, "redis_us": redis, "delivered_pct": delivered500}}


def test_targets_table_marks_each_goal() -> None:
    res = _res(
        ssegate__setup={"gateway_us": 140.0, "ok": 2000, "attempted": 2000},
        ssegate__cpu=_cpu(30.0, 20.0),
        ssegate__parts=_cpu(32.0, 23.0),  # 1.07x, 1.15x
        ssegate_plus_redis__cpu=_cpu(33.0, 21.0, redis=1.0),  # 1.13x, 1.10x with the Redis server
        direct__ttft={"1": {"p99_ms": 20.0}, "100": {"p99_ms": 25.0}, "1000": {"p99_ms": 80.0}},
        ssegate__ttft={"1": {"p99_ms": 20.8}, "100": {"p99_ms": 40.0}, "1000": {"p99_ms": 200.0, "failed": 3}},
        ssegate__capacity={"capacity": 1500},
        ssegate__cancel={"p50_ms": 20.0, "p99_ms": 60.0, "max_ms": 70.0, "not_closed": 0},
        direct__cancel={"p50_ms": 15.0, "p99_ms": 45.0, "max_ms": 46.0, "not_closed": 0},
    )
    rows = {r.what.split(" (")[0]: r for r in goals.rows(res)}
    assert rows["Cancel storm, 1000 clients: every upstream connection closed"].measured.endswith(
        "; direct p99 45.0 ms")  # the rig alone, for scale
    met = {r.what.split(" (")[0]: r.met for r in goals.rows(res) if r.goal != "reported"}
    assert met == {
        "CPU per short stream": True,
        "Reasoning + tool-call events ÷ text, CPU per event": False,  # 1.15x at 500 streams
        "ssegate+redis ÷ ssegate, CPU per event": True,
        "Added TTFT p99 vs direct, 1 stream": True,
        "Added TTFT p99 vs direct, 100 streams at once": False,
        "Added TTFT p99 vs direct, 1000 streams at once": False,  # 120 ms added, but streams failed
        "Capacity at 40 tokens/s, one worker": True,
        "Cancel storm, 1000 clients: every upstream connection closed": False,
    }
    assert "not measured" in goals.section({"targets": {}})


def test_a_saturated_run_is_shown_but_not_judged() -> None:
    """At 500 streams a target that delivers only part of the tokens is measured at saturation (or starved by
    other load): its ratio says little, so only the unsaturated runs decide."""
    res = _res(ssegate__cpu=_cpu(30.0, 20.0, delivered500=60.0), ssegate__parts=_cpu(31.0, 40.0))
    (row,) = [r for r in goals.rows(res) if r.what.startswith("Reasoning")]
    assert row.met is True
    assert "2.00× @500 (⚠ saturated" in row.measured


def test_parts_is_judged_against_the_text_runs_interleaved_with_it() -> None:
    """The ``parts`` scenario measures text between its own repetitions: the goal divides by those, not by the
    ``cpu`` scenario's figure from other minutes (results without them still fall back to it)."""
    parts = _cpu(33.0, 22.0)
    for c, text_us in (("50", 31.0), ("500", 21.0)):
        parts[c]["text"] = {"gateway_us": text_us, "delivered_pct": 100.0}
    res = _res(ssegate__cpu=_cpu(20.0, 15.0), ssegate__parts=parts)  # 1.65x and 1.47x against cpu
    (row,) = [r for r in goals.rows(res) if r.what.startswith("Reasoning")]
    assert row.measured == "1.06× @50, 1.05× @500" and row.met is True
    from bench import sections

    assert "text (interleaved)" in sections.parts(res)
    del parts["50"]["text"], parts["500"]["text"]
    (row,) = [r for r in goals.rows(res) if r.what.startswith("Reasoning")]
    assert row.measured == "1.65× @50, 1.47× @500" and row.met is False


def test_redis_mode_is_judged_against_the_memory_runs_interleaved_with_it() -> None:
    """Redis mode's ``cpu`` runs alternate with memory mode's (a second gateway): the goal and the report divide by
    those, Redis server's CPU included (results without them fall back to the ``ssegate`` target's ``cpu``)."""
    redis = _cpu(24.0, 19.0, redis=1.0)
    for c, memory_us in (("50", 20.0), ("500", 18.0)):
        redis[c]["memory"] = {"gateway_us": memory_us, "delivered_pct": 100.0}
    res = _res(ssegate__cpu=_cpu(30.0, 20.0), ssegate_plus_redis__cpu=redis)
    (row,) = [r for r in goals.rows(res) if r.what.startswith("ssegate+redis")]
    assert row.measured.startswith("1.25× @50, 1.11× @500") and row.met is False
    from bench import sections

    assert "1.25× @50 (24.0 + Redis 1.0 µs vs 20.0 µs)" in sections.cpu(res)
    del redis["50"]["memory"], redis["500"]["memory"]
    (row,) = [r for r in goals.rows(res) if r.what.startswith("ssegate+redis")]
    assert row.measured.startswith("0.83× @50, 1.00× @500") and row.met is True


async def test_alternating_runs_each_first_as_often_after_one_unmeasured_run_of_each() -> None:
    """``scenarios._alternating``: an unmeasured run of each kind, then repetitions whose order alternates over an
    even number of them (3 asked: 4 made), so that neither kind always runs first; a saturated run ends them."""
    from bench.scenarios import _alternating

    calls: list[str] = []

    def measure(kind: str, delivered: float = 100.0) -> Any:
        async def run() -> dict[str, Any]:
            calls.append(kind)
            return {"gateway_us": 1.0, "delivered_pct": delivered}
        return run

    runs = await _alternating({"a": measure("a"), "b": measure("b")}, 3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(runs["a"]) == len(runs["b"]) == 4
    calls.clear()
    runs = await _alternating({"a": measure("a"), "b": measure("b", delivered=40.0)}, 3)
    assert calls == ["a", "b", "a", "b"] and len(runs["a"]) == 1


def test_the_report_names_the_runs_merged_into_its_results() -> None:
    """``--only``/``--targets`` runs replace part of the last results: the report says which run measured what."""
    full = {"date": "2026-12-03 16:10 UTC", "commit": "aaa", "mode": "full", "scenarios": "all", "targets": "all"}
    part = {"date": "2026-12-03 16:36 UTC", "commit": "bbb", "mode": "full", "scenarios": ["cpu", "parts"],
            "targets": ["ssegate"]}
    assert _merged_runs({"runs": [full]}) == []
    assert _merged_runs({}) == []
    line = "".join(_merged_runs({"runs": [full, part]}))
    assert "merge 2 runs" in line
    assert "16:10 UTC, commit `aaa`: every scenario" in line
    assert "16:36 UTC, commit `bbb`: cpu, parts of `ssegate`" in line


def test_the_accept_bench_shows_a_burst_taken_in_a_few_turns_by_ssegate_serves_loop() -> None:
    """``python -m bench.accept``: uvloop's server takes a turn of the loop per connection of a burst, the loop of
    ``ssegate serve`` a few for all of them."""
    out = subprocess.run([sys.executable, "-m", "bench.accept", "--burst", "20", "--bursts", "1"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    turns = dict(re.findall(r"^(uvloop|ssegate serve)\s+20 connections at once: (\d+) turns", out, re.M))
    assert int(turns["uvloop"]) >= 20 and int(turns["ssegate serve"]) <= 5, out


def test_every_probe_of_the_phases_profile_finds_its_function() -> None:
    """``bench/phases.py`` names functions of ssegate: a rename must fail here, not leave a step of the report
    empty. (A fresh interpreter: installing the probes wraps functions for the rest of the process.)"""
    code = "import bench.phases as p; print(','.join(p.install()) or 'none')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "none", out.stdout + out.stderr


def test_the_gc_scenario_times_each_collection_by_generation() -> None:
    """``bench/phases.py`` records every collection (generation, pause, objects found) in machine integers, and
    ``bench/gc_pauses.py`` sums them up per generation."""
    import gc

    from bench import gc_pauses, phases

    before = len(gc.callbacks)
    phases._time_collections()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        del gc.callbacks[before:]
    got = [list(phases._collections[i:i + 3]) for i in range(0, len(phases._collections), 3)]
    del phases._collections[:]
    assert [g for g, _, _ in got[-2:]] == [2, 0] and all(pause > 0 for _, pause, _ in got), got
    summary = gc_pauses.summarize([[0, 2_000_000, 5], [0, 4_000_000, 0], [1, 30_000_000, 100]], 1000)
    assert summary["0"] == {"collections": 2, "streams_per_collection": 500, "pause_p50_ms": 3.0,
                            "pause_max_ms": 4.0, "collected_mean": 2}
    assert summary["1"]["pause_max_ms"] == 30.0 and summary["2"] == {"collections": 0}


async def test_the_phases_profile_stamps_each_step_of_a_stream_in_order(bench_upstream: BenchUpstream) -> None:
    """The ``phases`` scenario on a gateway started by ``python -m bench.phases``: for every stream, warm and cold,
    each probe fired once per stream in the order of a stream's start, so every step of the report has a
    non-negative time from every stream."""
    from bench import phases, scenarios
    from bench.targets import TARGETS, start_target

    rt = await asyncio.to_thread(start_target, TARGETS["ssegate-probed"], bench_upstream.port, [])
    up = scenarios.Upstream(bench_upstream.port, None)
    try:
        cfg = scenarios.Config(phases_warm=20, ttft_serial=3)
        got = await phases.run(rt, up, cfg)
        for mode, n in (("warm", 20), ("cold", 3)):
            assert got[mode]["failed"] == 0 and got[mode]["streams"] == n, got
            for step, v in got[mode]["steps"].items():
                assert v["n"] == n and v["median_us"] is not None and v["median_us"] >= 0, (mode, step, v)
        # the stamps of one cold stream, in the order the module's docstring gives
        path = rt.extra["phases_file"]
        fleet = scenarios._fleet(rt, 1, 2, 0.01, 0.02)
        fleet.open()
        assert await fleet.wait(10)
        await fleet.aclose()
        await asyncio.sleep(0.2)
        got_now = await phases._collect(rt.proc.pid, Path(path))
        assert isinstance(got_now["gc"], list)  # the probed gateway records its garbage collections too
        streams = phases.per_stream(got_now["stamps"])
        assert len(streams) == 1
        order = ["accepted", "request read", "app called", "body validated", "routed", "response called",
                 "producer running", "upstream request written", "upstream read", "first token read",
                 "first event written"]
        times = [streams[0][label] for label in order]
        assert times == sorted(times), dict(zip(order, times, strict=True))
        # the first token waited 20 ms at the upstream: the first read is the head, the token came in a later one
        assert streams[0]["first token read"] - streams[0]["upstream read"] > 15_000_000
    finally:
        await up.client.aclose()
        await asyncio.to_thread(rt.stop)


def test_the_noise_probe_counts_what_a_scenario_ran_beside_its_target_as_the_benchs_own() -> None:
    """A second gateway (Redis mode's memory runs, ``proxy``) and tinyproxy are the bench's processes: their CPU,
    added to ``Running.companion_cpu_s`` when they stop, is the bench's own, not other users' load (uncounted, it
    read 24.5% of a core for the Redis runs, near the 25% that marks a scenario noisy and runs it again)."""
    from bench.__main__ import _Noise
    from bench.targets import TARGETS, Running

    class Up:
        def cpu(self) -> float:
            return 0.0

    rt = Running(TARGETS["ssegate"], 0)
    probe = _Noise(rt, Up())  # type: ignore[arg-type]
    rt.companion_cpu_s += 2.0  # a companion that used 2 s, stopped
    assert probe._own() - probe.own0 >= 2.0


def test_a_pinned_run_is_shown_but_not_judged() -> None:
    """``--pin`` gives the target a core of its own: a figure the machine as it is would not give, so a goal whose
    scenario was measured so is shown with its figures and marked, never met or not met; the others are judged."""
    res = _res(
        direct__ttft={"1": {"p99_ms": 20.0}, "100": {"p99_ms": 25.0}, "1000": {"p99_ms": 80.0}},
        ssegate__ttft={"1": {"p99_ms": 20.5}, "100": {"p99_ms": 31.0, "on_cpu_ms": 24.3, "waiting_ms": 0.04},
                       "1000": {"p99_ms": 300.0}},
        ssegate__setup={"gateway_us": 140.0, "ok": 2000, "attempted": 2000},
    )
    res["targets"]["ssegate"]["pinned"] = {"ttft": "target on CPU 1, rig on CPU 0"}
    rows = {r.what.split(" (")[0]: r for r in goals.rows(res)}
    at100 = rows["Added TTFT p99 vs direct, 100 streams at once"]
    assert at100.met is None and at100.pinned
    assert at100.measured == ("+6.00 ms (p99 31.00 vs direct 25.00); ssegate waited 0.0 ms a burst for a core, "
                              "ran 24.3 (pinned run)")
    assert rows["Added TTFT p99 vs direct, 1000 streams at once"].met is None  # +220 ms: not judged either
    assert rows["CPU per short stream"].met is True and not rows["CPU per short stream"].pinned
    table = goals.section(res)
    assert table.count("not judged (`--pin`)") == 3 and "**not met**" not in table
    from bench import sections

    text = sections.ttft(res)
    assert "| `ssegate` | — / — | 24.30 / 0.04 | — / — |" in text  # on a core / waiting, per burst
    assert "Measured with `--pin` (target on CPU 1, rig on CPU 0)" in text


def test_a_process_trees_time_on_a_cpu_and_waiting_for_one_is_read_from_the_scheduler() -> None:
    """``proc.tree_sched``: nanosecond counters of every thread of a process and its children, where the CPU times
    ``psutil`` reads count in ticks of 10 ms. A child that spins for 0.3 s is on a CPU for about that long."""
    import psutil
    from bench.proc import tree_sched

    spin = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.3: pass\ntime.sleep(30)\n"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, "
                                                     f"'-c', {spin!r}])"])
    try:
        ps = psutil.Process(parent.pid)
        deadline = time.monotonic() + 20
        run = wait = 0.0
        while time.monotonic() < deadline and run < 0.28:  # (the child's time, once it has spun)
            time.sleep(0.05)
            run, wait = tree_sched(ps)
        assert 0.28 <= run < 5 and 0 <= wait < 20
        assert len(ps.children()) == 1
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def test_pin_binds_the_targets_it_starts_to_one_cpu_and_the_rig_to_the_others() -> None:
    """``python -m bench --pin``: the load generator (this process) and a rig process on every CPU but the last, a
    target (and what it forks) on the last. Run in a child process: pinning binds the process that asks."""
    import os

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: nothing to pin apart")
    code = (
        "import os, sys; from bench.proc import pin, start\n"
        "print(pin())\n"
        "t = start('pin-target', [sys.executable, '-c', 'import os, time; os.fork(); time.sleep(30)'], 0)\n"
        "r = start('pin-rig', ['sleep', '30'], 0, role='rig')\n"
        "import time; time.sleep(1.0)\n"
        "import psutil\n"
        "print(sorted(os.sched_getaffinity(0)), sorted(os.sched_getaffinity(r.pid)), "
        "sorted(os.sched_getaffinity(t.pid)), [sorted(os.sched_getaffinity(c.pid)) for c in "
        "psutil.Process(t.pid).children()])\n"
        "t.stop(); r.stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    rig = ",".join(map(str, cpus[:-1]))
    assert first == f"target on CPU {cpus[-1]}, rig on CPU{'s' if len(cpus) > 2 else ''} {rig}"
    assert second == f"{cpus[:-1]} {cpus[:-1]} {cpus[-1:]} [{cpus[-1:]}]"
