"""What a generation is asked for: ``ChatRequest``, in OpenAI's Chat Completions shapes (CONTRACT §3.1).

Messages and tools keep OpenAI's JSON shapes as plain dicts (validated at the HTTP edge, ``http/chat_body.py``):
they are the lingua franca of LLM clients, the OpenAI-compatible provider sends them on unchanged, and the
other providers translate them. The fields the gateway owns are attributes; every other request field goes in
``extra`` and is passed through to OpenAI-compatible upstreams, or refused by a provider that cannot honour it
(``Provider.check_request``). A ``ChatRequest`` is never mutated once made: its fields are ``Final`` (the type
checker refuses an assignment, the compiled class raises ``AttributeError``; ``dataclasses.replace`` makes a
changed copy). It writes its own ``__init__``, which mypyc compiles (``core/outcome.py`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ChatRequest", "Message", "message_text"]

Message = dict[str, Any]
"""One message: ``{"role", "content", ...}`` as in OpenAI's Chat Completions (``tool_calls``, ``tool_call_id``,
and ssegate's ``reasoning`` / ``provider_data`` on assistant messages)."""


def message_text(message: Message) -> str:
    """The text of a message: its string content, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(slots=True)
class ChatRequest:
    messages: Final[list[Message]]
    model: Final[str]
    max_tokens: Final[int | None]
    temperature: Final[float | None]
    stop: Final[list[str] | None]
    tools: Final[list[dict[str, Any]] | None]
    tool_choice: Final[str | dict[str, Any] | None]
    parallel_tool_calls: Final[bool | None]
    response_format: Final[dict[str, Any] | None]
    reasoning_effort: Final[str | None]
    extra: Final[dict[str, Any]]
    """Request fields the gateway does not own (``seed``, ``top_p``, ``user``, ...), as the client sent them."""
    max_tokens_field: Final[str]
    """The name the client used for the output limit (``max_completion_tokens`` for OpenAI's newer models)."""
    resume_grace_s: Final[float | None]
    """How long the generation goes on without a client, waiting for a resume (CONTRACT §5); None: the server's
    ``DETACH_GRACE_S``."""
    echo: Final[dict[str, Any] | None]
    """What a client protocol repeats of its request in every answer it builds from the log (the Responses API's
    ``instructions``, ``tools``, ``metadata``, ``created_at``, ...). Kept in the log's ``start`` entry, so that
    every replica and every resume has it; never sent upstream."""
    history: Final[bytes | None]
    """What the stream's log keeps, as JSON, for a later request to continue from (``StreamLog.history``): the
    Responses API keeps the messages it sent upstream without its instructions (``previous_response_id``). Never
    sent upstream as such."""

    def __init__(
        self, messages: list[Message], model: str, max_tokens: int | None = None, temperature: float | None = None,
        stop: list[str] | None = None, tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None, parallel_tool_calls: bool | None = None,
        response_format: dict[str, Any] | None = None, reasoning_effort: str | None = None,
        extra: dict[str, Any] | None = None, max_tokens_field: str = "max_tokens",
        resume_grace_s: float | None = None, echo: dict[str, Any] | None = None, history: bytes | None = None,
    ) -> None:
        self.messages = messages
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.stop = stop
        self.tools = tools
        self.tool_choice = tool_choice
        self.parallel_tool_calls = parallel_tool_calls
        self.response_format = response_format
        self.reasoning_effort = reasoning_effort
        self.extra = {} if extra is None else extra
        self.max_tokens_field = max_tokens_field
        self.resume_grace_s = resume_grace_s
        self.echo = echo
        self.history = history

    @property
    def prompt_text(self) -> str:
        return "\n".join(message_text(m) for m in self.messages)

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return message_text(m)
        return ""
