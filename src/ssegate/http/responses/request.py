"""``POST /v1/responses`` bodies → a ``ChatRequest`` (OpenAI Chat Completions shapes) for the same generations.

The Responses API says the same things as Chat Completions in other words, so a request is translated once, here,
and then takes the one road every stream takes (providers, generation, log). The translation:

=================================================  ==================================================================
Responses                                          Chat Completions (``ChatRequest``)
=================================================  ==================================================================
``instructions``                                   a first ``system`` message
``input`` text                                     one ``user`` message
message items (``user``/``system``/``developer``)  messages of that role; ``input_text`` → ``text`` parts,
                                                   ``input_image`` → ``image_url`` parts, ``input_file`` → ``file``
                                                   parts, ``input_audio`` → ``input_audio`` parts
``reasoning`` / assistant ``message`` /            one ``assistant`` message per turn: the reasoning summary text as
``function_call`` items (a previous output)        ssegate's ``reasoning``, ``encrypted_content`` as its
                                                   ``provider_data``, ``output_text`` as content, calls as
                                                   ``tool_calls``
``function_call_output``                           a ``tool`` message for its ``call_id``
flat function ``tools``                            ``{"type": "function", "function": {...}}``
``tool_choice`` ``{"type": "function", "name"}``   ``{"type": "function", "function": {"name"}}``
``text.format`` json_schema / json_object          ``response_format``
``text.verbosity``                                 ``verbosity``
``reasoning.effort``                               ``reasoning_effort``
``max_output_tokens``                              ``max_tokens``
``top_p``, ``user``, ``service_tier``,             passed through as they are
``safety_identifier``, ``prompt_cache_key``,
``prompt_cache_retention``
=================================================  ==================================================================

What the response object repeats of the request (``instructions``, ``tools``, ``metadata``, ``store``, ...) and
``created_at`` go in ``ChatRequest.echo``, which the log keeps in its ``start`` entry (``encoder.py`` reads it back).

``previous_response_id`` continues a response that ssegate still holds (``Previous``, found by ``routes.py``): the
messages start with this request's ``instructions`` (those of the previous response are not carried over, as at
OpenAI), then the previous response's conversation (its ``history``: what it sent upstream without its
instructions, itself including the responses it continued), then its output items translated as above, then this
request's ``input``. That conversation without the instructions is this response's ``history``
(``ChatRequest.history``), kept with its log for the next one (unless ``store: false``).

Refused with a 400 naming the field: ``conversation`` (ssegate keeps no conversation objects: send the previous
output items in ``input``, or use ``previous_response_id``), hosted tools (``web_search``, ``file_search``, ...),
``item_reference`` and other items the Chat Completions shape cannot carry, ``truncation: "auto"``,
``top_logprobs`` / logprobs, ``max_tool_calls``, ``prompt``, and any field this module does not know. A field the
upstream cannot honour is refused by its provider with the Responses name of the field (``Origins.translate``).
Item bookkeeping (an item's ``id`` and ``status``, an output text's ``annotations``) is accepted and not needed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...core.request import ChatRequest, Message
from ...errors import InvalidRequest
from ..chat_body import MAX_MESSAGES, MAX_PARTS, MAX_TEXT, MAX_TOOLS

__all__ = ["ECHO_API", "PREVIOUS", "Origins", "Previous", "ResponsesIn", "parse_body", "responses_request"]

ECHO_API = "responses"
"""The ``api`` key of this protocol's echo: a log whose ``start`` carries it is a response."""

PREVIOUS = "previous_response_id"
"""The field that names the response a request continues (and the ``param`` of its errors)."""

Str = Annotated[str, Field(max_length=MAX_TEXT)]
Short = Annotated[str, Field(max_length=256)]

