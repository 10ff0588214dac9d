"""A stream's log as OpenAI's Responses API sees it: the streamed events, and the response object.

``ResponseState`` reads a log's entries in order and knows, after each, the response object so far and the events
that entry adds. The events are numbered by ``sequence_number`` from 0 in the order they are made, so the numbers
are a pure function of the log: a client that resumes ``starting_after=N`` gets a state fed from the log's first
entry that writes only the events numbered above N (``ResponsesEncoder``), with no gap and no duplicate, on any
replica. The same state, fed the whole log without writing, is the object of ``GET /v1/responses/{id}`` and of a
non-streamed answer.

Entries to events (``item`` = ``response.output_item.added`` ... ``response.output_item.done``)::

    start           response.created, then response.in_progress (background: response.queued; in_progress
                    comes with the first output, and the status is "queued" until then)
    text            a message item: content_part.added, output_text.delta ..., output_text.done, content_part.done
    reasoning       a reasoning item: reasoning_summary_part.added, reasoning_summary_text.delta ...,
                    reasoning_summary_text.done, reasoning_summary_part.done
    tool_call       a function_call item (call_id, name), function_call_arguments.delta per argument piece,
                    function_call_arguments.done
    done            the open items done, then response.completed; "length" and "content_filter":
                    response.incomplete (incomplete_details.reason max_output_tokens / content_filter);
                    "cancelled": response.cancelled (status "cancelled"; OpenAI's SDK has no type for it and
                    parses it loosely: ``event.type == "response.cancelled"``)
    error           the open items done (status "incomplete"), an ``error`` event (OpenAI's nested form, which the
                    SDKs raise, with ``code``/``message`` at the top too), then response.failed with ``error``

A message or reasoning item is done when anything else starts. Function calls stay open until a message or a
reasoning item starts, or the end: some upstreams interleave the arguments of parallel calls, and a call's
arguments are whole only then. Ids are ``resp_<stream id>`` and ``msg_``/``rs_``/``fc_<stream id>_<output index>``;
a call's ``call_id`` is the upstream's. The upstream's opaque ``provider_data`` (e.g. thinking signatures) rides
on the first reasoning item as ``encrypted_content`` in the final object, so that sending the output back as the
next input keeps the upstream's reasoning; the usage is the log's (``input_tokens``, ``output_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ...core.entries import DELTA, DONE, ERROR, REASONING, START, TOOL_ARGS, TOOL_CALL
from ...errors import GatewayError
from ...sse import dumps
from ..encoders import as_error
from .request import ECHO_API

__all__ = ["ResponseState", "ResponsesEncoder", "response_id", "stream_id_of"]

RESP: Final = "resp_"

MESSAGE: Final = "message"
REASONING_ITEM: Final = "reasoning"
CALL: Final = "function_call"

_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
_OPENAI_CODES: Final = {"rate_limited": "rate_limit_exceeded"}
"""ssegate's error codes as a failed response's ``error.code`` (the others are ``server_error``)."""


def response_id(stream_id: str) -> str:
    return RESP + stream_id


def stream_id_of(rid: str) -> str | None:
    return rid[len(RESP):] if rid.startswith(RESP) and len(rid) > len(RESP) else None


@dataclass(slots=True)
class _Item:
    kind: str
    id: str
    index: int
    pieces: list[str]
    status: str
    call_id: str
    name: str
    encrypted: str | None
    delta_pre: bytes
    """Text and reasoning: the bytes of a delta event up to its ``delta`` value (the hot path)."""

    def __init__(self, kind: str, id: str, index: int, call_id: str = "", name: str = "") -> None:
        # written out: mypyc compiles it, where @dataclass's own would run in the interpreter (core/outcome.py)
        self.kind = kind
        self.id = id
        self.index = index
        self.pieces = []
        self.status = "in_progress"
        self.call_id = call_id
        self.name = name
        self.encrypted = None
        self.delta_pre = b""

    def render(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.kind == MESSAGE:
            return {"id": self.id, "type": "message", "status": self.status, "role": "assistant",
                    "content": [_output_text(text)] if self.status != "in_progress" or text else []}
        if self.kind == REASONING_ITEM:
            item: dict[str, Any] = {"id": self.id, "type": "reasoning", "status": self.status,
                                    "summary": [{"type": "summary_text", "text": text}] if text else []}
            if self.encrypted is not None:
                item["encrypted_content"] = self.encrypted
            return item
        return {"id": self.id, "type": "function_call", "status": self.status, "call_id": self.call_id,
                "name": self.name, "arguments": text}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _sse(type_: str, fields: dict[str, Any], n: int) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (type_.encode(), dumps({"type": type_, **fields, "sequence_number": n}))


class ResponseState:
    """The response a log describes, fed one entry at a time; events go to ``out`` when it is a list."""

    __slots__ = ("_calls", "_open", "_open_calls", "echo", "error", "fed", "id", "incomplete", "items", "model",
                 "out", "seq", "skip", "status", "stream_id", "usage")

    def __init__(self, stream_id: str, *, skip: int = -1) -> None:
        self.stream_id = stream_id
        self.id = response_id(stream_id)
        self.fed = 0
        """Entries read: the seq of the last one."""
        self.seq = 0
        """The sequence number of the next event."""
        self.skip = skip
        """Events numbered up to this one are not written (a resume's ``starting_after``)."""
        self.out: list[bytes] | None = None
        self.echo: dict[str, Any] = {}
        self.model = ""
        self.status = "queued"
        self.items: list[_Item] = []
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, Any] | None = None
        self._open: _Item | None = None
        """The message or reasoning item being written."""
        self._open_calls: list[_Item] = []
        self._calls: dict[int, _Item] = {}

    @property
    def is_response(self) -> bool:
        """Whether the log was started by ``POST /v1/responses`` (its ``start`` carries this protocol's echo)."""
        return self.echo.get("api") == ECHO_API

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "in_progress")

    @classmethod
    def resume(cls, stream_id: str, kinds: list[int], payloads: list[Any], after: int) -> tuple[ResponseState, int]:
        """Where a stream that resumes after event ``after`` starts: a state that read the entries (a whole log's
        kinds and payloads) before the first entry with a later event (and writes no event up to ``after``), and
        that entry's index (its seq minus one; ``len(kinds)`` when no entry has a later event yet)."""
        probe = cls(stream_id)
        first = len(kinds)
        for i in range(len(kinds)):
            probe.feed(kinds[i], payloads[i])
            if probe.seq - 1 > after:
                first = i
                break
        state = cls(stream_id, skip=after)
        state.feed_all(kinds[:first], payloads[:first])
        return state, first

    # --- the object ------------------------------------------------------------------------------------------
    def response(self, *, with_output: bool = True) -> dict[str, Any]:
        """The response object now (``output`` as far as it goes: open items are ``in_progress``)."""
        echo = self.echo
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": echo.get("created_at", 0),
            "status": self.status,
            "background": echo.get("background", False),
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": echo.get("instructions"),
            "max_output_tokens": echo.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": [item.render() for item in self.items] if with_output else [],
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": echo.get("previous_response_id"),
            "reasoning": echo.get("reasoning", {"effort": None, "summary": None}),
            "store": echo.get("store", True),
            "temperature": echo.get("temperature"),
            "text": echo.get("text", {"format": {"type": "text"}}),
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_p": echo.get("top_p"),
            "truncation": echo.get("truncation", "disabled"),
            "usage": self.usage,
            "user": echo.get("user"),
            "metadata": echo.get("metadata", {}),
        }
        for key in ("service_tier", "safety_identifier", "prompt_cache_key"):
            if key in echo:
                obj[key] = echo[key]
        return obj

    # --- reading the log -------------------------------------------------------------------------------------
    def feed(self, kind: int, payload: Any) -> None:
        self.fed += 1
        if kind == DELTA:
            self._text(payload)
        elif kind == TOOL_ARGS:
            self._args(payload["index"], payload["arguments"])
        elif kind == REASONING:
            self._reasoning(payload)
        elif kind == TOOL_CALL:
            self._call(payload)
        elif kind == START:
            self._start(payload)
        elif kind == DONE:
            self._done(payload)
        elif kind == ERROR:
            self._failed(payload)

    def feed_all(self, kinds: list[int], payloads: list[Any]) -> None:
        for i in range(len(kinds)):
            kind, payload = kinds[i], payloads[i]
            self.feed(kind, payload)

    def _next(self) -> int | None:
        """Number the next event; its number when it is to be written, else None (then it need not be built)."""
        n = self.seq
        self.seq = n + 1
        return n if self.out is not None and n > self.skip else None

    def _event(self, type_: str, fields: dict[str, Any], n: int | None) -> None:
        if n is not None:
            assert self.out is not None
            self.out.append(_sse(type_, fields, n))

    def _lifecycle(self, type_: str, *, with_output: bool = False) -> None:
        n = self._next()
        if n is not None:
            self._event(type_, {"response": self.response(with_output=with_output)}, n)

    def _start(self, payload: dict[str, Any]) -> None:
        self.echo = payload.get("echo") or {}
        self.model = payload.get("model", "")
        background = bool(self.echo.get("background"))
        self.status = "queued" if background else "in_progress"
        self._lifecycle("response.created")
        self._lifecycle("response.queued" if background else "response.in_progress")

    def _output(self) -> None:
        """Output arrives: a background response is in progress from now on."""
        if self.status == "queued":
            self.status = "in_progress"
            self._lifecycle("response.in_progress")

    def _add(self, kind: str, prefix: str) -> _Item:
        item = _Item(kind, f"{prefix}_{self.stream_id}_{len(self.items)}", len(self.items))
        self.items.append(item)
        n = self._next()
        if n is not None:
            self._event("response.output_item.added", {"output_index": item.index, "item": item.render()}, n)
        return item

    def _item_done(self, item: _Item, n: int | None) -> None:
        self._event("response.output_item.done", {"output_index": item.index, "item": item.render()}, n)

    def _text(self, text: str) -> None:
        item = self._open
        if item is None or item.kind != MESSAGE:
            item = self._begin(MESSAGE)
        item.pieces.append(text)
        n = self.seq  # the hot path: _next, inline
        self.seq = n + 1
        out = self.out
        if out is not None and n > self.skip:
            out.append(item.delta_pre + dumps(text) + b',"logprobs":[],"sequence_number":%d}\n\n' % n)

    def _reasoning(self, text: str) -> None:
        item = self._open
        if item is None or item.kind != REASONING_ITEM:
            item = self._begin(REASONING_ITEM)
        item.pieces.append(text)
        n = self._next()
        if n is not None:
            assert self.out is not None
            self.out.append(item.delta_pre + dumps(text) + b',"sequence_number":%d}\n\n' % n)

    def _begin(self, kind: str) -> _Item:
        """Open a message or a reasoning item, after closing whatever else is open."""
        self._output()
        self._close_open("completed")
        self._close_calls("completed")
        if kind == MESSAGE:
            item = self._add(MESSAGE, "msg")
            head = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            self._event("response.content_part.added", {**head, "part": _output_text("")}, self._next())
            type_ = "response.output_text.delta"
        else:
            item = self._add(REASONING_ITEM, "rs")
            head = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            self._event("response.reasoning_summary_part.added",
                        {**head, "part": {"type": "summary_text", "text": ""}}, self._next())
            type_ = "response.reasoning_summary_text.delta"
        item.delta_pre = _sse(type_, head, 0).split(b',"sequence_number"', 1)[0] + b',"delta":'
        self._open = item
        return item

    def _close_open(self, status: str) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        item.status = status
        text = "".join(item.pieces)
        if item.kind == MESSAGE:
            head = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            self._event("response.output_text.done", {**head, "text": text, "logprobs": []}, self._next())
            self._event("response.content_part.done", {**head, "part": _output_text(text)}, self._next())
        else:
            head = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            self._event("response.reasoning_summary_text.done", {**head, "text": text}, self._next())
            self._event("response.reasoning_summary_part.done",
                        {**head, "part": {"type": "summary_text", "text": text}}, self._next())
        self._item_done(item, self._next())

    def _call(self, payload: dict[str, Any]) -> None:
        self._output()
        self._close_open("completed")
        item = _Item(CALL, f"fc_{self.stream_id}_{len(self.items)}", len(self.items),
                     call_id=payload["id"], name=payload["name"])
        self.items.append(item)
        self._calls[payload["index"]] = item
        self._open_calls.append(item)
        n = self._next()
        if n is not None:
            self._event("response.output_item.added", {"output_index": item.index, "item": item.render()}, n)

    def _args(self, index: int, arguments: str) -> None:
        item = self._calls[index]
        item.pieces.append(arguments)
        n = self._next()
        if n is not None:
            self._event("response.function_call_arguments.delta",
                        {"item_id": item.id, "output_index": item.index, "delta": arguments}, n)

    def _close_calls(self, status: str) -> None:
        calls, self._open_calls = self._open_calls, []
        for item in calls:
            item.status = status
            n = self._next()
            if n is not None:
                self._event("response.function_call_arguments.done",
                            {"item_id": item.id, "output_index": item.index, "name": item.name,
                             "arguments": "".join(item.pieces)}, n)
            self._item_done(item, self._next())

    def _close_all(self, status: str) -> None:
        self._close_open(status)
        self._close_calls(status)

    def _done(self, payload: dict[str, Any]) -> None:
        reason = payload.get("finish_reason")
        ok = reason not in _INCOMPLETE and reason != "cancelled"
        self._close_all("completed" if ok else "incomplete")
        self._provider_data(payload.get("provider_data"))
        u = payload.get("usage") or {}
        prompt, completion = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        self.usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + completion}
        if reason == "cancelled":
            self.status = "cancelled"
        elif reason in _INCOMPLETE:
            self.status = "incomplete"
            self.incomplete = {"reason": _INCOMPLETE[reason]}
        else:
            self.status = "completed"
        self._lifecycle(f"response.{self.status}", with_output=True)

    def _provider_data(self, data: Any) -> None:
        """What the upstream needs back next turn rides on the first reasoning item (one is added for it if the
        answer had none: e.g. only redacted thinking)."""
        if not data:
            return
        encrypted = dumps(data).decode()
        item = next((i for i in self.items if i.kind == REASONING_ITEM), None)
        if item is None:
            item = self._add(REASONING_ITEM, "rs")
            item.status = "completed"
            item.encrypted = encrypted
            self._item_done(item, self._next())
        else:
            item.encrypted = encrypted

    def _failed(self, payload: dict[str, Any]) -> None:
        self._close_all("incomplete")
        err = as_error(None, payload)
        body = err.openai_body()["error"]
        n = self._next()
        if n is not None:
            self._event("error", {"code": err.code, "message": err.message, "param": None, "error": body}, n)
        self.status = "failed"
        self.error = {"code": _OPENAI_CODES.get(err.code, "server_error"), "message": err.message}
        self._lifecycle("response.failed", with_output=True)


class ResponsesEncoder:
    """A ``StreamEncoder`` writing Responses events: feeds each entry to its ``ResponseState``, which must have read
    every entry before (``state.fed``); events numbered up to ``state.skip`` are left out."""

    __slots__ = ("state",)

    def __init__(self, state: ResponseState) -> None:
        self.state = state

    def head(self) -> bytes:
        return b""

    def encode(self, seq: int, kinds: list[int], payloads: list[Any]) -> bytes:
        state = self.state
        if seq != state.fed + 1:
            # only the follower's own "events were dropped" error may skip entries (the log outran a slow client)
            if seq <= state.fed or len(kinds) != 1 or kinds[0] != ERROR:
                raise RuntimeError(f"entries from {seq}, but the state read up to {state.fed}")
            state.fed = seq - 1
        out: list[bytes] = []
        state.out = out
        try:
            for i in range(len(kinds)):
                kind, payload = kinds[i], payloads[i]
                state.feed(kind, payload)
        finally:
            state.out = None
        return out[0] if len(out) == 1 else b"".join(out)

    def error_response(self, error: GatewayError | None, payload: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        err = as_error(error, payload)
        return err.status, dumps(err.openai_body()), err.headers()
