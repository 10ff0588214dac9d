"""Request bodies of the chat endpoints: OpenAI's Chat Completions shapes, validated.

The models below check every field a client may send (CONTRACT §3.1, §7), so a wrong shape is a 400/422 that
names it (``messages.2.tool_call_id: Field required``). What is forwarded upstream is the client's own JSON, not a
re-serialisation of the models: an OpenAI-compatible upstream receives tools, tool choices, response formats,
image parts, tool-call ids and every field the gateway does not own exactly as they were sent.

``NativeChatIn`` (``POST /v1/chat/stream``) accepts the fields of CONTRACT §3 and refuses others;
``ChatCompletionIn`` (``POST /v1/chat/completions``) accepts any field and passes those it does not own through.
Fields ssegate cannot relay (``logprobs``, ``top_logprobs``, ``n`` > 1) are refused on both endpoints and for every
upstream, with a 400 naming them (not the 422 of an unknown field: the message says why), by ``starts.chat_request``,
which turns a validated body into the ``ChatRequest`` (compiled: these models cannot be).

``plain_body.py`` holds a subset of these rules for msgspec (the direct routes' plain bodies): a bound, a field or
a validator changed here is changed there too (``tests/test_plain_body.py`` compares the two, field by field).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["OWNED_FIELDS", "ChatCompletionIn", "NativeChatIn"]

MAX_TEXT = 1_000_000
"""Characters in one text field (a message's content, one part's text)."""
MAX_URL = 25 << 20
"""Characters in one image URL (a data URL carries the image itself: the body limit bounds it too)."""
MAX_MESSAGES = 2000
MAX_PARTS = 256
MAX_TOOLS = 256

Str = Annotated[str, Field(max_length=MAX_TEXT)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: Str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: Annotated[str, Field(max_length=MAX_URL)]
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if url.startswith(("https://", "http://")):
            return url
        if url.startswith("data:image/") and ";base64," in url[:100]:
            return url
        raise ValueError("an image URL is https://... or a data:image/...;base64,... URL")


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"]
    image_url: ImageURL


class OtherPart(BaseModel):
    """``input_audio``, ``file``, ``refusal``: relayed to OpenAI-compatible upstreams, refused by the others."""

    model_config = ConfigDict(extra="allow")
    type: Literal["input_audio", "file", "refusal"]


UserPart = Annotated[TextPart | ImagePart | OtherPart, Field(discriminator="type")]
Parts = Annotated[list[UserPart], Field(max_length=MAX_PARTS)]


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Name
    arguments: Annotated[str, Field(max_length=MAX_TEXT)]
    """A JSON string, as OpenAI sends it (never an object)."""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: FunctionCall


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, OpenAI's newer fields: relayed, or refused by a provider
    name: Annotated[str | None, Field(max_length=256)] = None


class SystemMessage(_Message):
    role: Literal["system", "developer"]
    content: Str | Parts


class UserMessage(_Message):
    role: Literal["user"]
    content: Str | Parts


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: Str | Parts | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    reasoning: Str | None = None
    """The reasoning text of that turn (ssegate; some upstreams need it back, e.g. DeepSeek with tools)."""
    provider_data: dict[str, Any] | None = None
    """As received in ``done``: sent back so that the upstream accepts the turn (e.g. Anthropic signatures)."""


class ToolMessage(_Message):
    role: Literal["tool"]
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)]
    content: Str | Parts


class FunctionMessage(_Message):
    """OpenAI's deprecated ``function`` role: relayed to OpenAI-compatible upstreams only."""

    role: Literal["function"]
    content: Str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
                    Field(discriminator="role")]


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")  # strict, ...
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: Annotated[str | None, Field(max_length=MAX_TEXT)] = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: Name


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")  # description, strict
    name: Annotated[str, Field(min_length=1, max_length=64)]
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
Stop = Annotated[str, Field(max_length=MAX_TEXT)] | Annotated[list[Str], Field(max_length=16)] | None
Effort = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


class _ChatIn(BaseModel):
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    model: Annotated[str | None, Field(max_length=256)] = None
    max_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    stop: Stop = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Effort | None = None
    """``minimal``, ``low``, ``medium``, ``high`` (or what the upstream knows)."""
    n: int | None = None
    """Only 1: ssegate relays one choice per request (any other value is a 400)."""
    logprobs: bool | None = None
    """Only false: ssegate does not relay log probabilities (true is a 400)."""
    top_logprobs: int | None = None
    """Refused (a 400): ssegate does not relay log probabilities."""


class NativeChatIn(_ChatIn):
    """``POST /v1/chat/stream`` (CONTRACT §3)."""

    model_config = ConfigDict(extra="forbid")
    resume_grace_s: Annotated[float | None, Field(ge=0, le=86400)] = None
    """Keep generating this long after the client drops, for a resume (capped by RESUME_GRACE_MAX_S)."""


class StreamOptions(BaseModel):
    """``stream_options``: any other key is refused by name (``starts.STREAM_OPTIONS``), not here, so that its
    400 says why."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False
    include_obfuscation: bool | None = None
    """No effect: ssegate's chunks carry no obfuscation padding."""


class ChatCompletionIn(_ChatIn):
    """``POST /v1/chat/completions`` (CONTRACT §7): OpenAI's request; fields not listed are passed through."""

    model_config = ConfigDict(extra="allow")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None


OWNED_FIELDS = frozenset({
    "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "stop", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "reasoning_effort", "stream", "stream_options", "n", "logprobs",
    "top_logprobs", "resume_grace_s",
})
"""Request fields the gateway reads itself; every other field of ``ChatCompletionIn`` is passed through."""
