"""Which stream answers a chat right now: the AI SDK resumes by chat id, not by stream id.

``useChat({resume: true})`` asks ``GET /api/chat/{chat id}/stream`` after a reload, with no ``Last-Event-ID``
(it uses ``fetch``), so the server keeps ``(owner, chat id) → (stream id, message id)``: the message id too,
because the replayed ``start`` chunk must name the same message as the first time.

- In memory (one process): a dict, its entry dropped when the stream ends (an ``Observer`` of the hub), so it
  holds at most the running streams.
- With Redis (``SSEGATE_REDIS_URL``): a key per chat, ``ssegate:chat:<owner hash>:<chat id>``, written when the
  stream starts and read by any replica (``Replicas.set_chat``/``get_chat``); it expires like a live stream's keys
  and is never deleted: a key that names a finished stream means nothing is running.

Either way a lookup only says which stream was started last for the chat; whether it still runs is the event
log's to say (the route checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from ...cluster.replicas import Replicas
    from ...core.generation import StreamHub
    from ...core.outcome import Outcome, Started

__all__ = ["ChatStream", "ChatStreams"]


@dataclass(frozen=True, slots=True)
class ChatStream:
    stream_id: str
    message_id: str


class ChatStreams:
    def __init__(self, hub: StreamHub, replicas: Replicas | None) -> None:
        self.replicas = replicas
        self._local: dict[tuple[str, str], ChatStream] = {}
        self._by_stream: dict[str, tuple[str, str]] = {}
        if replicas is None:
            hub.observers.append(self)

    def __len__(self) -> int:
        return len(self._local)

    async def register(self, owner: str, chat_id: str, stream_id: str, message_id: str) -> None:
        """``stream_id`` answers ``chat_id`` now (as message ``message_id``)."""
        entry = ChatStream(stream_id, message_id)
        if self.replicas is not None:
            await self.replicas.set_chat(owner, chat_id, orjson.dumps([stream_id, message_id]))
            return
        key = (owner, chat_id)
        old = self._local.get(key)
        if old is not None:
            self._by_stream.pop(old.stream_id, None)
        self._local[key] = entry
        self._by_stream[stream_id] = key

    async def lookup(self, owner: str, chat_id: str) -> ChatStream | None:
        """The stream started last for ``chat_id`` of ``owner`` (perhaps finished since), or ``None``."""
        if self.replicas is None:
            return self._local.get((owner, chat_id))
        raw = await self.replicas.get_chat(owner, chat_id)
        if raw is None:
            return None
        stream_id, message_id = orjson.loads(raw)
        return ChatStream(str(stream_id), str(message_id))

    # --- core.outcome.Observer (in memory only) ------------------------------------------------------
    def started(self, started: Started) -> None:
        return None

    def ended(self, outcome: Outcome) -> None:
        key = self._by_stream.pop(outcome.stream_id, None)
        if key is not None:
            self._local.pop(key, None)
