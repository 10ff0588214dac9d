"""The parts of an answer a fake upstream can play: text, reasoning, redacted thinking and tool calls.

A script lists parts in the order the model "produces" them; playing them is a flat list of *events*, each
sent as one unit (one SSE event on OpenAI, one or a few on Anthropic) with the script's ``delay`` before it,
and counted by ``Script.fault_after``:

- :class:`Text` and :class:`Reasoning`: one event each (one ``content`` / ``reasoning_content`` chunk; one
  ``text_delta`` / ``thinking_delta``). Consecutive ones of the same kind form one Anthropic content block.
- :class:`ToolCall`: its start (the fragment with ``id`` and ``name`` / the ``tool_use`` block start), then
  one :class:`ToolArgs` event per piece of ``args``, verbatim. The pieces are the wire: ``args=[]`` streams no
  argument fragment at all, ``args=[""]`` one empty fragment, ``args=["", '{"a": 1}']`` an empty one first as
  Anthropic often does.
- :class:`RedactedThinking`: one event (an Anthropic ``redacted_thinking`` block, which has no deltas). It has
  no OpenAI form and is left out of OpenAI answers.

Each dialect turns events into bytes with a small state machine (which block is open, which tool index is
next), so that faults can cut an answer anywhere, even inside a thinking block or a tool call.
"""

from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = ["Event", "Part", "Reasoning", "RedactedThinking", "Text", "ToolArgs", "ToolCall", "events",
           "new_signature", "resolve_ids"]


@dataclass(frozen=True)
class Text:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """A piece of reasoning. Anthropic: one thinking block per run of consecutive Reasoning parts, closed by a
    ``signature_delta`` carrying the last non-None ``signature`` of the run (a fresh opaque one when none is
    given). ``Reasoning("", signature=...)`` alone is the ``display: "omitted"`` shape (no thinking_delta).
    OpenAI: ``delta.reasoning_content`` (or the fields ``Script.reasoning_field`` names)."""

    text: str
    signature: str | None = None


@dataclass(frozen=True)
class RedactedThinking:
    """An Anthropic ``redacted_thinking`` block; ``data`` is opaque and must come back unchanged."""

    data: str = field(default_factory=lambda: new_signature("redacted-"))


@dataclass(frozen=True)
class ToolCall:
    """A function call. ``id=None`` gets a fresh ``call_...`` (OpenAI) or ``toolu_...`` (Anthropic) id per answer.
    ``args`` are the argument pieces as streamed; a single string is one piece."""

    name: str
    args: list[str] | str = field(default_factory=list)
    id: str | None = None

    @property
    def pieces(self) -> list[str]:
        return [self.args] if isinstance(self.args, str) else list(self.args)

    @property
    def arguments(self) -> str:
        """The whole JSON arguments string (the pieces joined)."""
        return "".join(self.pieces)

    @property
    def call_id(self) -> str:
        assert self.id is not None, "ids are resolved before an answer is played"
        return self.id


@dataclass(frozen=True)
class ToolArgs:
    """An event: the next piece of ``call``'s arguments."""

    call: ToolCall
    piece: str


Part = Text | Reasoning | RedactedThinking | ToolCall
Event = Text | Reasoning | RedactedThinking | ToolCall | ToolArgs


def new_signature(prefix: str = "") -> str:
    """An opaque base64 string shaped like the API's signatures."""
    return prefix + base64.b64encode(b"\x12\x0c" + os.urandom(46)).decode()


def resolve_ids(parts: list[Part], kind: Literal["openai", "anthropic"]) -> list[Part]:
    """``parts`` with a fresh id for every ToolCall that has none, in the style of ``kind``."""
    def fresh() -> str:
        return "toolu_01" + uuid.uuid4().hex[:22] if kind == "anthropic" else "call_" + uuid.uuid4().hex[:24]

    return [replace(p, id=fresh()) if isinstance(p, ToolCall) and p.id is None else p for p in parts]


def events(parts: list[Part], kind: Literal["openai", "anthropic"]) -> list[Event]:
    """The events that play ``parts`` (see the module docstring)."""
    out: list[Event] = []
    for part in parts:
        if isinstance(part, ToolCall):
            out.append(part)
            out.extend(ToolArgs(part, piece) for piece in part.pieces)
        elif not (isinstance(part, RedactedThinking) and kind == "openai"):
            out.append(part)
    return out
