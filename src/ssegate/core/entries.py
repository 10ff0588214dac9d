"""What an event log holds: entries of one stream, numbered by ``seq`` from 1.

An entry is ``(kind, payload)``: ``START`` with ``{"stream_id", "model"}``, ``DELTA`` with the text
(a ``str``), and one terminal entry, ``DONE`` with ``{"finish_reason", "usage"}`` or ``ERROR`` with
``{"error": {"code", "message", "retryable"}}``. Entries are encoded for the wire by the follower, so one
log serves the native stream and the OpenAI-compatible one.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DELTA", "DONE", "ERROR", "KIND_NAMES", "START", "TERMINAL", "Entry", "entry_from_wire"]

START: Final = 0
DELTA: Final = 1
DONE: Final = 2
ERROR: Final = 3
TERMINAL: Final = (DONE, ERROR)
KIND_NAMES: Final = {START: "start", DELTA: "message", DONE: "done", ERROR: "error"}
_BY_NAME: Final = {v: k for k, v in KIND_NAMES.items()}

Entry = tuple[int, Any]


def entry_from_wire(event: str, data: Any) -> Entry:
    """The entry for a decoded native event (``event`` name and parsed JSON ``data``)."""
    kind = _BY_NAME.get(event, DELTA)
    if kind == DELTA:
        return DELTA, data["delta"]
    return kind, data
