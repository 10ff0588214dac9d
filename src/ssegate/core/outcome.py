"""What observers (metrics, logs, limits, the Redis replicas) learn of a stream: plain values, never the stream.

``StreamHub`` tells each of its observers ``started(Started)`` when a generation starts and ``ended(Outcome)``
once its terminal entry is written. Both are immutable snapshots, so no observer reaches into a running
``Generation`` and none can change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .request import ChatRequest

__all__ = ["Observer", "Outcome", "Started"]


@dataclass(frozen=True, slots=True)
class Started:
    stream_id: str
    owner: str
    request: ChatRequest


@dataclass(frozen=True, slots=True)
class Outcome:
    stream_id: str
    owner: str
    model: str
    deployment: str
    """The label of the upstream that answered last (never a key); ``""`` for a stream of the app's own source."""
    model_entry: str
    """The routing file's name (as written: wildcards too) of the model that answered last; ``""`` as above."""
    cause: str
    """``done``, ``cancelled:<reason>`` (``disconnect``, ``request``) or ``error:<code>``."""
    error: str | None
    """The error's message, for the server's log."""
    outputs: int
    """Parts relayed: text, reasoning and tool-call pieces."""
    ttft_s: float | None
    """From the start to the first output; None when there was none."""
    duration_s: float
    upstream_attempts: int
    max_tokens: int | None


class Observer(Protocol):
    def started(self, started: Started) -> None: ...

    def ended(self, outcome: Outcome) -> None: ...
