"""What observers (metrics, logs, limits, the Redis replicas) learn of a stream: plain values, never the stream.

``StreamHub`` tells each of its observers ``started(Started)`` when a generation starts and ``ended(Outcome)``
once its terminal entry is written. Both are immutable snapshots (``Final`` fields: the type checker refuses an
assignment, the compiled class raises ``AttributeError``), so no observer reaches into a running ``Generation``
and none can change it.

Each writes its own ``__init__``: mypyc compiles a method written in the class, while the one ``@dataclass``
generates runs in the interpreter (a frozen one through ``object.__setattr__`` per field: ~19k instructions for
an ``Outcome``, a fortieth of a short stream). ``@dataclass`` still gives them ``__eq__`` and ``__repr__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from .request import ChatRequest

__all__ = ["Observer", "Outcome", "Started"]


@dataclass(slots=True)
class Started:
    stream_id: Final[str]
    owner: Final[str]
    request: Final[ChatRequest]

    def __init__(self, stream_id: str, owner: str, request: ChatRequest) -> None:
        self.stream_id = stream_id
        self.owner = owner
        self.request = request


@dataclass(slots=True)
class Outcome:
    stream_id: Final[str]
    owner: Final[str]
    model: Final[str]
    deployment: Final[str]
    """The label of the upstream that answered last (never a key); ``""`` for a stream of the app's own source."""
    model_entry: Final[str]
    """The routing file's name (as written: wildcards too) of the model that answered last; ``""`` as above."""
    cause: Final[str]
    """``done``, ``cancelled:<reason>`` (``disconnect``, ``request``) or ``error:<code>``."""
    error: Final[str | None]
    """The error's message, for the server's log."""
    outputs: Final[int]
    """Parts relayed: text, reasoning and tool-call pieces."""
    ttft_s: Final[float | None]
    """From the start to the first output; None when there was none."""
    duration_s: Final[float]
    upstream_attempts: Final[int]
    max_tokens: Final[int | None]

    def __init__(
        self, stream_id: str, owner: str, model: str, deployment: str, model_entry: str, cause: str,
        error: str | None, outputs: int, ttft_s: float | None, duration_s: float, upstream_attempts: int,
        max_tokens: int | None,
    ) -> None:
        self.stream_id = stream_id
        self.owner = owner
        self.model = model
        self.deployment = deployment
        self.model_entry = model_entry
        self.cause = cause
        self.error = error
        self.outputs = outputs
        self.ttft_s = ttft_s
        self.duration_s = duration_s
        self.upstream_attempts = upstream_attempts
        self.max_tokens = max_tokens


class Observer(Protocol):
    def started(self, started: Started) -> None: ...

    def ended(self, outcome: Outcome) -> None: ...
