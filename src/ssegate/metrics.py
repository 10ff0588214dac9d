"""Prometheus metrics (``GET /metrics``). Nothing here runs per token: counts are added once per stream."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .errors import GatewayError
    from .streams import Generation

__all__ = ["Metrics"]

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active = Gauge("ssegate_active_streams", "Generations running now", registry=r)
        self.started = Counter("ssegate_streams_started", "Generations started", registry=r)
        self.ended = Counter(
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
            "ssegate_upstream_request_seconds", "Duration of upstream generations", registry=r,
        )
        self.upstream_attempts = Counter("ssegate_upstream_attempts", "Upstream requests made", registry=r)
        self.rejected = Counter("ssegate_requests_rejected", "Requests refused before a stream, by code",
                                ["code"], registry=r)

    def stream_started(self) -> None:
        self.started.inc()
        self.active.inc()

    def stream_ended(self, gen: Generation, error: GatewayError | None) -> None:
        self.active.dec()
        self.tokens.inc(gen.deltas)
        self.upstream_attempts.inc(gen.upstream_attempts)
        if gen.deltas:
            self.ttft.observe(gen.first_token_at - gen.started_at)
        terminal = gen.log.terminal()
        reason = terminal[1].get("finish_reason") if terminal is not None and error is None else None
        if error is not None:
            cause = f"error:{error.code}"
        elif reason == "cancelled":
            cause = f"cancelled:{gen.cancel_reason or 'request'}"
            limit = gen.request.max_tokens or 512
            self.saved.inc(max(0, limit - gen.deltas))
        else:
            cause = "done"
        self.ended.labels(cause).inc()
        self.upstream_seconds.observe(asyncio.get_running_loop().time() - gen.started_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)
