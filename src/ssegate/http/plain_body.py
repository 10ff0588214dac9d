"""The chat bodies most requests are, checked by msgspec: text messages and scalar options.

Validating a chat body with its pydantic model (``chat_body.py``) was ~20k instructions of a short stream's ~410k
(``python -m bench.callgrind``); most bodies are a few text messages and a model name, which msgspec checks, and
gives the values of, in a third of the time. The structs below accept a strict subset of what the models accept, and
where they accept a body they read the same values from it: every field here has the model's bounds, types that
msgspec converts as pydantic does (an integer for a float field is the same float; msgspec refuses what pydantic
coerces, such as ``"1"`` for an integer or ``1`` for a boolean), and a message here has only ``role`` (not ``tool``,
not ``function``), a text ``content`` and ``name``. The fields of a richer shape (``tools``, ``tool_choice``,
``response_format``, content parts) are accepted here only as ``null``. A body these structs refuse, for any reason,
is validated by its pydantic model, which accepts it or words the error (``direct_routes.py``): errors are the
models' own, and the OpenAPI docs are the models'. ``tests/test_plain_body.py`` holds the two together, field by
field and on generated bodies.

``direct_routes.plain_fields`` (compiled) checks a body against one of these and gives what the model's
``__dict__`` would hold for the fields the gateway reads (``starts.py``); ``messages`` is read from the parsed JSON,
as it is beside a model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from .chat_body import MAX_MESSAGES, MAX_TEXT

__all__ = ["Plain", "PlainChatCompletion", "PlainNativeChat"]

_Text = Annotated[str, Meta(max_length=MAX_TEXT)]
_Tokens = Annotated[int, Meta(ge=1, le=10_000_000)]


class PlainMessage(Struct, forbid_unknown_fields=True, gc=False):
    """A text message of a role whose content may be text (any other key: the model decides)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: _Text
    name: Annotated[str, Meta(max_length=256)] | None = None


class Plain(Struct, gc=False):
    messages: Annotated[list[PlainMessage], Meta(min_length=1, max_length=MAX_MESSAGES)]
    model: Annotated[str, Meta(max_length=256)] | None = None
    max_tokens: _Tokens | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    stop: _Text | Annotated[list[_Text], Meta(max_length=16)] | None = None
    tools: None = None
    tool_choice: None = None
    parallel_tool_calls: bool | None = None
    response_format: None = None
    reasoning_effort: Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[a-z_]+$")] | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class PlainNativeChat(Plain, forbid_unknown_fields=True, gc=False):
    """``NativeChatIn``'s subset (which refuses unknown fields too)."""

    resume_grace_s: Annotated[float, Meta(ge=0, le=86400)] | None = None


class PlainStreamOptions(Struct, gc=False):
    """``StreamOptions``' subset (other keys are refused by ``starts.chat_request``, read from the parsed JSON)."""

    include_usage: bool = False
    include_obfuscation: bool | None = None


class PlainChatCompletion(Plain, gc=False):
    """``ChatCompletionIn``'s subset: unknown fields are passed through (read from the parsed JSON), as the model
    allows them."""

    stream: bool | None = False
    stream_options: PlainStreamOptions | None = None
    max_completion_tokens: _Tokens | None = None
