"""Prometheus metrics (``GET /metrics``), a ``core.outcome.Observer``: counts change once per stream, not per token.

==========================================  =======================================================================
``ssegate_active_streams``                  generations running now (gauge)
``ssegate_streams_started_total``           generations started
``ssegate_streams_ended_total{cause}``      generations ended: ``done``, ``cancelled:disconnect`` (the last client
                                            left), ``cancelled:request`` (``POST .../cancel``), ``error:<code>``
                                            (``error:shutting_down``, ``error:upstream_timeout``, ...)
``ssegate_time_to_first_token_seconds``     from the start of a generation to its first output (histogram)
``ssegate_tokens_relayed_total``            parts relayed (text, reasoning, tool-call pieces)
``ssegate_tokens_saved_by_cancel_total``    estimate of completion tokens the upstream did not generate because the
                                            stream was cancelled: ``max_tokens`` (or 512) minus the tokens relayed
``ssegate_upstream_request_seconds``        duration of upstream generations, first request to end (histogram)
``ssegate_upstream_attempts_total``         upstream requests made (retries and fallbacks included)
``ssegate_requests_rejected_total{code}``   requests refused before a stream: ``overloaded``, ``rate_limited``,
                                            ``shutting_down``
``ssegate_tasks``                           asyncio tasks alive in the process now (gauge; leak detection: it returns
                                            to its idle level once streams end)
``ssegate_python_allocated_blocks``         memory blocks Python's object allocator holds now (gauge; leak
                                            detection: it levels off once finished streams expire, where RSS keeps
                                            the pages of past peaks)
==========================================  =======================================================================

Per model and deployment (``model`` is the routing file's entry name as written, wildcards too, ``*`` without a
file; ``deployment`` its label: both bounded by the file, never by what clients send):

===================================================================  ==============================================
``ssegate_model_streams_total{model,deployment,cause}``              streams ended, by the model and deployment that
                                                                     answered last and the cause (as above)
``ssegate_model_time_to_first_token_seconds{model,deployment}``      time to the first output (histogram)
``ssegate_model_tokens_relayed_total{model,deployment}``             parts relayed
``ssegate_deployment_in_flight{model,deployment}``                   upstream attempts in flight now (gauge)
``ssegate_deployment_cooling_down{model,deployment}``                1 while the deployment sits out a cooldown
``ssegate_deployment_cooldowns_total{model,deployment}``             cooldowns opened
``ssegate_deployment_attempts_total{model,deployment}``              upstream requests made (retries included)
``ssegate_deployment_errors_total{model,deployment,code}``           failed attempts by error code (retried ones
                                                                     included: what feeds the cooldowns)
``ssegate_routing_reloads_total{result}``                            routing file reloads (SIGHUP): ``ok``, or
                                                                     ``refused`` (the file did not load; the old
                                                                     table stays)
===================================================================  ==============================================

The deployment series are read from the routing table at each scrape; a reload that removes a deployment
removes its series (and one that keeps it keeps its counts).
"""

from __future__ import annotations

import asyncio
import sys
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ..core.outcome import Outcome, Started

if TYPE_CHECKING:
    from ..routing.table import DeploymentStats

__all__ = ["Metrics"]

_TTFT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_bisect_left: Final = bisect_left
UNBOUNDED_ANSWER_TOKENS: Final = 512
"""For the saved-tokens estimate: what a cancelled request without ``max_tokens`` would have generated."""