REFUSED = {
    "conversation": ("ssegate keeps no conversation objects: send the previous output items in 'input', or use "
                     "'previous_response_id'"),
    "prompt": "ssegate has no stored prompt templates",
    "max_tool_calls": "ssegate runs no tools itself",
    "top_logprobs": "ssegate does not relay log probabilities",
    "context_management": "ssegate does not compact conversations",
    "moderation": "ssegate does not moderate",
    "background_options": "not supported by ssegate",
    "prompt_cache_options": "not supported by ssegate",
    "access_programs": "not supported by ssegate",
    "image": "not supported by ssegate",
}
"""Fields of OpenAI's Responses API that ssegate refuses (a ``null`` value is the same as leaving them out)."""

PASSED_THROUGH = ("top_p", "user", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention")
"""Fields that mean the same in Chat Completions: sent upstream as they are (or refused by the provider)."""

INCLUDABLE = frozenset({"reasoning.encrypted_content"})
"""``include`` values ssegate honours: reasoning items always carry what the upstream needs back as
``encrypted_content``; the others name outputs of hosted tools or logprobs, which ssegate does not have."""


class ResponsesIn(BaseModel):
    """The body of ``POST /v1/responses``: the fields ssegate reads; the others are checked in ``_check_extra``."""

    model_config = ConfigDict(extra="allow")
    model: Short | None = None
    input: Str | Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)]
    instructions: Str | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1)] = None
    stream: bool | None = None
    background: bool | None = None
    store: bool | None = None
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None
    user: Short | None = None
    include: Annotated[list[str], Field(max_length=32)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream_options: dict[str, Any] | None = None
    service_tier: Short | None = None
    safety_identifier: Short | None = None
    prompt_cache_key: Short | None = None
    prompt_cache_retention: Short | None = None
    previous_response_id: Short | None = None


@dataclass(frozen=True, slots=True)
class Previous:
    """The response that a request continues (``previous_response_id``), as its log has it."""

    id: str
    history: list[Message]
    """What it sent upstream, without its instructions (its ``ChatRequest.history``)."""
    output: list[dict[str, Any]]
    """Its output items, as its response object has them."""


def parse_body(raw: Any) -> ResponsesIn:
    """The validated body; every problem is a 400 naming its field (OpenAI answers 400 there, not 422)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        body = ResponsesIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidRequest(f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))) from None
    _check_extra(body)
    return body


def _check_extra(body: ResponsesIn) -> None:
    for name, value in (body.model_extra or {}).items():
        if value is None:
            continue
        if name in REFUSED:
            raise InvalidRequest(f"{name}: {REFUSED[name]}")
        raise InvalidRequest(f"{name}: not a field of the Responses API that ssegate knows")
    if body.truncation == "auto":
        raise InvalidRequest("truncation: 'auto' is not supported (ssegate never drops input items)")
    for value in body.include or []:
        if value not in INCLUDABLE:
            raise InvalidRequest(f"include: {value!r} is not available through ssegate")
    if body.background and body.store is False:
        raise InvalidRequest("background: a background response must be stored (store: false)")
    for key in body.stream_options or {}:
        if key != "include_obfuscation":
            raise InvalidRequest(f"stream_options.{key}: not supported")


# --- where each chat field came from: provider errors name the field the client sent ---------------------------
_TOP = {"response_format": "text.format", "verbosity": "text.verbosity", "reasoning_effort": "reasoning.effort",
        "max_tokens": "max_output_tokens"}
_MESSAGE = re.compile(r"messages\[(\d+)\]((?:\.tool_calls\[(\d+)\]\.function\.arguments)|\.provider_data)?")
_TOOL = re.compile(r"tools\[(\d+)\]\.function\.")
_LEADING = re.compile(r"^([a-z_]+)(?=[:.\[ ])")


class Origins:
    """For each chat message, the Responses field it came from; ``translate`` rewrites a provider's message."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.calls: dict[tuple[int, int], str] = {}
        self.reasoning: dict[int, str] = {}

    def translate(self, text: str) -> str:
        def message(m: re.Match[str]) -> str:
            i = int(m.group(1))
            where = self.messages[i] if i < len(self.messages) else m.group(0)
            if m.group(3) is not None:
                return self.calls.get((i, int(m.group(3))), where) + ".arguments"
            if m.group(2) == ".provider_data":
                return self.reasoning.get(i, where) + ".encrypted_content"
            return where

        text = _MESSAGE.sub(message, text)
        text = text.replace(".image_url.detail", ".detail")  # an input_image's detail sits beside its URL
        text = _TOOL.sub(r"tools[\1].", text)
        return _LEADING.sub(lambda m: _TOP.get(m.group(1), m.group(1)), text, count=1)


# --- input items → chat messages -----------------------------------------------------------------------------------
def _str(value: Any, where: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a string")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"{where}: longer than {MAX_TEXT} characters")
    return value


def _part(part: Any, where: str, *, assistant: bool) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where}: expected an object")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": _str(part.get("text"), f"{where}.text")}
    if kind == "refusal" and assistant:  # what the assistant said, as text (chat content has no refusal parts)
        return {"type": "text", "text": _str(part.get("refusal"), f"{where}.refusal")}
    if assistant:
        raise InvalidRequest(f"{where}.type: {kind!r} parts are not accepted in assistant messages")
    if kind == "input_image":
        if part.get("file_id"):
            raise InvalidRequest(f"{where}.file_id: ssegate has no file store; send image_url (https or data URL)")
        url = _str(part.get("image_url"), f"{where}.image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") not in (None, "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url"):
            raise InvalidRequest(f"{where}.file_url: not supported; send file_data (or file_id)")
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        if not ("file_data" in file or "file_id" in file):
            raise InvalidRequest(f"{where}: an input_file needs file_data or file_id")
        return {"type": "file", "file": file}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise InvalidRequest(f"{where}.input_audio: expected {{'data', 'format'}}")
        return {"type": "input_audio", "input_audio": audio}
    raise InvalidRequest(f"{where}.type: {kind!r} content parts are not supported")


