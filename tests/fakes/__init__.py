"""Scriptable fake LLM upstreams on real loopback sockets, for end-to-end tests (see ``upstream.py``)."""

from tests.fakes.conversation import Rejection
from tests.fakes.parts import Part, Reasoning, RedactedThinking, Text, ToolCall
from tests.fakes.script import Validator
from tests.fakes.upstream import DEFAULT_DELTAS, HUGE_TEXT, ConnRecord, FakeUpstream, Fault, Script

__all__ = ["DEFAULT_DELTAS", "HUGE_TEXT", "ConnRecord", "FakeUpstream", "Fault", "Part", "Reasoning",
           "RedactedThinking", "Rejection", "Script", "Text", "ToolCall", "Validator"]
