"""What a stream yields (``ssegate.client``): one typed value per event of the native stream (CONTRACT §3, §3.1).

``Start``, then the answer's parts as they arrive (``Delta`` text, ``Reasoning`` text, ``ToolCallStart`` and
``ToolCallDelta`` for tool calls), then one ``Done`` that repeats every tool call whole (``tool_calls``) and
carries ``provider_data``. ``assistant_message`` turns a finished stream into the assistant message of the next
turn (text, tool calls, reasoning and provider data), which is what an agent loop sends back with the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import GatewayError
from ..parts import Usage
from ..sse import ServerSentEvent

__all__ = ["Delta", "Done", "GatewayUnreachable", "Reasoning", "Start", "StreamEvent", "ToolCallDelta",
           "ToolCallStart", "assistant_message"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    seq: int
    raw: ServerSentEvent = field(repr=False, compare=False)
    """The event as it came off the wire (``raw.id``, ``raw.event``, ``raw.data``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Start(_Event):
    stream_id: str
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta(_Event):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reasoning(_Event):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStart(_Event):
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta(_Event):
    index: int
    arguments: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Done(_Event):
    finish_reason: str
    usage: Usage
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Every tool call of the answer, whole: ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
    provider_data: dict[str, Any] | None = None
    """Opaque: send it back on the assistant message of the next turn (``assistant_message`` does)."""


StreamEvent = Start | Delta | Reasoning | ToolCallStart | ToolCallDelta | Done


class GatewayUnreachable(GatewayError):
    """The gateway could not be reached, or the connection dropped and every attempt to resume failed."""

    code = "unreachable"
    status = 0
    retryable = True


def assistant_message(text: str, done: Done | None, reasoning: str = "") -> dict[str, Any]:
    """The assistant message for the next turn: the answer's text, its tool calls, reasoning and provider data."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if done is not None and done.tool_calls:
        message["tool_calls"] = done.tool_calls
    if reasoning:
        message["reasoning"] = reasoning
    if done is not None and done.provider_data:
        message["provider_data"] = done.provider_data
    return message