class _Histogram:
    """Bucket counts, a sum and a count: what an observation costs is one bisect and three adds."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        """As floats: an observation is compared with each it passes (an int beside a float compares slower)."""
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[_bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, acc = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += n
            cumulative.append((floatToGoString(bound), acc))  # type: ignore[no-untyped-call]
        family.add_metric(labels, cumulative, self.sum)


class Metrics:
    """The stream counters are plain numbers, added to once per stream (no lock, no label lookup per update);
    ``render`` turns them into Prometheus families at the scrape (``_StreamCollector``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active = 0
        self.started_total = 0
        self.ended_total: dict[str, int] = {}
        self.ttft = _Histogram(_TTFT_BUCKETS)
        self.tokens = 0
        self.saved = 0
        self.upstream_seconds = _Histogram(_DURATION_BUCKETS)
        self.upstream_attempts = 0
        self.model_streams: dict[tuple[str, str, str], int] = {}
        self.model_ttft: dict[tuple[str, str], _Histogram] = {}
        self.model_tokens: dict[tuple[str, str], int] = {}
        r.register(_StreamCollector(self))
        self.rejected = Counter("ssegate_requests_rejected", "Requests refused before a stream, by code",
                                ["code"], registry=r)
        self.tasks = Gauge("ssegate_tasks", "asyncio tasks alive in this process", registry=r)
        self.tasks.set_function(_task_count)
        self.blocks = Gauge("ssegate_python_allocated_blocks", "Memory blocks Python's object allocator holds",
                            registry=r)
        self.blocks.set_function(sys.getallocatedblocks)

    def watch_routing(self, router: RoutingState) -> None:
        """Export the routing table's per-deployment state and the reloads (read at each scrape)."""
        self.registry.register(_RoutingCollector(router))

    # --- core.outcome.Observer --------------------------------------------------------------------------
    def started(self, started: Started) -> None:
        self.started_total += 1
        self.active += 1

    def ended(self, outcome: Outcome) -> None:
        self.active -= 1
        outputs = outcome.outputs
        self.tokens += outputs
        self.upstream_attempts += outcome.upstream_attempts
        ttft = outcome.ttft_s
        if ttft is not None:
            self.ttft.observe(ttft)
        cause = outcome.cause
        if cause.startswith("cancelled:"):
            limit = outcome.max_tokens or UNBOUNDED_ANSWER_TOKENS
            self.saved += max(0, limit - outputs)
        self.ended_total[cause] = self.ended_total.get(cause, 0) + 1
        self.upstream_seconds.observe(outcome.duration_s)
        if outcome.deployment:
            route = (outcome.model_entry, outcome.deployment)
            key = (*route, cause)
            self.model_streams[key] = self.model_streams.get(key, 0) + 1
            if outputs:
                self.model_tokens[route] = self.model_tokens.get(route, 0) + outputs
            if ttft is not None:
                hist = self.model_ttft.get(route)
                if hist is None:
                    hist = self.model_ttft[route] = _Histogram(_TTFT_BUCKETS)
                hist.observe(ttft)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StreamCollector:
    """The stream series, from ``Metrics``' numbers as they are at the scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        m = self.m
        yield GaugeMetricFamily("ssegate_active_streams", "Generations running now", value=m.active)
        yield CounterMetricFamily("ssegate_streams_started", "Generations started", value=m.started_total)
        ended = CounterMetricFamily("ssegate_streams_ended", "Generations ended, by cause", labels=["cause"])
        for cause, n in sorted(m.ended_total.items()):
            ended.add_metric([cause], n)
        yield ended
        ttft = HistogramMetricFamily("ssegate_time_to_first_token_seconds", "From request to the first output")
        m.ttft.add_to(ttft, [])
        yield ttft
        yield CounterMetricFamily("ssegate_tokens_relayed", "Parts relayed to clients", value=m.tokens)
        yield CounterMetricFamily("ssegate_tokens_saved_by_cancel", "Estimate of completion tokens the upstream "
                                  "did not generate because the stream was cancelled", value=m.saved)
        duration = HistogramMetricFamily("ssegate_upstream_request_seconds", "Duration of upstream generations")
        m.upstream_seconds.add_to(duration, [])
        yield duration
        yield CounterMetricFamily("ssegate_upstream_attempts", "Upstream requests made", value=m.upstream_attempts)
        route = ["model", "deployment"]
        streams = CounterMetricFamily("ssegate_model_streams", "Streams ended, by the model and deployment that "
                                      "answered last", labels=[*route, "cause"])
        for (model, deployment, cause), n in sorted(m.model_streams.items()):
            streams.add_metric([model, deployment, cause], n)
        yield streams
        model_ttft = HistogramMetricFamily("ssegate_model_time_to_first_token_seconds",
                                           "Time to the first output, by model and deployment", labels=route)
        for (model, deployment), hist in sorted(m.model_ttft.items()):
            hist.add_to(model_ttft, [model, deployment])
        yield model_ttft
        tokens = CounterMetricFamily("ssegate_model_tokens_relayed", "Parts relayed, by model and deployment",
                                     labels=route)
        for (model, deployment), n in sorted(m.model_tokens.items()):
            tokens.add_metric([model, deployment], n)
        yield tokens


class RoutingState(Protocol):
    """What the metrics read of the router (``routing.Router``)."""

    reloads: int
    reload_failures: int

    def stats(self) -> Sequence[DeploymentStats]: ...


class _RoutingCollector:
    """The ``ssegate_deployment_*`` and reload series, from the router as it is at the scrape."""

    def __init__(self, router: RoutingState) -> None:
        self.router = router

    def describe(self) -> list[Any]:
        return []  # series come and go with reloads: nothing to check at registration

    def collect(self) -> Iterator[Any]:
        router = self.router
        reloads = CounterMetricFamily("ssegate_routing_reloads", "Routing file reloads (SIGHUP), by result",
                                      labels=["result"])
        reloads.add_metric(["ok"], router.reloads)
        reloads.add_metric(["refused"], router.reload_failures)
        yield reloads
        try:
            rows = router.stats()
        except RuntimeError:  # collected outside the server's loop
            rows = []
        route = ["model", "deployment"]
        in_flight = GaugeMetricFamily("ssegate_deployment_in_flight", "Upstream attempts in flight now", labels=route)
        cooling = GaugeMetricFamily("ssegate_deployment_cooling_down", "1 while the deployment sits out a cooldown",
                                    labels=route)
        cooldowns = CounterMetricFamily("ssegate_deployment_cooldowns", "Cooldowns opened", labels=route)
        attempts = CounterMetricFamily("ssegate_deployment_attempts", "Upstream requests made", labels=route)
        errors = CounterMetricFamily("ssegate_deployment_errors", "Failed upstream attempts, by error code",
                                     labels=[*route, "code"])
        for row in rows:
            labels = [row.model, row.deployment]
            in_flight.add_metric(labels, row.in_flight)
            cooling.add_metric(labels, 1.0 if row.cooling_down else 0.0)
            cooldowns.add_metric(labels, row.cooldowns)
            attempts.add_metric(labels, row.attempts)
            for code, n in sorted(row.errors.items()):
                errors.add_metric([*labels, code], n)
        yield from (in_flight, cooling, cooldowns, attempts, errors)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # collected outside the server's loop
        return 0.0
