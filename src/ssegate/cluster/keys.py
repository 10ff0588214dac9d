"""The names of what ssegate keeps in Redis (the layout is ``redis_log.py``'s docstring), in one place: the
event log, the replicas and the mirrored logs (``mirrored.py``) build them here."""

from __future__ import annotations

import hashlib

__all__ = ["chat_key", "ctl_channel", "events_key", "followers_key", "meta_key", "replica_key"]


def events_key(stream_id: str) -> str:
    return f"ssegate:stream:{stream_id}:events"


def meta_key(stream_id: str) -> str:
    return f"ssegate:stream:{stream_id}:meta"


def followers_key(stream_id: str) -> str:
    return f"ssegate:stream:{stream_id}:followers"


def replica_key(replica: str) -> str:
    return f"ssegate:replica:{replica}"


def ctl_channel(replica: str) -> str:
    return f"ssegate:ctl:{replica}"


def chat_key(owner: str, chat_id: str) -> str:
    """The key of a chat's running stream: the owner as a hash (owners are key fingerprints; keep them out of key
    names), the chat id as the client chose it."""
    return f"ssegate:chat:{hashlib.sha256(owner.encode()).hexdigest()[:24]}:{chat_id}"
