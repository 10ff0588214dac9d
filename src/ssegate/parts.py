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
The module is compiled (mypyc, ``pyproject.toml``): ``Reasoning`` and ``ToolCallDelta`` are made once per token
and every compiled module tells the parts apart by type (a tool-call stream: ~5% fewer instructions per event).
Each class writes its own ``__init__`` (``@dataclass``'s would run in the interpreter); its fields are ``Final``
(the type checker refuses an assignment, the compiled class raises ``AttributeError``); ``@dataclass`` gives ``==``,
``repr`` and (``unsafe_hash``: nothing assigns the fields) ``hash``, ``_Value`` pickling. A ``Finish`` holds a dict
(``provider_data``) and is not hashed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final

__all__ = ["Finish", "Part", "Reasoning", "ToolCallDelta", "ToolCallStart", "Usage"]


class _Value:
    """What the part values share: pickled as their class and their fields' values."""

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return type(self), tuple(getattr(self, f.name) for f in fields(self))  # type: ignore[arg-type]


@dataclass(slots=True, unsafe_hash=True)
class Usage(_Value):
    prompt_tokens: Final[int]
    completion_tokens: Final[int]
    estimated: Final[bool]
    """Counted by the gateway (the upstream reported none, or the stream was cut short)."""

    def __init__(self, prompt_tokens: int, completion_tokens: int, estimated: bool = False) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.estimated = estimated

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
        }


@dataclass(slots=True, unsafe_hash=True)
class Reasoning(_Value):
    text: Final[str]

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(slots=True, unsafe_hash=True)
class ToolCallStart(_Value):
    index: Final[int]
    id: Final[str]
    name: Final[str]

    def __init__(self, index: int, id: str, name: str) -> None:
        self.index = index
        self.id = id
        self.name = name


@dataclass(slots=True, unsafe_hash=True)
class ToolCallDelta(_Value):
    index: Final[int]
    arguments: Final[str]

    def __init__(self, index: int, arguments: str) -> None:
        self.index = index
        self.arguments = arguments


@dataclass(slots=True)
class Finish(_Value):
    reason: Final[str]
    """``stop``, ``length``, ``tool_calls``, ``content_filter`` (OpenAI's names)."""
    usage: Final[Usage | None]
    provider_data: Final[dict[str, Any] | None]
    """What the client must send back on the assistant message of the next turn for the upstream to accept it
    (e.g. Anthropic thinking signatures). Opaque to clients."""

    def __init__(
        self, reason: str = "stop", usage: Usage | None = None, provider_data: dict[str, Any] | None = None,
    ) -> None:
        self.reason = reason
        self.usage = usage
        self.provider_data = provider_data


Part = str | Reasoning | ToolCallStart | ToolCallDelta