def _content(content: Any, where: str, *, assistant: bool = False) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return _str(content, where)
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: expected a string or a list of content parts")
    if len(content) > MAX_PARTS:
        raise InvalidRequest(f"{where}: more than {MAX_PARTS} parts")
    return [_part(p, f"{where}[{j}]", assistant=assistant) for j, p in enumerate(content)]


def _tool_output(output: Any, where: str) -> str:
    """A function's output: text, or text parts (a tool message carries text only)."""
    if not isinstance(output, list):
        return _str(output, where)
    parts = [_part(p, f"{where}[{j}]", assistant=False) for j, p in enumerate(output[:MAX_PARTS + 1])]
    if len(parts) > MAX_PARTS:
        raise InvalidRequest(f"{where}: more than {MAX_PARTS} parts")
    for j, part in enumerate(parts):
        if part["type"] != "text":
            raise InvalidRequest(f"{where}[{j}]: a function's output is text (input_text parts) through ssegate")
    return _joined(parts)


def _joined(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content)


class _Messages:
    """Builds the chat messages; an assistant turn (reasoning, text, calls) is held open until something else."""

    def __init__(self, origins: Origins) -> None:
        self.out: list[Message] = []
        self.origins = origins
        self.turn: Message | None = None

    def add(self, message: Message, where: str) -> int:
        self.out.append(message)
        self.origins.messages.append(where)
        return len(self.out) - 1

    def flush(self) -> None:
        self.turn = None

    def assistant(self, where: str) -> Message:
        if self.turn is None:
            self.turn = {"role": "assistant", "content": None}
            self.add(self.turn, where)
        return self.turn

    def item(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: expected an object")
        kind = item.get("type", "message")
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            self._function_call(item, where)
        elif kind == "function_call_output":
            self.flush()
            self.add({"role": "tool", "tool_call_id": _str(item.get("call_id"), f"{where}.call_id"),
                      "content": _tool_output(item.get("output"), f"{where}.output")}, where)
        elif kind == "reasoning":
            self._reasoning(item, where)
        elif kind == "item_reference":
            raise InvalidRequest(f"{where}: item_reference needs stored items; send the items themselves")
        else:
            raise InvalidRequest(f"{where}.type: {kind!r} items are not supported (function tools only)")

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role == "assistant":
            turn = self.turn
            if turn is not None and (turn.get("content") is not None or turn.get("tool_calls")):
                self.flush()
            turn = self.assistant(where)
            turn["content"] = _joined(_content(item.get("content"), f"{where}.content", assistant=True))
            return
        if role not in ("user", "system", "developer"):
            raise InvalidRequest(f"{where}.role: expected user, assistant, system or developer")
        self.flush()
        self.add({"role": role, "content": _content(item.get("content"), f"{where}.content")}, where)

    def _function_call(self, item: dict[str, Any], where: str) -> None:
        turn = self.assistant(where)
        calls = turn.setdefault("tool_calls", [])
        if len(calls) >= MAX_TOOLS:
            raise InvalidRequest(f"{where}: more than {MAX_TOOLS} calls in one turn")
        call_id = _str(item.get("call_id"), f"{where}.call_id")
        name = _str(item.get("name"), f"{where}.name")
        arguments = _str(item.get("arguments"), f"{where}.arguments")
        if not call_id or not name:
            raise InvalidRequest(f"{where}: a function_call needs a call_id and a name")
        self.origins.calls[(len(self.out) - 1, len(calls))] = where
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})

    def _reasoning(self, item: dict[str, Any], where: str) -> None:
        summary = item.get("summary") or []
        if not isinstance(summary, list):
            raise InvalidRequest(f"{where}.summary: expected a list")
        text = "".join(_str(s.get("text") if isinstance(s, dict) else None, f"{where}.summary[{j}].text")
                       for j, s in enumerate(summary))
        turn = self.turn
        # a reasoning item that carries text opens a new turn once this one has said something; one with only
        # encrypted_content belongs to the turn it is in
        if text and turn is not None and (turn.get("content") is not None or turn.get("tool_calls")):
            self.flush()
        turn = self.assistant(where)
        if text:
            turn["reasoning"] = (turn.get("reasoning") or "") + text
        encrypted = item.get("encrypted_content")
        if encrypted is not None:
            try:
                data = orjson.loads(_str(encrypted, f"{where}.encrypted_content"))
            except orjson.JSONDecodeError:
                data = None
            if not isinstance(data, dict):
                raise InvalidRequest(f"{where}.encrypted_content: not what ssegate sent (send it back unchanged)")
            turn["provider_data"] = data
            self.origins.reasoning[len(self.out) - 1] = where


