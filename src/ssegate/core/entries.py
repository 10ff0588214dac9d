"""What an event log holds: the entries of one stream, numbered by ``seq`` from 1.

An entry is ``(kind, payload)``, and its payload is exactly the ``data`` of its native event (CONTRACT §3, §3.1),
so that the native encoder is one ``dumps`` and the Redis mirror stores plain JSON:

=============  =====================================================  =======================
kind           payload                                                native event
=============  =====================================================  =======================
``START``      ``{"stream_id", "model", "echo"?}``                    ``start`` (without ``echo``)
``DELTA``      the text (a ``str``; the event is ``{"delta": ...}``)  (unnamed) ``message``
``REASONING``  the reasoning text (a ``str``, ``{"delta": ...}``)     ``reasoning``
``TOOL_CALL``  ``{"index", "id", "name"}``                            ``tool_call``
``TOOL_ARGS``  ``{"index", "arguments"}``                             ``tool_call_delta``
``DONE``       ``{"finish_reason", "usage", "tool_calls"?, ...}``     ``done``
``ERROR``      ``{"error": {"code", "message", "retryable"}}``        ``error``
=============  =====================================================  =======================

Exactly one terminal entry (``DONE`` or ``ERROR``) ends a log. Entries are encoded for the wire by the follower,
so one log serves the native stream and every other protocol (OpenAI chunks, the AI SDK, Responses). A log keeps
its entries as two lists side by side, the kinds and the payloads (``log.py`` says why), and a follower hands
both to its encoder; ``Entry`` is one entry on its own (a terminal one, one read from the wire).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "DELTA",
    "DONE",
    "ERROR",
    "KIND_NAMES",
    "OUTPUT",
    "REASONING",
    "START",
    "TERMINAL",
    "TOOL_ARGS",
    "TOOL_CALL",
    "Entry",
    "entry_from_wire",
    "entry_size",
]

START: Final = 0
DELTA: Final = 1
DONE: Final = 2
ERROR: Final = 3
REASONING: Final = 4
TOOL_CALL: Final = 5
TOOL_ARGS: Final = 6
TERMINAL: Final = (DONE, ERROR)
OUTPUT: Final = (DELTA, REASONING, TOOL_CALL, TOOL_ARGS)
KIND_NAMES: Final = {START: "start", DELTA: "message", DONE: "done", ERROR: "error", REASONING: "reasoning",
                     TOOL_CALL: "tool_call", TOOL_ARGS: "tool_call_delta"}
_BY_NAME: Final = {v: k for k, v in KIND_NAMES.items()}

Entry = tuple[int, Any]


def entry_from_wire(event: str, data: Any) -> Entry:
    """The entry for a decoded native event (``event`` name and parsed JSON ``data``)."""
    kind = _BY_NAME.get(event, DELTA)
    if kind == DELTA or kind == REASONING:
        return kind, data["delta"]
    return kind, data


def entry_size(kind: int, payload: Any) -> int:
    """What an entry weighs against a log's byte budget: the text it carries."""
    if kind == DELTA or kind == REASONING:
        return len(payload)
    if kind == TOOL_ARGS:
        return len(payload["arguments"])
    return 0
