"""The parts of an answer: what a provider (or your own generator, CONTRACT §10) produces, one at a time.

```
str             a piece of the answer's text
Reasoning       a piece of the model's reasoning ("thinking") text
ToolCallStart   call ``index`` begins: its ``id`` and function ``name`` (0, 1, ... in order of appearance)
ToolCallDelta   the next piece of call ``index``'s JSON arguments (a piece of text, not always valid JSON alone)
Finish          the end: finish reason, usage when known, and opaque ``provider_data`` for the next turn
```

Text is a plain ``str`` so that the common case costs no object per token. A stream of parts is well formed
when every ``ToolCallDelta`` comes after the ``ToolCallStart`` of its index; ``Finish`` ends it. These are plain
values with no behaviour and no third-party imports: the client, the core and every provider share them.
``Reasoning`` and ``ToolCallDelta``, made once per token, are frozen dataclasses with their own ``__init__``: it sets
the slots through their descriptors, where the generated one goes through ``object.__setattr__`` (~500 → ~280 ns
for a ``ToolCallDelta``); they compare, hash, print and refuse assignment as the generated ones do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Finish", "Part", "Reasoning", "ToolCallDelta", "ToolCallStart", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    """Counted by the gateway (the upstream reported none, or the stream was cut short)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
        }


def _setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The setter of slot ``name`` of ``cls`` (it bypasses a frozen class's ``__setattr__``: for ``__init__``)."""
    setter: Callable[[Any, Any], None] = vars(cls)[name].__set__
    return setter


@dataclass(frozen=True, slots=True, init=False)
class Reasoning:
    text: str

    def __init__(self, text: str) -> None:
        _set_text(self, text)


_set_text = _setter(Reasoning, "text")


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True, init=False)
class ToolCallDelta:
    index: int
    arguments: str

    def __init__(self, index: int, arguments: str) -> None:
        _set_index(self, index)
        _set_arguments(self, arguments)


_set_index = _setter(ToolCallDelta, "index")
_set_arguments = _setter(ToolCallDelta, "arguments")


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str = "stop"
    """``stop``, ``length``, ``tool_calls``, ``content_filter`` (OpenAI's names)."""
    usage: Usage | None = None
    provider_data: dict[str, Any] | None = None
    """What the client must send back on the assistant message of the next turn for the upstream to accept it
    (e.g. Anthropic thinking signatures). Opaque to clients."""


Part = str | Reasoning | ToolCallStart | ToolCallDelta
