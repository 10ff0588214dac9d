"""Reading the conversation a request carries, and the checks real APIs make on it before answering.

Both dialects' request shapes are understood: OpenAI Chat Completions (``tool`` messages with
``tool_call_id``, ``image_url`` parts) and Anthropic Messages (``tool_result`` and ``image`` blocks in user
messages, ``thinking`` / ``redacted_thinking`` / ``tool_use`` blocks in assistant messages).

The checks return None when the request passes, or the error (message and OpenAI ``param``) the real API
answers with a 400; the texts are the APIs' own, as users have quoted them:

- :func:`openai_tool_call_ids`: every ``tool`` message has a ``tool_call_id`` that the assistant message
  before it (its run of tool messages aside) issued, and every issued id gets its ``tool`` message.
- :func:`anthropic_signatures`: every assistant turn with ``tool_use`` starts with its thinking, and every
  ``thinking`` / ``redacted_thinking`` block is one the fake sent, unchanged. Stricter than the API, which
  insists only on the final assistant turn: a relay has to send every turn back intact anyway.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["Rejection", "anthropic_signatures", "assistant_turns", "images", "messages", "openai_tool_call_ids",
           "text_of", "tool_results", "user_texts"]

_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


@dataclass(frozen=True)
class Rejection:
    """A request the fake refuses: answered 400 with the dialect's error shape."""

    message: str
    param: str | None = None  # OpenAI's error.param, e.g. "messages.[3].tool_call_id"


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("messages")
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's content as a list of parts/blocks (a string is one text part)."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def text_of(message: dict[str, Any]) -> str:
    """The text of a message: its string content or its text parts joined."""
    return "".join(b["text"] for b in _blocks(message) if b.get("type") == "text" and isinstance(b.get("text"), str))


def user_texts(body: dict[str, Any]) -> list[str]:
    """The text of every user message, latest first (a tool-result-only message has none)."""
    return [text_of(m) for m in reversed(messages(body)) if m.get("role") == "user"]


def assistant_turns(body: dict[str, Any]) -> int:
    """How many assistant messages the conversation already holds."""
    return sum(m.get("role") == "assistant" for m in messages(body))


def tool_results(body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """``(tool call id, content)`` of every tool result, in order: OpenAI ``tool`` messages and Anthropic
    ``tool_result`` blocks."""
    out: list[tuple[str | None, Any]] = []
    for m in messages(body):
        if m.get("role") == "tool":
            out.append((m.get("tool_call_id"), m.get("content")))
        elif m.get("role") == "user":
            out.extend((b.get("tool_use_id"), b.get("content")) for b in _blocks(m) if b.get("type") == "tool_result")
    return out


def images(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every image part as sent, in order: OpenAI ``{"type": "image_url", ...}`` parts and Anthropic
    ``{"type": "image", "source": ...}`` blocks (also those inside tool results)."""
    found: list[dict[str, Any]] = []

    def walk(blocks: list[dict[str, Any]]) -> None:
        for b in blocks:
            if b.get("type") in ("image_url", "image"):
                found.append(b)
            elif b.get("type") == "tool_result":
                walk(_blocks(b))

    for m in messages(body):
        walk(_blocks(m))
    return found


def openai_tool_call_ids(body: dict[str, Any]) -> Rejection | None:
    """OpenAI's checks on ``tool`` messages (see the module docstring)."""
    issued: list[str] = []  # the ids of the last assistant message with tool_calls, not yet answered
    owner = -1  # that assistant message's position
    answering = False  # inside the run of tool messages right after it
    for n, m in enumerate(messages(body)):
        role = m.get("role")
        if role == "tool":
            if "tool_call_id" not in m:
                return Rejection("Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                                 "'tool_call_id'.", f"messages.[{n}].tool_call_id")
            if not answering:
                return Rejection("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                                 "message with 'tool_calls'.", f"messages.[{n}].role")
            if m["tool_call_id"] not in issued:
                return Rejection(f"Invalid parameter: 'tool_call_id' of '{m['tool_call_id']}' not found in "
                                 "'tool_calls' of previous message.", f"messages.[{n}].tool_call_id")
            issued.remove(m["tool_call_id"])
            continue
        if issued:
            return _unanswered(issued, owner)
        calls = m.get("tool_calls") if role == "assistant" else None
        issued = [str(c.get("id")) for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
        owner, answering = n, bool(issued)
    return _unanswered(issued, owner) if issued else None


def _unanswered(ids: list[str], at: int) -> Rejection:
    return Rejection("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                     f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}",
                     f"messages.[{at}].role")


def anthropic_signatures(body: dict[str, Any], issued: Collection[tuple[str, str, str]]) -> Rejection | None:
    """Anthropic's checks on thinking blocks sent back (see the module docstring). ``issued`` holds
    ``("thinking", signature, thinking text)`` and ``("redacted_thinking", data, "")`` for every block sent."""
    signatures = {sig for kind, sig, _ in issued if kind == "thinking"}
    turns = [n for n, m in enumerate(messages(body)) if m.get("role") == "assistant"]
    for n in turns:
        blocks = _blocks(messages(body)[n])
        if any(b.get("type") == "tool_use" for b in blocks) and blocks[0].get("type") not in _THINKING:
            return Rejection(
                f"messages.{n}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{blocks[0].get('type')}`. When `thinking` is enabled, a final `assistant` message must start "
                "with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
                "recommend you include thinking blocks from previous turns. To avoid this requirement, disable "
                f"`thinking`. Please consult our documentation at {_THINKING_DOCS}")
        for k, b in enumerate(blocks):
            if b.get("type") == "redacted_thinking" and ("redacted_thinking", b.get("data"), "") not in issued:
                return Rejection(f"messages.{n}.content.{k}: Invalid `data` in `redacted_thinking` block")
            if b.get("type") != "thinking" or ("thinking", b.get("signature"), b.get("thinking")) in issued:
                continue
            if b.get("signature") in signatures and n == turns[-1]:
                return Rejection(f"messages.{n}.content.{k}: `thinking` or `redacted_thinking` blocks in the latest "
                                 "assistant message cannot be modified. These blocks must remain as they were in the "
                                 "original response.")
            return Rejection(f"messages.{n}.content.{k}: Invalid `signature` in `thinking` block")
    return None


_THINKING = ("thinking", "redacted_thinking")
