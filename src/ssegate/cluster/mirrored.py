"""The stream log that the Redis event log (``redis_log.py``) copies to Redis, compiled.

``MirroredStreamLog.append`` runs for every event of every stream in Redis mode: it is the in-process append
(``StreamLog.append``) plus, on the first append after the writer took the log, handing the log to the writer's
list (``sink``, ``RedisEventLog._enqueue``). Overridden in an interpreted class, that append was a call through the
interpreter and back into the compiled one for each event (a tenth of what Redis mode adds per event to memory
mode); here it is a native method. The rest of the mirroring (the writer, its pace, the round trips) stays in
``redis_log.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.log import StreamLog
from .keys import events_key

__all__ = ["MirroredStreamLog"]


class MirroredStreamLog(StreamLog):
    """A ``StreamLog`` that the ``RedisEventLog``'s writer copies to Redis in the background."""

    __slots__ = ("dirty", "followed", "key", "mirrored", "orphaned", "renew_at", "sink")

    def __init__(
        self, stream_id: str, owner: str, model: str, max_events: int, max_bytes: int,
        sink: Callable[[MirroredStreamLog], None],
    ) -> None:
        super().__init__(stream_id, owner, model, max_events, max_bytes)
        self.mirrored = 0
        """The last seq written to Redis."""
        self.dirty = False
        """Queued for the writer."""
        self.orphaned = False
        """No longer mirrored: another replica declared the stream lost, or Redis refused it."""
        self.followed = False
        """A follower on another replica joined it: its entries go at the writer's fast pace."""
        self.renew_at = 0.0
        self.sink = sink
        self.key = events_key(stream_id).encode()
        """Its events key, as the writer sends it."""

    def append(self, kind: int, payload: Any) -> int:
        seq = super().append(kind, payload)
        if not self.dirty or self.finished:  # listed already, but its end is awaited: the fast pace
            self.sink(self)
        return seq
