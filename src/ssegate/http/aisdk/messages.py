"""The AI SDK's request body (``DefaultChatTransport``) → a ``ChatRequest`` in OpenAI's shapes.

The body is ``{"id": <chat id>, "messages": [UIMessage], "trigger", "messageId"?}`` plus what the app adds with
``body: {...}`` (in ``useChat``'s transport or per ``sendMessage``). The app's fields are the generation fields
of ``POST /v1/chat/stream`` (CONTRACT §3): ``model`` picks the model, and ``max_tokens``, ``temperature``,
``stop``, ``tools``, ``tool_choice``, ``parallel_tool_calls``, ``response_format``, ``reasoning_effort``,
``resume_grace_s`` mean what they mean there. The AI SDK sends no tool definitions itself: an app that wants
the model to call tools sends them in ``body.tools`` (OpenAI's function shape). Any other field is a 400 naming
it: ssegate cannot honour what it does not know, and says so rather than drop it.

UIMessages become OpenAI messages the way the SDK's own ``convertToModelMessages`` reads them:

- ``system``: its text parts, joined;
- ``user``: ``text`` parts, and ``file`` parts with an image ``mediaType`` (``url`` a data URL or https) as
  ``image_url`` parts; other files are refused;
- ``assistant``: split into turns at each ``step-start`` (one upstream call each). A turn's ``text`` is the
  content, its ``reasoning`` parts the ``reasoning``, its tool parts (``tool-<name>`` or ``dynamic-tool``) the
  ``tool_calls`` (``input`` as the JSON ``arguments``), each followed by a ``tool`` message with the output
  (``output-available``: the output, a string as it is, anything else as JSON; ``output-error``: the error text;
  ``output-denied``: the denial). ``providerMetadata.ssegate.provider_data`` on a part (what the stream put
  there, ``encoder.py``) is the turn's ``provider_data``. A call still ``input-streaming`` (an answer cut off
  while the model wrote the call) is left out; a call without its output (``input-available``, approval states)
  is refused: the app must add the output first.
- ``source-url``, ``source-document``, ``data-*`` parts are the UI's own and never reach the model (as in the SDK);
  a part type not listed here is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...core.request import ChatRequest, Message
from ...errors import InvalidRequest
from ..chat_body import MAX_MESSAGES, MAX_PARTS, NativeChatIn
from ..starts import chat_request

__all__ = ["ChatId", "UIChat", "describe", "ui_chat_request"]

ChatId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^/\x00-\x1f\x7f]+$")]
ENVELOPE = ("id", "messages", "trigger", "messageId")
"""The fields the AI SDK itself sends; every other field of the body is the app's (``body: {...}``)."""
SKIPPED = ("step-start", "source-url", "source-document")
"""UI-only parts that never reach the model (with ``data-*``)."""
ALLOWED_NOTE = "(text, file, reasoning, tool-<name>, dynamic-tool, step-start, source-url, source-document, data-*)"


class UIMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # metadata, createdAt, ...: the app's own
    id: Annotated[str, Field(max_length=256)] = ""
    role: Literal["system", "user", "assistant"]
    parts: Annotated[list[dict[str, Any]], Field(max_length=4 * MAX_PARTS)]


class UIChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ChatId
    messages: Annotated[list[UIMessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: Annotated[str | None, Field(max_length=256)] = None  # the SDK's name


@dataclass(frozen=True, slots=True)
class UIChat:
    """What the route needs besides the ``ChatRequest``."""

    chat_id: str
    trigger: str
    continues: str | None
    """The id of the assistant message this answer continues (the last message is an assistant's, e.g. after
    a client-side tool's output), which the stream's ``start`` must name; None for a new message."""


def describe(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def ui_chat_request(raw: Any, model_for: Any) -> tuple[UIChat, ChatRequest]:
    """Validate an AI SDK request body and make its ``ChatRequest``; ``model_for(model)`` picks the model."""
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object (the AI SDK's chat request)")
    try:
        envelope = UIChatIn.model_validate({k: raw[k] for k in ENVELOPE if k in raw})
    except ValidationError as exc:
        raise InvalidRequest(describe(exc), status=422) from exc
    messages = to_openai(envelope.messages)
    if not messages:
        raise InvalidRequest("messages: nothing to send (no text, image or tool output in any message)")
    native_raw = {k: v for k, v in raw.items() if k not in ENVELOPE}
    native_raw["messages"] = messages
    try:
        body = NativeChatIn.model_validate(native_raw)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc), status=422) from exc
    chat = chat_request(body.__dict__, native_raw, model_for(body.model), False)
    last = envelope.messages[-1]
    continues = (last.id or None) if last.role == "assistant" else None
    return UIChat(envelope.id, envelope.trigger, continues), chat


# --- UIMessages -> OpenAI messages ---------------------------------------------------------------------------
def to_openai(messages: list[UIMessageIn]) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if m.role == "assistant":
            out += _assistant(m.parts, where)
        elif m.role == "user":
            content = _user(m.parts, where)
            if content:
                out.append({"role": "user", "content": content})
        else:
            text = "".join(_text(p, f"{where}.parts.{j}") for j, p in enumerate(m.parts) if p.get("type") == "text")
            if text:
                out.append({"role": "system", "content": text})
    return out


def _type(part: dict[str, Any], where: str) -> str:
    kind = part.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidRequest(f"{where}.type: a part needs a 'type'")
    return kind


def _text(part: dict[str, Any], where: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.text: a {part.get('type')} part needs its 'text' (a string)")
    return text


def _ui_only(kind: str) -> bool:
    return kind in SKIPPED or kind.startswith("data-")


def _user(parts: list[dict[str, Any]], where: str) -> str | list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        at = f"{where}.parts.{j}"
        kind = _type(part, at)
        if kind == "text":
            content.append({"type": "text", "text": _text(part, at)})
        elif kind == "file":
            content.append(_image(part, at))
        elif _ui_only(kind):
            continue
        else:
            raise InvalidRequest(f"{at}.type: {kind!r} parts cannot be sent in a user message {ALLOWED_NOTE}")
    if all(p["type"] == "text" for p in content):
        return "".join(p["text"] for p in content)
    return content


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    media = part.get("mediaType")
    url = part.get("url")
    if not isinstance(media, str) or not media.startswith("image/"):
        raise InvalidRequest(f"{where}.mediaType: only image files can be sent to the model (got {media!r})")
    if not isinstance(url, str) or not (url.startswith(("https://", "http://")) or url.startswith("data:image/")):
        raise InvalidRequest(f"{where}.url: an image is an https:// URL or a data:image/...;base64,... URL")
    return {"type": "image_url", "image_url": {"url": url}}


def _provider_data(meta: Any) -> dict[str, Any] | None:
    if isinstance(meta, dict):
        ours = meta.get("ssegate")
        if isinstance(ours, dict) and isinstance(ours.get("provider_data"), dict):
            return dict(ours["provider_data"])
    return None


@dataclass(slots=True)
class _Turn:
    """One step of an assistant message: one upstream call's output."""

    text: list[str]
    reasoning: list[str]
    calls: list[dict[str, Any]]
    results: list[Message]
    provider_data: dict[str, Any] | None = None

    def messages(self) -> list[Message]:
        text = "".join(self.text)
        if not text and not self.calls:
            return []  # reasoning alone (an answer cut off while thinking) says nothing to the model
        message: Message = {"role": "assistant", "content": text or None}
        if self.reasoning:
            message["reasoning"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = self.calls
        if self.provider_data:
            message["provider_data"] = self.provider_data
        return [message, *self.results]


def _assistant(parts: list[dict[str, Any]], where: str) -> list[Message]:
    out: list[Message] = []
    turn = _Turn([], [], [], [])
    for j, part in enumerate(parts):
        at = f"{where}.parts.{j}"
        kind = _type(part, at)
        if kind == "step-start":
            out += turn.messages()
            turn = _Turn([], [], [], [])
            continue
        if kind == "text" or kind == "reasoning":
            (turn.text if kind == "text" else turn.reasoning).append(_text(part, at))
            turn.provider_data = _provider_data(part.get("providerMetadata")) or turn.provider_data
        elif kind == "dynamic-tool" or kind.startswith("tool-"):
            _tool(part, kind, at, turn)
        elif _ui_only(kind):
            continue
        else:
            raise InvalidRequest(f"{at}.type: {kind!r} parts cannot be sent in an assistant message {ALLOWED_NOTE}")
    return out + turn.messages()


def _tool(part: dict[str, Any], kind: str, where: str, turn: _Turn) -> None:
    name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]
    call_id = part.get("toolCallId")
    state = part.get("state")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.toolName: a dynamic-tool part needs its 'toolName'")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}.toolCallId: a tool part needs its 'toolCallId'")
    if state == "input-streaming":
        return  # the answer was cut off while the model wrote this call: there is no call to answer
    if state == "output-available":
        output = part.get("output")
        result = output if isinstance(output, str) else orjson.dumps(output).decode()
    elif state == "output-error":
        result = str(part.get("errorText") or "the tool failed")
    elif state == "output-denied":
        approval = part.get("approval")
        reason = approval.get("reason") if isinstance(approval, dict) else None
        result = str(reason or "Tool call execution denied.")
    else:
        raise InvalidRequest(f"{where}.state: tool call {call_id!r} ({name}) has no output yet (state {state!r}): "
                             "add the tool's output (addToolResult / addToolOutput) before sending")
    tool_input = part.get("input")
    arguments = tool_input if isinstance(tool_input, str) else orjson.dumps(
        {} if tool_input is None else tool_input).decode()
    turn.calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    turn.results.append({"role": "tool", "tool_call_id": call_id, "content": result})
    turn.provider_data = _provider_data(part.get("callProviderMetadata")) or turn.provider_data