def _messages(body: ResponsesIn, origins: Origins, previous: Previous | None) -> tuple[list[Message], int]:
    """The messages, and where the conversation starts among them (after the instructions)."""
    built = _Messages(origins)
    if body.instructions:
        built.add({"role": "system", "content": body.instructions}, "instructions")
    start = len(built.out)
    if previous is not None:
        for message in previous.history:
            built.add(message, PREVIOUS)
        for item in previous.output:  # the same translation as when a client sends them back itself
            built.item(item, PREVIOUS)
    if isinstance(body.input, str):
        built.add({"role": "user", "content": body.input}, "input")
    else:
        for i, item in enumerate(body.input):
            built.item(item, f"input[{i}]")
    if len(built.out) == start:
        raise InvalidRequest("input: empty")
    if previous is not None and len(built.out) > MAX_MESSAGES:
        raise InvalidRequest(f"{PREVIOUS}: the conversation would be longer than {MAX_MESSAGES} messages; start "
                             "another one (send the items that matter in 'input')", param=PREVIOUS)
    return built.out, start


# --- tools, tool choice, text format ---------------------------------------------------------------------------------
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for j, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            raise InvalidRequest(f"tools[{j}].type: {kind!r} tools are not supported (ssegate relays function "
                                 "tools, which your code runs)")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequest(f"tools[{j}].name: 1 to 64 letters, digits, '_', '.' or '-'")
        fn: dict[str, Any] = {"name": name}
        for key, value in tool.items():
            if key in ("type", "name") or value is None:
                continue
            if key not in ("description", "parameters", "strict"):
                raise InvalidRequest(f"tools[{j}].{key}: not supported")
            fn[key] = value
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: str | dict[str, Any] | None, names: set[str]) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        if choice not in (None, "none") and not names:
            raise InvalidRequest("tool_choice is set, but tools is empty")
        return choice
    if choice.get("type") != "function":
        raise InvalidRequest(f"tool_choice.type: {choice.get('type')!r} is not supported (function tools only)")
    name = choice.get("name")
    if name not in names:
        raise InvalidRequest(f"tool_choice names the function {name!r}, which is not in tools")
    return {"type": "function", "function": {"name": name}}


