"""The reliability invariants, checked against a real gateway process and its fake upstream (issue 8).

After a scenario, once the traffic is over:

1. every generation that started ended exactly once (``ssegate_streams_started_total`` equals the sum of
   ``ssegate_streams_ended_total``) and none is running (``ssegate_active_streams`` is 0);
2. no upstream request is left open: every connection to the fake upstream is closed, or idle in the
   gateway's keep-alive pool after a complete response (``upstream_busy``: the fake is still answering on it);
3. no asyncio task outlives its stream (``ssegate_tasks`` is back at its idle level);
4. the process RSS is within a bounded margin of its baseline;
5. ``/healthz`` answers.

The gateway runs in another process, so there is no event to wait on: ``settle`` polls the metrics until they
converge, bounded in time, and reports what did not converge. Clients check the stream side themselves with
``stream_violations``: a stream that started got exactly one terminal event, last, unless the client left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from ssegate.sse import ServerSentEvent

if TYPE_CHECKING:
    from tests.fakes import FakeUpstream
    from tests.support.gateway import GatewayProcess

__all__ = ["Invariants", "Snapshot", "read_metrics", "stream_violations"]

MiB = 1024 * 1024
POLL_S = 0.02


@dataclass
class Snapshot:
    active: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    tasks: float = 0.0
    rss: int = 0
    blocks: float = 0.0
    upstream_open: int = 0
    upstream_busy: int = 0
    healthy: bool = True
    ended_by_cause: dict[str, float] = field(default_factory=dict)


def read_metrics(url: str, client: httpx.Client | None = None) -> dict[str, float]:
    """``/metrics`` as ``{"name{label=value}": value}`` (samples; labels sorted)."""
    text = (client or httpx).get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


class Invariants:
    """Baseline a gateway (after a warm-up) and check the invariants against it after each scenario."""

    def __init__(self, gw: GatewayProcess, up: FakeUpstream | None, *, rss_margin: int = 64 * MiB,
                 task_slack: int = 0) -> None:
        assert gw.proc is not None
        self.gw = gw
        self.up = up
        self.proc = psutil.Process(gw.proc.pid)
        self.rss_margin = rss_margin
        self.task_slack = task_slack
        self.client = httpx.Client(timeout=10)
        self.peak_rss = 0
        self.baseline = self.snapshot()

    def close(self) -> None:
        self.client.close()

    def snapshot(self) -> Snapshot:
        m = read_metrics(self.gw.url, self.client)
        ended = {k.split("cause=", 1)[1].rstrip("}"): v for k, v in m.items()
                 if k.startswith("ssegate_streams_ended_total{")}
        try:
            healthy = self.client.get(self.gw.url + "/healthz").status_code == 200
        except httpx.HTTPError:
            healthy = False
        rss = self.proc.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        return Snapshot(
            active=m.get("ssegate_active_streams", 0.0),
            started=m.get("ssegate_streams_started_total", 0.0),
            ended=sum(ended.values()),
            tasks=m.get("ssegate_tasks", 0.0),
            rss=rss,
            blocks=m.get("ssegate_python_allocated_blocks", 0.0),
            upstream_open=self.up.open_connections() if self.up is not None else 0,
            upstream_busy=upstream_busy(self.up) if self.up is not None else 0,
            healthy=healthy,
            ended_by_cause=ended,
        )

    def rebase(self) -> Snapshot:
        """Take the current (settled) state as the new baseline, e.g. after a warm-up."""
        self.baseline = self.settle()
        return self.baseline

    def violations(self, snap: Snapshot) -> list[str]:
        out = []
        if snap.active != 0:
            out.append(f"{snap.active:g} generations still running")
        if snap.started != snap.ended:
            out.append(f"{snap.started:g} generations started but {snap.ended:g} ended ({snap.ended_by_cause})")
        if snap.upstream_busy:
            out.append(f"{snap.upstream_busy} upstream requests still open ({snap.upstream_open} connections)")
        if snap.tasks > self.baseline.tasks + self.task_slack:
            out.append(f"{snap.tasks:g} asyncio tasks alive, {self.baseline.tasks:g} when idle")
        if snap.rss > self.baseline.rss + self.rss_margin:
            out.append(f"RSS {snap.rss / MiB:.1f} MiB, over the baseline {self.baseline.rss / MiB:.1f} MiB "
                       f"+ {self.rss_margin / MiB:.0f} MiB")
        if not snap.healthy:
            out.append("/healthz did not answer 200")
        return out

    def settle(self, timeout: float = 15.0) -> Snapshot:
        """Poll until every invariant holds (or ``timeout``); the last snapshot. Raises nothing."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if not self.violations(snap) or time.monotonic() >= deadline:
                return snap
            time.sleep(POLL_S)  # polling another process's metrics: there is no event to wait on

    def wait_started(self, since: Snapshot, n: int, timeout: float = 10.0) -> None:
        """Until ``n`` generations started after the snapshot ``since`` (requests the gateway has yet to read)."""
        deadline = time.monotonic() + timeout
        while self.snapshot().started - since.started < n and time.monotonic() < deadline:
            time.sleep(POLL_S)  # polling another process's metrics: there is no event to wait on

    def wait_no_generation(self, timeout: float = 10.0) -> None:
        """Until no generation runs (``ssegate_active_streams`` is 0), whatever its clients are doing. A request the
        gateway has not read yet is no generation: wait for it first (``wait_started``)."""
        deadline = time.monotonic() + timeout
        while (active := self.snapshot().active) and time.monotonic() < deadline:
            time.sleep(POLL_S)  # polling another process's metrics: there is no event to wait on
        assert not active, f"{active} generations still running after {timeout:g} s"

    def check(self, timeout: float = 15.0) -> Snapshot:
        """``settle``, then assert that every invariant holds."""
        snap = self.settle(timeout)
        bad = self.violations(snap)
        assert not bad, "invariants violated: " + "; ".join(bad)
        return snap


def upstream_busy(up: FakeUpstream) -> int:
    """Connections on which the fake upstream is still answering a request (its handler runs): a stalled,
    dripping or unfinished response the gateway has not closed. A connection left open after a complete response
    is the gateway's keep-alive pool doing its job (aiohttp closes idle ones after 15 s), and is not counted.
    (Reads the fake's connection set: ``open_connections()`` counts idle pooled connections too.)"""
    server = up._server
    if server is None:
        return 0
    return sum(1 for c in list(server.connections) if c._task is not None)


def stream_violations(events: list[ServerSentEvent], *, client_left: bool = False) -> list[str]:
    """What is wrong with a native stream a client read: ids contiguous from 1, ``start`` first, exactly one
    terminal event and it is the last. ``client_left``: the client hung up itself, so no terminal is owed."""
    if not events:
        return [] if client_left else ["no events"]
    out = []
    try:
        sid = events[0].json()["stream_id"]
    except (ValueError, KeyError, TypeError):
        return [f"first event is not start: {events[0]}"]
    if events[0].event != "start":
        out.append(f"first event is {events[0].event!r}")
    if [e.id for e in events] != [f"{sid}:{i + 1}" for i in range(len(events))]:
        out.append("ids are not contiguous from 1")
    terminals = [i for i, e in enumerate(events) if e.event in ("done", "error")]
    if len(terminals) > 1:
        out.append(f"{len(terminals)} terminal events")
    elif terminals and terminals[0] != len(events) - 1:
        out.append("events after the terminal event")
    elif not terminals and not client_left:
        out.append("no terminal event")
    return out
