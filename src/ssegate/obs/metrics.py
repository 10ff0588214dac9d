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
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..core.outcome import Outcome, Started

if TYPE_CHECKING:
    from ..routing.table import DeploymentStats

__all__ = ["Metrics"]

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
UNBOUNDED_ANSWER_TOKENS = 512
"""For the saved-tokens estimate: what a cancelled request without ``max_tokens`` would have generated."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active = Gauge("ssegate_active_streams", "Generations running now", registry=r)
        self.started_total = Counter("ssegate_streams_started", "Generations started", registry=r)
        self.ended_total = Counter(
            "ssegate_streams_ended", "Generations ended, by cause", ["cause"], registry=r
        )
        self.ttft = Histogram(
            "ssegate_time_to_first_token_seconds", "From request to the first text delta", buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("ssegate_tokens_relayed", "Text deltas relayed to clients", registry=r)
        self.saved = Counter(
            "ssegate_tokens_saved_by_cancel",
            "Estimate of completion tokens the upstream did not generate because the stream was cancelled",
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "ssegate_upstream_request_seconds", "Duration of upstream generations", buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_attempts = Counter("ssegate_upstream_attempts", "Upstream requests made", registry=r)
        self.rejected = Counter("ssegate_requests_rejected", "Requests refused before a stream, by code",
                                ["code"], registry=r)
        self.tasks = Gauge("ssegate_tasks", "asyncio tasks alive in this process", registry=r)
        self.tasks.set_function(_task_count)
        self.blocks = Gauge("ssegate_python_allocated_blocks", "Memory blocks Python's object allocator holds",
                            registry=r)
        self.blocks.set_function(sys.getallocatedblocks)
        route = ["model", "deployment"]
        self.model_streams = Counter("ssegate_model_streams", "Streams ended, by the model and deployment that "
                                     "answered last", [*route, "cause"], registry=r)
        self.model_ttft = Histogram("ssegate_model_time_to_first_token_seconds", "Time to the first output, by "
                                    "model and deployment", route, buckets=_TTFT_BUCKETS, registry=r)
        self.model_tokens = Counter("ssegate_model_tokens_relayed", "Parts relayed, by model and deployment", route,
                                    registry=r)

    def watch_routing(self, router: RoutingState) -> None:
        """Export the routing table's per-deployment state and the reloads (read at each scrape)."""
        self.registry.register(_RoutingCollector(router))

    # --- core.outcome.Observer --------------------------------------------------------------------------
    def started(self, started: Started) -> None:
        self.started_total.inc()
        self.active.inc()

    def ended(self, outcome: Outcome) -> None:
        self.active.dec()
        self.tokens.inc(outcome.outputs)
        self.upstream_attempts.inc(outcome.upstream_attempts)
        if outcome.ttft_s is not None:
            self.ttft.observe(outcome.ttft_s)
        if outcome.cause.startswith("cancelled:"):
            limit = outcome.max_tokens or UNBOUNDED_ANSWER_TOKENS
            self.saved.inc(max(0, limit - outcome.outputs))
        self.ended_total.labels(outcome.cause).inc()
        self.upstream_seconds.observe(outcome.duration_s)
        if outcome.deployment:
            route = (outcome.model_entry, outcome.deployment)
            self.model_streams.labels(*route, outcome.cause).inc()
            if outcome.outputs:
                self.model_tokens.labels(*route).inc(outcome.outputs)
            if outcome.ttft_s is not None:
                self.model_ttft.labels(*route).observe(outcome.ttft_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
