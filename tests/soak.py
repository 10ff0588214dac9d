"""The soak (issue 8): mixed traffic with faults against a real gateway and the fake upstream for N seconds.

    python -m tests.soak --seconds 600          # make soak (SOAK_SECONDS)

Clients run a weighted mix of scenarios — clean streams, OpenAI-compatible streams, cancels, resumes, client
hang-ups at every stage, slow readers, connection bursts — against upstream faults of every kind (resets,
malformed data, invalid UTF-8, early EOF, stalls, errors before the first token, 1 MiB tokens). Each stream is
checked as it ends (one terminal event, the one its fault calls for, the exact text). Every ``--checkpoint``
seconds the traffic pauses and the process invariants are checked (``tests/support/invariants.py``): no
generation running, every one started has ended, no upstream request open, asyncio tasks back at their idle
level, RSS under a sanity cap, ``/healthz`` answering. Memory must not grow: the blocks Python's allocator holds
(``ssegate_python_allocated_blocks``) at the checkpoints of the run's second half may exceed those of its first
half (after ``WARMUP_S``) by ``BLOCKS_MARGIN`` at most, and in runs of ``RSS_PLATEAU_S`` or more the highest RSS
too, by ``LEAK_MARGIN``. (The allocator keeps the pages of a peak — several 1 MiB tokens or slow readers'
backlogs at once — so RSS rises in steps to a plateau that this traffic reaches after about a minute, and a
shorter run cannot tell such a step from a leak; objects that outlive their stream show in the block count.)

It prints a report, draws RSS over time (``--png``, default ``docs/img/soak-rss.png``) and exits 1 on any
violation. The gateway keeps finished streams for resume ``LOG_TTL_S`` (20 s here, not 600 s), so that its memory
reaches its steady state within the run and growth means a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from ssegate.sse import ServerSentEvent, SSEDecoder
from tests.fakes import HUGE_TEXT, FakeUpstream, Fault, Script
from tests.support.gateway import ROOT, GatewayProcess, chat_body
from tests.support.invariants import Invariants, MiB, stream_violations

# Short timeouts so that faults end fast, but with room for a loaded machine (a late token is not a violation).
SETTINGS: dict[str, Any] = {
    "provider": "openai", "model": "fake-model", "commit_timeout_s": 0.5, "first_token_timeout_s": 3.0,
    "idle_timeout_s": 2.0, "send_timeout_s": 1.0, "heartbeat_s": 0.5, "retry_backoff_s": 0.02, "log_ttl_s": 20,
    "request_read_timeout_s": 2.0,
}
DEFAULT_PNG = ROOT / "docs" / "img" / "soak-rss.png"
WARMUP_S = 25.0
RSS_CAP = 512 * MiB
"""Above the warm-up RSS: a blow-up, at any checkpoint."""
LEAK_MARGIN = 32 * MiB
RSS_PLATEAU_S = 300.0
"""Runs at least this long also check RSS growth between halves (shorter ones end before its plateau)."""
BLOCKS_MARGIN = 0.10
"""Allowed growth of Python's allocated blocks between halves: finished streams kept for resume make the count
swing by a few percent with the recent traffic; a leak of a few objects per stream grows it past this."""
"""The first checkpoint, the RSS baseline: after the event log's first ``LOG_TTL_S``, when it holds as many
finished streams as it ever will at this rate."""


@dataclass
class Outcome:
    status: int = 0
    events: list[ServerSentEvent] = field(default_factory=list)
    body: bytes = b""
    left: bool = False  # the client hung up itself

    @property
    def text(self) -> str:
        return "".join(e.json()["delta"] for e in self.events if e.event == "message")

    @property
    def terminal(self) -> ServerSentEvent | None:
        return self.events[-1] if self.events and self.events[-1].event in ("done", "error") else None


@dataclass
class Report:
    streams: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    checkpoints: list[tuple[float, float]] = field(default_factory=list)
    blocks: list[tuple[float, float]] = field(default_factory=list)  # (seconds, Python allocator blocks)
    bursts: int = 0

    def violation(self, scenario: str, what: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(f"{scenario}: {what}")


# --- one stream ----------------------------------------------------------------------------------------------------

async def read_stream(resp: aiohttp.ClientResponse, stop: Callable[[list[ServerSentEvent]], bool] | None = None
                      ) -> Outcome:
    out = Outcome(resp.status)
    if resp.status != 200:
        out.body = await resp.read()
        return out
    dec, text = SSEDecoder(), codecs.getincrementaldecoder("utf-8")()
    async for chunk in resp.content.iter_any():
        out.events += dec.feed(text.decode(chunk))
        if stop is not None and stop(out.events):
            out.left = True
            resp.close()  # hang up: the connection is torn down, not returned to the pool
            break
    return out


def deltas_seen(n: int) -> Callable[[list[ServerSentEvent]], bool]:
    return lambda events: sum(e.event == "message" for e in events) >= n


class Soak:
    def __init__(self, gw: GatewayProcess, up: FakeUpstream, report: Report, seed: int) -> None:
        self.gw, self.up, self.report = gw, up, report
        self.rng = random.Random(seed)
        self.session: aiohttp.ClientSession | None = None
        self.scenarios: list[tuple[str, int, Callable[[], Awaitable[None]]]] = [
            ("clean", 30, self.clean), ("openai", 8, self.openai), ("openai-complete", 4, self.openai_complete),
            ("cancel", 5, self.cancel),
            ("resume", 5, self.resume), ("hangup-mid-stream", 10, self.hangup_mid),
            ("hangup-before-token", 4, self.hangup_before_token),
            ("hangup-before-headers", 4, self.hangup_before_headers),
            ("slow-reader", 1, self.slow_reader),
            *[(f"upstream-{f.value}", w, self.mid_stream_fault(f, code)) for f, w, code in [
                (Fault.RESET, 5, "upstream_error"), (Fault.MALFORMED_JSON, 3, "upstream_error"),
                (Fault.INVALID_UTF8, 3, "upstream_error"), (Fault.EARLY_EOF, 3, "upstream_error"),
                (Fault.ANTHROPIC_OVERLOADED, 2, "upstream_error"), (Fault.STALL, 2, "upstream_timeout")]],
            ("upstream-no-finish", 2, self.no_finish), ("upstream-headers-then-silence", 1, self.silence),
            ("upstream-500", 2, self.status(500, 502, "upstream_error")),
            ("upstream-429", 2, self.status(429, 429, "rate_limited")),
            ("upstream-double-done", 2, self.clean_with(Fault.DOUBLE_DONE)),
            ("upstream-no-done", 2, self.clean_with(Fault.NO_DONE, after_all=True)),
            ("upstream-huge-chunk", 1, self.clean_with(Fault.HUGE_CHUNK)),
        ]
        self.weights = [w for _, w, _ in self.scenarios]

    # helpers
    def deltas(self, lo: int = 10, hi: int = 80) -> list[str]:
        return [f"w{i} " for i in range(self.rng.randint(lo, hi))]

    def post(self, prompt: str, path: str = "/v1/chat/stream", **extra: Any) -> Any:
        assert self.session is not None
        return self.session.post(self.gw.url + path, data=chat_body(prompt, **extra),
                                 headers={"content-type": "application/json"})

    def check(self, name: str, out: Outcome, *, text: str | None = None, terminal: str | None = None,
              code: str | None = None, finish: str | None = None) -> None:
        for problem in stream_violations(out.events, client_left=out.left):
            self.report.violation(name, problem)
        if out.left:
            return
        term = out.terminal
        if terminal is not None and (term is None or term.event != terminal):
            got = f"{term.event} {term.data[:160]}" if term else "nothing"
            self.report.violation(name, f"ended with {got}, expected {terminal}")
            return
        if text is not None and out.text != text:
            self.report.violation(name, f"text {out.text[:60]!r} is not {text[:60]!r}")
        if term is not None and code is not None and term.json()["error"]["code"] != code:
            self.report.violation(name, f"error {term.data[:120]} is not {code}")
        if term is not None and finish is not None and term.json().get("finish_reason") != finish:
            self.report.violation(name, f"finish {term.data[:120]} is not {finish}")

    # scenarios
    async def clean(self) -> None:
        deltas = self.deltas()
        async with self.post(self.up.script(Script(deltas=deltas, delay=0.005))) as resp:
            out = await read_stream(resp)
        self.check("clean", out, text="".join(deltas), terminal="done", finish="stop")

    def clean_with(self, fault: Fault, after_all: bool = False) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            deltas = self.deltas()
            at = len(deltas) if after_all else self.rng.randint(0, len(deltas))
            async with self.post(self.up.script(Script(deltas=deltas, delay=0.005, fault=fault,
                                                       fault_after=at))) as resp:
                out = await read_stream(resp)
            if fault is Fault.HUGE_CHUNK:
                deltas.insert(at, HUGE_TEXT)
            self.check(f"upstream-{fault.value}", out, text="".join(deltas), terminal="done", finish="stop")

        return run

    async def openai(self) -> None:
        deltas = self.deltas()
        async with self.post(self.up.script(Script(deltas=deltas, delay=0.005)), "/v1/chat/completions",
                             stream=True) as resp:
            body = await resp.read()
        chunks = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
        if resp.status != 200 or not chunks or chunks[-1] != b"[DONE]" or chunks.count(b"[DONE]") != 1:
            self.report.violation("openai", f"status {resp.status}, ends {chunks[-1:]!r}")
            return
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in map(orjson.loads, chunks[:-1])
                       if c.get("choices"))
        if text != "".join(deltas):
            self.report.violation("openai", f"text {text[:60]!r}")

    async def openai_complete(self) -> None:
        deltas = self.deltas()
        async with self.post(self.up.script(Script(deltas=deltas, delay=0.002)), "/v1/chat/completions",
                             stream=False) as resp:
            body = await resp.read()
        try:
            text = orjson.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = None
        if resp.status != 200 or text != "".join(deltas):
            self.report.violation("openai-complete", f"status {resp.status}, body {body[:100]!r}")

    async def cancel(self) -> None:
        prompt = self.up.script(Script(deltas=self.deltas(300, 400), delay=0.01))
        async with self.post(prompt) as resp:
            dec, text = SSEDecoder(), codecs.getincrementaldecoder("utf-8")()
            out = Outcome(resp.status)
            cancelled = False
            async for chunk in resp.content.iter_any():
                out.events += dec.feed(text.decode(chunk))
                if not cancelled and sum(e.event == "message" for e in out.events) >= 3:
                    sid = out.events[0].json()["stream_id"]
                    assert self.session is not None
                    async with self.session.post(f"{self.gw.url}/v1/streams/{sid}/cancel") as c:
                        if c.status != 202:
                            self.report.violation("cancel", f"cancel answered {c.status}")
                    cancelled = True
        self.check("cancel", out, terminal="done", finish="cancelled")

    async def resume(self) -> None:
        """Hang up after a few events, then resume with Last-Event-ID: no gap, no duplicate, one terminal."""
        deltas = self.deltas(40, 80)
        async with self.post(self.up.script(Script(deltas=deltas, delay=0.01))) as resp:
            first = await read_stream(resp, deltas_seen(self.rng.randint(1, 10)))
        if not first.events:
            self.report.violation("resume", f"no events (status {first.status})")
            return
        last = first.events[-1].id
        assert self.session is not None and last is not None
        sid = last.rpartition(":")[0]
        async with self.session.get(f"{self.gw.url}/v1/streams/{sid}", headers={"Last-Event-ID": last}) as resp:
            rest = await read_stream(resp) if resp.status == 200 else Outcome(resp.status)
        if resp.status == 204:  # the terminal event had already been delivered
            return
        whole = Outcome(200, first.events + rest.events)
        self.check("resume", whole, terminal="done")  # cancelled at the hang-up (no grace), or finished

    async def hangup_mid(self) -> None:
        async with self.post(self.up.script(Script(deltas=self.deltas(100, 300), delay=0.005))) as resp:
            out = await read_stream(resp, deltas_seen(self.rng.randint(1, 50)))
        self.check("hangup-mid-stream", out)

    async def hangup_before_token(self) -> None:
        async with self.post(self.up.script(Script(deltas=["x"], ttft=5))) as resp:
            out = await read_stream(resp, lambda events: bool(events))
        self.check("hangup-before-token", out)

    async def hangup_before_headers(self) -> None:
        task = asyncio.ensure_future(self._request_only(self.up.script(Script(deltas=["x"], ttft=5))))
        await asyncio.sleep(self.rng.uniform(0.01, 0.3))  # a client giving up at a random moment, status held
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _request_only(self, prompt: str) -> None:
        async with self.post(prompt) as resp:
            await resp.read()

    async def slow_reader(self) -> None:
        """Never reads: the gateway must drop it (close its socket) within SEND_TIMEOUT_S of its sends blocking."""
        prompt = self.up.script(Script(deltas=["x" * 4000] * 3000, delay=0.001))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.gw.port))
        _, writer = await asyncio.open_connection(sock=sock)
        body = chat_body(prompt)
        writer.write(b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        port = sock.getsockname()[1]
        assert self.gw.proc is not None
        gateway = psutil.Process(self.gw.proc.pid)

        def held() -> bool:  # the gateway's end of this connection is still open
            return any(c.raddr and c.raddr.port == port for c in gateway.net_connections("tcp"))

        end = time.monotonic() + 15
        while await asyncio.to_thread(held):
            if time.monotonic() > end:
                self.report.violation("slow-reader", "not dropped within 15 s")
                break
            await asyncio.sleep(0.2)  # polling the gateway's sockets: nothing tells this process it dropped one
        writer.close()

    def mid_stream_fault(self, fault: Fault, code: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            deltas = self.deltas()
            at = self.rng.randint(1, len(deltas) - 1)
            async with self.post(self.up.script(Script(deltas=deltas, delay=0.005, fault=fault,
                                                       fault_after=at))) as resp:
                out = await read_stream(resp)
            self.check(f"upstream-{fault.value}", out, text="".join(deltas[:at]), terminal="error", code=code)

        return run

    async def no_finish(self) -> None:
        deltas = self.deltas()
        at = self.rng.randint(1, len(deltas) - 1)
        async with self.post(self.up.script(Script(deltas=deltas, fault=Fault.NO_DONE, fault_after=at))) as resp:
            out = await read_stream(resp)
        self.check("upstream-no-finish", out, text="".join(deltas[:at]), terminal="error", code="upstream_error")

    async def silence(self) -> None:
        async with self.post(self.up.script(Script(fault=Fault.HEADERS_THEN_SILENCE))) as resp:
            out = await read_stream(resp)
        self.check("upstream-headers-then-silence", out, text="", terminal="error", code="upstream_timeout")

    def status(self, upstream: int, expected: int, code: str) -> Callable[[], Awaitable[None]]:
        """An error status before the first token: a real HTTP status, or (when the retries outlasted
        COMMIT_TIMEOUT_S, as under load they may) a committed stream that ends with the same error."""
        async def run() -> None:
            async with self.post(self.up.script(Script(status=upstream))) as resp:
                out = await read_stream(resp)
            if out.status == 200:
                self.check(f"upstream-{upstream}", out, text="", terminal="error", code=code)
            elif out.status != expected or not resp.content_type.startswith("application/json"):
                self.report.violation(f"upstream-{upstream}", f"answered {out.status} {out.body[:100]!r}")

        return run

    async def burst(self, n: int) -> None:
        """``n`` connections opened and dropped at once: bare, half a request, or a whole one."""
        full = b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        body = chat_body(self.up.script(Script(deltas=self.deltas(), delay=0.01)))
        full += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)

        async def one(i: int) -> None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.gw.port)
            except OSError as exc:
                self.report.violation("burst", f"connect failed: {exc}")
                return
            writer.write([b"", full[:30], full][i % 3])
            writer.close()

        await asyncio.gather(*(one(i) for i in range(n)))
        self.report.bursts += 1
        self.report.faults["burst-connections"] += n

    # the run
    async def worker(self, deadline: float, running: asyncio.Event, busy: list[int]) -> None:
        while time.monotonic() < deadline:
            await running.wait()
            if time.monotonic() >= deadline:
                return
            name, _, run = self.rng.choices(self.scenarios, self.weights)[0]
            busy[0] += 1
            try:
                await asyncio.wait_for(run(), timeout=30)
            except (aiohttp.ClientError, OSError) as exc:
                self.report.violation(name, f"client error {type(exc).__name__}: {exc}")
            except TimeoutError:
                self.report.violation(name, "no end within 30 s")
            finally:
                busy[0] -= 1
            self.report.streams[name] += 1
            if not name.startswith(("clean", "openai")):
                self.report.faults[name] += 1

    async def run(self, seconds: float, concurrency: int, checkpoint_s: float, inv_box: list[Invariants]) -> None:
        t0 = time.monotonic()
        deadline = t0 + seconds
        running = asyncio.Event()
        running.set()
        busy = [0]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            self.session = session
            workers = [asyncio.ensure_future(self.worker(deadline, running, busy)) for _ in range(concurrency)]
            next_check = t0 + min(WARMUP_S, seconds / 2)
            while time.monotonic() < deadline:
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))  # the pace of checkpoints
                if time.monotonic() < next_check:
                    continue
                await self.burst(60)
                running.clear()  # pause: let the streams in flight end, then check the process
                end_wait = time.monotonic() + 40
                while busy[0] and time.monotonic() < end_wait:
                    await asyncio.sleep(0.05)  # waiting for this process's own workers to finish their stream
                await self.checkpoint(t0, inv_box)
                running.set()
                next_check = time.monotonic() + checkpoint_s
            await asyncio.gather(*workers)
            await self.checkpoint(t0, inv_box)

    async def checkpoint(self, t0: float, inv_box: list[Invariants]) -> None:
        if not inv_box:  # the first checkpoint is the baseline (warm: pools, imports, first streams)
            inv = await asyncio.to_thread(Invariants, self.gw, self.up, rss_margin=RSS_CAP)
            await asyncio.to_thread(inv.rebase)
            inv_box.append(inv)
        inv = inv_box[0]
        snap = await asyncio.to_thread(inv.settle, 20.0)
        for problem in inv.violations(snap):
            self.report.violation("invariants", problem)
        self.report.checkpoints.append((time.monotonic() - t0, snap.rss / MiB))
        self.report.blocks.append((time.monotonic() - t0, snap.blocks))
        self.up.reset()  # nothing is in flight: drop the fake's records (its waits scan them all)


def _halves(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The highest value of the first and of the second half of the run's checkpoints."""
    if len(points) < 2:
        return None
    middle = (points[0][0] + points[-1][0]) / 2
    first = [m for t, m in points if t <= middle]
    second = [m for t, m in points if t > middle]
    return (max(first), max(second)) if first and second else None


