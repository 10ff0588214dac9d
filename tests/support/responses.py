"""Checks and helpers for OpenAI Responses API streams, as a client reads them (raw events as JSON objects).

``violations(events)`` checks the grammar every Responses stream must follow, whatever the answer: sequence numbers
contiguous, ``response.created`` first, one terminal event last, every item's events between its ``added`` and its
``done``, the deltas adding up to what ``done`` says, and the terminal's ``output`` equal to the items as done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from tests.support.gateway import sse_events

__all__ = ["TERMINALS", "normalized", "raw_events", "violations"]

TERMINALS = ("response.completed", "response.incomplete", "response.failed", "response.cancelled")
_DELTAS = {"response.output_text.delta": "text", "response.function_call_arguments.delta": "arguments",
           "response.reasoning_summary_text.delta": "summary"}
_DONES = {"response.output_text.done": ("text", "text"), "response.function_call_arguments.done": ("arguments",
                                                                                                    "arguments"),
          "response.reasoning_summary_text.done": ("summary", "text")}


def raw_events(resp: httpx.Response, n: int | None = None) -> Iterator[dict[str, Any]]:
    """The events of a streamed response as JSON objects (the SSE ``event:`` name checked against ``type``);
    stops after ``n``."""
    count = 0
    for sse in sse_events(resp.iter_text()):
        data = orjson.loads(sse.data)
        assert sse.event == data["type"], (sse.event, data)
        yield data
        count += 1
        if n is not None and count >= n:
            return


def violations(events: list[dict[str, Any]], *, whole: bool = True) -> list[str]:
    """What is wrong with a stream's events (``whole``: from ``response.created`` to the terminal event)."""
    out: list[str] = []
    if not events:
        return ["no events"]
    first = events[0]["sequence_number"]
    seqs = [e["sequence_number"] for e in events]
    if seqs != list(range(first, first + len(events))):
        out.append(f"sequence numbers not contiguous: {seqs}")
    types = [e["type"] for e in events]
    if whole:
        if first != 0 or types[0] != "response.created":
            out.append(f"does not start with response.created at 0: {types[:2]}, {first}")
        if types[1:2] not in (["response.in_progress"], ["response.queued"]):
            out.append(f"second event is {types[1:2]}")
        if types[-1] not in TERMINALS:
            out.append(f"last event is {types[-1]}")
    terminals = [i for i, t in enumerate(types) if t in TERMINALS]
    if len(terminals) > 1 or (terminals and terminals[0] != len(types) - 1):
        out.append(f"terminal events at {terminals} of {len(types)}")
    for i, t in enumerate(types):
        if t == "error" and types[i + 1:i + 2] != ["response.failed"]:
            out.append("an error event not followed by response.failed")
    opened: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    acc: dict[tuple[int, str], str] = {}
    for e in events:
        t = e["type"]
        idx = e.get("output_index")
        if t == "response.output_item.added":
            if idx in opened:
                out.append(f"item {idx} added twice")
            opened[idx] = e["item"]
        elif t == "response.output_item.done":
            if idx not in opened and whole:
                out.append(f"item {idx} done but never added")
            if idx in done:
                out.append(f"item {idx} done twice")
            done[idx] = e["item"]
        elif idx is not None:
            if whole and idx not in opened:
                out.append(f"{t} for item {idx} before it was added")
            if idx in done:
                out.append(f"{t} for item {idx} after it was done")
            if whole and "item_id" in e and idx in opened and e["item_id"] != opened[idx]["id"]:
                out.append(f"{t}: item_id {e['item_id']} is not item {idx}'s")
            if t in _DELTAS:
                key = (idx, _DELTAS[t])
                acc[key] = acc.get(key, "") + e["delta"]
            elif t in _DONES and whole:
                what, field = _DONES[t]
                if acc.get((idx, what), "") != e[field]:
                    out.append(f"{t} for item {idx}: the deltas say {acc.get((idx, what), '')!r}, done {e[field]!r}")
    if whole and types[-1] in TERMINALS:
        if set(opened) != set(done):
            out.append(f"items added {sorted(opened)}, done {sorted(done)}")
        # ssegate's encrypted_content (the upstream's provider_data) is known only at the end: the final object has it
        def bare(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in item.items() if k != "encrypted_content"} for item in items]

        if bare(events[-1]["response"]["output"]) != bare([done[i] for i in sorted(done)]):
            out.append("the terminal's output is not the items as done")
    return out


def normalized(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with what differs between two runs of the same answer (ids, times) replaced by placeholders."""
    text = orjson.dumps(events).decode()
    ids = {e["response"]["id"] for e in events if "response" in e}
    for rid in ids:
        sid = rid.removeprefix("resp_")
        text = text.replace(sid, "SID")
    out: list[dict[str, Any]] = orjson.loads(text)
    for e in out:
        if "response" in e:
            e["response"]["created_at"] = 0
    return out
