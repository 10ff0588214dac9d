"""What a generation is asked for: ``ChatRequest``, in OpenAI's Chat Completions shapes (CONTRACT §3.1).

Messages and tools keep OpenAI's JSON shapes as plain dicts (validated at the HTTP edge, ``http/chat_body.py``):
they are the lingua franca of LLM clients, the OpenAI-compatible provider sends them on unchanged, and the
other providers translate them. The fields the gateway owns are attributes; every other request field goes in
``extra`` and is passed through to OpenAI-compatible upstreams, or refused by a provider that cannot honour it
(``Provider.check_request``). A ``ChatRequest`` is never mutated once made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[Message]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Request fields the gateway does not own (``seed``, ``top_p``, ``user``, ...), as the client sent them."""
    max_tokens_field: str = "max_tokens"
    """The name the client used for the output limit (``max_completion_tokens`` for OpenAI's newer models)."""
    resume_grace_s: float | None = None
    """How long the generation goes on without a client, waiting for a resume (CONTRACT §5); None: the server's
    ``DETACH_GRACE_S``."""
    echo: dict[str, Any] | None = None
    """What a client protocol repeats of its request in every answer it builds from the log (the Responses API's
    ``instructions``, ``tools``, ``metadata``, ``created_at``, ...). Kept in the log's ``start`` entry, so that
    every replica and every resume has it; never sent upstream."""
    history: bytes | None = None
    """What the stream's log keeps, as JSON, for a later request to continue from (``StreamLog.history``): the
    Responses API keeps the messages it sent upstream without its instructions (``previous_response_id``). Never
    sent upstream as such."""

    @property
    def prompt_text(self) -> str:
        return "\n".join(message_text(m) for m in self.messages)

    @property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return message_text(m)
        return ""