def _text(text: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any] | None:
    """``response_format`` for ``text.format``; ``text.verbosity`` goes to ``extra``."""
    if not text:
        return None
    for key, value in text.items():
        if key == "verbosity" and value is not None:
            extra["verbosity"] = value
        elif key not in ("format", "verbosity"):
            raise InvalidRequest(f"text.{key}: not supported")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise InvalidRequest("text.format: expected an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name or not isinstance(schema, dict):
            raise InvalidRequest("text.format: a json_schema format needs a 'name' and a 'schema' object")
        spec = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequest(f"text.format.type: expected text, json_object or json_schema, not {kind!r}")


def _effort(reasoning: dict[str, Any] | None) -> str | None:
    if not reasoning:
        return None
    for key in reasoning:
        if key not in ("effort", "summary", "generate_summary"):
            raise InvalidRequest(f"reasoning.{key}: not supported")
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) not in (None, "auto"):
            # the reasoning is relayed as the upstream streams it: a style of summary cannot be promised
            raise InvalidRequest(f"reasoning.{key}: only auto is supported (the reasoning comes as the upstream "
                                 f"streams it), not {reasoning[key]!r}")
    effort = reasoning.get("effort")
    if effort is not None and (not isinstance(effort, str) or not re.match(r"^[a-z_]{1,32}$", effort)):
        raise InvalidRequest("reasoning.effort: expected minimal, low, medium, high (or what the upstream knows)")
    return effort


def responses_request(body: ResponsesIn, model: str, previous: Previous | None = None
                      ) -> tuple[ChatRequest, Origins]:
    """The ``ChatRequest`` for a validated body (continuing ``previous`` when it names one), and where its fields
    came from (for the upstream's refusals)."""
    origins = Origins()
    messages, start = _messages(body, origins, previous)
    tools = _tools(body.tools or [])
    names = {t["function"]["name"] for t in tools}
    extra: dict[str, Any] = {k: getattr(body, k) for k in PASSED_THROUGH if getattr(body, k) is not None}
    response_format = _text(body.text, extra)
    reasoning = body.reasoning or {}
    echo: dict[str, Any] = {
        "api": ECHO_API,
        "created_at": int(time.time()),
        "background": bool(body.background),
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": previous.id if previous is not None else None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.store is not False,
        "temperature": body.temperature,
        "text": {"format": (body.text or {}).get("format") or {"type": "text"},
                 **({"verbosity": extra["verbosity"]} if "verbosity" in extra else {})},
        "tool_choice": body.tool_choice or "auto",
        "tools": body.tools or [],
        "top_p": body.top_p,
        "truncation": "disabled",
        "user": body.user,
        **{k: extra[k] for k in ("service_tier", "safety_identifier", "prompt_cache_key") if k in extra},
    }
    chat = ChatRequest(
        messages=messages,
        model=model,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        tools=tools or None,
        tool_choice=_tool_choice(body.tool_choice, names),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=response_format,
        reasoning_effort=_effort(body.reasoning),
        extra=extra,
        echo=echo,
        # copied to its size: kept with the log for its ttl_s, orjson's own bytes keep a 4 KiB buffer
        history=memoryview(orjson.dumps(messages[start:])).tobytes() if body.store is not False else None,
    )
    return chat, origins