def rss_growth(report: Report) -> float:
    """MiB by which the highest checkpoint RSS of the run's second half exceeds that of its first half."""
    halves = _halves(report.checkpoints)
    return halves[1] - halves[0] if halves else 0.0


def halves_growth(points: list[tuple[float, float]]) -> float:
    """Relative growth of the highest value from the run's first half of checkpoints to its second."""
    halves = _halves(points)
    return halves[1] / halves[0] - 1 if halves and halves[0] > 0 else 0.0


def sample_rss(pid: int, t0: float, report: Report, stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.wait(0.5):
        try:
            report.rss.append((time.monotonic() - t0, proc.memory_info().rss / MiB))
        except psutil.Error:
            return


def draw(report: Report, png: Path, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    if report.rss:
        ax.plot([t for t, _ in report.rss], [m for _, m in report.rss], lw=1, label="RSS (sampled every 0.5 s)")
    if report.checkpoints:
        ax.scatter([t for t, _ in report.checkpoints], [m for _, m in report.checkpoints], color="C3", zorder=3,
                   s=14, label="checkpoints (invariants checked, no stream running)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("gateway RSS (MiB)")
    ax.set_ylim(bottom=0)
    total = sum(report.streams.values())
    ax.set_title(f"ssegate soak: {seconds:.0f} s, {total} streams, {sum(report.faults.values())} faults, "
                 f"{len(report.violations)} violations", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def soak(seconds: float, *, concurrency: int = 24, checkpoint_s: float = 20.0, png: Path | None = DEFAULT_PNG,
         seed: int = 8) -> tuple[Report, dict[str, Any]]:
    report = Report()
    with FakeUpstream() as up, GatewayProcess({**SETTINGS, "upstream_url": up.url}) as gw:
        assert gw.proc is not None
        t0 = time.monotonic()
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(gw.proc.pid, t0, report, stop), daemon=True)
        sampler.start()
        inv_box: list[Invariants] = []
        try:
            asyncio.run(Soak(gw, up, report, seed).run(seconds, concurrency, checkpoint_s, inv_box))
        finally:
            stop.set()
            sampler.join(5)
            for inv in inv_box:
                inv.close()
        leak = rss_growth(report)
        if seconds >= RSS_PLATEAU_S and leak > LEAK_MARGIN / MiB:
            report.violation("invariants", f"RSS grew {leak:.1f} MiB from the first half of the run to the second")
        blocks = halves_growth(report.blocks)
        if blocks > BLOCKS_MARGIN:
            report.violation("invariants", f"Python's allocated blocks grew {blocks:.0%} from the first half of the "
                             "run to the second")
        if gw.proc.poll() is not None:
            report.violation("process", f"the gateway exited with {gw.proc.returncode}")
        if up.errors:
            report.violation("fake upstream", f"{len(up.errors)} errors in the fake itself: {up.errors[0]!r}")
        elapsed = time.monotonic() - t0
    rss = [m for _, m in report.rss]
    summary = {
        "seconds": round(elapsed, 1),
        "streams": sum(report.streams.values()),
        "streams_per_s": round(sum(report.streams.values()) / max(elapsed, 1e-9), 1),
        "faults_injected": sum(report.faults.values()),
        "violations": len(report.violations),
        "checkpoints": len(report.checkpoints),
        "rss_mib": {"first": round(rss[0], 1) if rss else None, "max": round(max(rss), 1) if rss else None,
                    "last": round(rss[-1], 1) if rss else None,
                    "checkpoints": [round(m, 1) for _, m in report.checkpoints],
                    "growth_second_half": round(rss_growth(report), 1)},
        "python_blocks": {"checkpoints": [int(b) for _, b in report.blocks],
                          "growth_second_half_pct": round(halves_growth(report.blocks) * 100, 1)},
        "by_scenario": dict(sorted(report.streams.items())),
    }
    if png is not None:
        draw(report, png, elapsed)
    return report, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--checkpoint", type=float, default=20.0, help="seconds between invariant checks")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    report, summary = soak(args.seconds, concurrency=args.concurrency, checkpoint_s=args.checkpoint, png=args.png,
                           seed=args.seed)
    print(json.dumps(summary, indent=2))
    for v in report.violations[:50]:
        print("VIOLATION", v, file=sys.stderr)
    print(f"soak: {summary['streams']} streams, {summary['faults_injected']} faults injected, "
          f"{summary['violations']} invariant violations; RSS {summary['rss_mib']['first']} → "
          f"{summary['rss_mib']['last']} MiB (max {summary['rss_mib']['max']}); plot: {args.png}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
