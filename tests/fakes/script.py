"""What a fake upstream plays (:class:`Script`, :class:`Fault`) and what it saw (:class:`ConnRecord`).

A script answers with ``deltas`` (text pieces, the common case) or ``parts`` (text, reasoning, redacted
thinking and tool calls, see ``parts.py``), paced by ``ttft`` and ``delay``, optionally broken by a
``fault`` after ``fault_after`` events, or refused before any answer (``status``, ``fail_attempts``, or a
check of the conversation like the real APIs make: ``require_tool_call_ids``, ``require_signatures``,
``validate``). ``turns`` makes the answer depend on the conversation, for agent loops::

    Script(turns=[Script(parts=[ToolCall("get_weather", ['{"city": "Paris"}'])]),
                  Script(deltas=["It is 21 C in Paris."])])

The rule: ``turns[i]`` answers a request whose conversation already holds ``i`` assistant messages (the
last turn answers any later one). The chosen turn plays as a whole Script; the checks of the outer Script
apply to every turn as well.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import conversation
from tests.fakes.http import ClosedBy
from tests.fakes.openai import ReasoningField, ToolIndex
from tests.fakes.parts import Part, Text, ToolCall

__all__ = ["DEFAULT_DELTAS", "HUGE_TEXT", "ConnRecord", "Fault", "Script", "Validator"]

DEFAULT_DELTAS = ["The ", "quick ", "brown ", "fox ", "jumps."]
HUGE_TEXT = "0123456789abcdef" * 65536  # 1 MiB, the delta that Fault.HUGE_CHUNK inserts

# A check of the request body: None to answer it, or an error message (or Rejection) to answer 400 with.
Validator = Callable[[dict[str, Any]], str | conversation.Rejection | None]


class Fault(enum.Enum):
    """What goes wrong, after ``Script.fault_after`` events (clamped to the number of events)."""

    RESET = "reset"  # TCP RST mid-stream
    STALL = "stall"  # stop sending; keep the connection open until the client closes it
    MALFORMED_JSON = "malformed_json"  # a `data: {not json` event, then the rest of the script
    INVALID_UTF8 = "invalid_utf8"  # an event with \xff\xfe inside the JSON string, then the rest
    NO_DONE = "no_done"  # end the body cleanly without [DONE] / message_stop (before the finish if early)
    EARLY_EOF = "early_eof"  # close the connection (FIN) mid-body: chunked encoding not terminated
    DOUBLE_DONE = "double_done"  # [DONE] / message_stop twice (fault_after ignored)
    HEADERS_THEN_SILENCE = "headers_then_silence"  # 200 headers, then nothing, connection open (fault_after ignored)
    HUGE_CHUNK = "huge_chunk"  # one extra text event of HUGE_TEXT (1 MiB) inserted at fault_after
    SLOW_DRIP = "slow_drip"  # from fault_after on, one event every 5 s
    ANTHROPIC_OVERLOADED = "anthropic_overloaded"  # a mid-stream error event, then the body ends cleanly


@dataclass
class Script:
    """What the fake answers to a request carrying this script's key."""

    deltas: list[str] = field(default_factory=lambda: list(DEFAULT_DELTAS))
    parts: list[Part] | None = None  # played instead of `deltas` when set
    ttft: float = 0.0  # seconds before the first event (after the headers and the role chunk)
    delay: float = 0.0  # seconds between events
    pings_every: float = 0.0  # > 0: keep-alives (Anthropic `ping`, OpenAI SSE comment) this often during pauses
    role_chunk: bool = True  # OpenAI: a role-only chunk first, as real servers send
    usage: bool | None = None  # OpenAI: None = a usage chunk only when stream_options.include_usage asks
    prompt_tokens: int = 7
    completion_tokens: int | None = None  # None = the number of events sent
    finish_reason: str | None = None  # None = "tool_calls" when there are tool calls, else "stop"
    # OpenAI dialect: where reasoning goes, and quirks of real servers (all off by default)
    reasoning_field: ReasoningField | tuple[ReasoningField, ...] = "reasoning_content"
    ollama_index_reuse: bool = False  # every parallel tool call at index 0; only the id differs
    omit_tool_index: bool = False  # tool-call fragments without an "index" key
    repeat_finish: bool = False  # the finish chunk twice, the second with the usage (OpenRouter)
    obfuscation: bool = False  # an "obfuscation" padding string on each chunk with choices (OpenAI's default)
    # refusals before the answer
    status: int = 200  # non-200: an error answer (after ttft) instead of a stream
    error_body: dict[str, Any] | None = None  # None = the provider's error shape for the status
    headers: dict[str, str] = field(default_factory=dict)  # added to every answer, e.g. {"Retry-After": "1"}
    fail_attempts: int = 0  # the first N attempts (of this turn) answer fail_status at once
    fail_status: int = 503
    require_tool_call_ids: bool = False  # OpenAI's 400s for tool messages without a matching tool call
    require_signatures: bool = False  # Anthropic's 400s for thinking not sent back as the fake sent it
    validate: Validator | None = None
    turns: list[Script] = field(default_factory=list)
    fault: Fault | None = None
    fault_after: int = 0

    def play_parts(self) -> list[Part]:
        return list(self.parts) if self.parts is not None else [Text(d) for d in self.deltas]

    def finish(self) -> str:
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if any(isinstance(p, ToolCall) for p in self.play_parts()) else "stop"

    def reasoning_fields(self) -> tuple[ReasoningField, ...]:
        return self.reasoning_field if isinstance(self.reasoning_field, tuple) else (self.reasoning_field,)

    def tool_index(self) -> ToolIndex:
        return "omit" if self.omit_tool_index else "zero" if self.ollama_index_reuse else "count"

    def turn_for(self, body: dict[str, Any]) -> int:
        """The index of the turn that answers ``body`` (0 without turns)."""
        return min(conversation.assistant_turns(body), len(self.turns) - 1) if self.turns else 0


@dataclass
class ConnRecord:
    """One request (attempt) for a script and the connection that served it."""

    prompt_key: str | None  # None: matched no script (played the default one)
    request_json: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    opened_at: float
    request_at: float
    first_byte_at: float | None = None
    closed_at: float | None = None
    closed_by: ClosedBy | None = None
    deltas_sent: int = 0  # events of the answer sent (text, reasoning, tool-call starts and argument pieces)
    finished: bool = False
    attempt: int = 1  # counts every request for the script, whatever its turn
    method: str = "POST"
    path: str = ""
    request_body: bytes = b""
    status: int | None = None  # the status the fake answered
    conn_id: int = 0
    turn: int = 0  # which of the script's turns answered

    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages``."""
        return conversation.messages(self.request_json)

    def tools(self) -> list[dict[str, Any]]:
        """The request's ``tools``."""
        tools = self.request_json.get("tools")
        return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []

    def tool_results(self) -> list[tuple[str | None, Any]]:
        """``(tool call id, content)`` for every tool result sent (OpenAI tool messages, Anthropic blocks)."""
        return conversation.tool_results(self.request_json)

    def images(self) -> list[dict[str, Any]]:
        """Every image part sent (OpenAI ``image_url`` parts, Anthropic ``image`` blocks), as sent."""
        return conversation.images(self.request_json)
