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
"""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..core.outcome import Outcome, Started

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

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # collected outside the server's loop
        return 0.0
