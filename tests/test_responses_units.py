"""The Responses API's pure parts: a log's events as a pure function of the log (so that a resume from any
``starting_after`` gives exactly the rest), and the translation of request bodies into chat requests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ssegate.core.entries import DELTA, DONE, ERROR, REASONING, START, TOOL_ARGS, TOOL_CALL, Entry
from ssegate.errors import InvalidRequest
from ssegate.http.responses.encoder import ResponsesEncoder, ResponseState
from ssegate.http.responses.request import Previous, parse_body, responses_request
from tests.support.entries import columns
from tests.support.gateway import sse_events
from tests.support.responses import violations

SID = "s1d"
ECHO = {"api": "responses", "created_at": 1, "background": False, "store": True}
USAGE = {"prompt_tokens": 3, "completion_tokens": 9, "estimated": False}


def log(*middle: Entry, end: Entry | None = None, echo: dict[str, Any] | None = None) -> list[Entry]:
    start: Entry = (START, {"stream_id": SID, "model": "m", "echo": echo or ECHO})
    return [start, *middle, end or (DONE, {"finish_reason": "stop", "usage": USAGE})]


def events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in sse_events(iter([raw.decode()]))]


def encode(entries: list[Entry], batches: list[int] | None = None) -> bytes:
    """The bytes of a whole stream, the entries handed over in batches of the given sizes (one by one if None)."""
    enc = ResponsesEncoder(ResponseState(SID))
    out, i = [], 0
    for size in [*(batches or [1] * len(entries)), len(entries)]:
        batch = entries[i:i + size]
        if batch:
            out.append(enc.encode(i + 1, *columns(batch)))
            i += len(batch)
    return b"".join(out)


MIXED = log((REASONING, "Hm"), (REASONING, "m."), (DELTA, "Hel"), (DELTA, "lo"),
            (TOOL_CALL, {"index": 0, "id": "c0", "name": "f"}), (TOOL_ARGS, {"index": 0, "arguments": '{"a":'}),
            (TOOL_CALL, {"index": 1, "id": "c1", "name": "g"}), (TOOL_ARGS, {"index": 0, "arguments": "1}"}),
            (TOOL_ARGS, {"index": 1, "arguments": "{}"}),
            end=(DONE, {"finish_reason": "tool_calls", "usage": USAGE, "provider_data": {"x": {"sig": "abc"}}}))


@pytest.mark.parametrize("entries", [
    MIXED,
    log((DELTA, "a"), (DELTA, "b"), end=(ERROR, {"error": {"code": "upstream_timeout", "message": "m",
                                                           "retryable": True}})),
    log((DELTA, "a"), end=(DONE, {"finish_reason": "cancelled", "usage": USAGE})),
    log((DELTA, "a"), end=(DONE, {"finish_reason": "length", "usage": USAGE}),
        echo={**ECHO, "background": True}),
    log(),
], ids=["mixed", "failed", "cancelled", "incomplete-background", "empty"])
def test_events_are_a_pure_function_of_the_log(entries: list[Entry]) -> None:
    whole = encode(entries)
    assert violations(events(whole)) == []
    assert encode(entries, [len(entries)]) == whole
    assert encode(entries, [2, 3, 1]) == whole


@pytest.mark.parametrize("entries", [MIXED, log((DELTA, "a"), end=(ERROR, {"error": {"code": "upstream_error",
                                                                                      "message": "m"}}))])
def test_a_resume_after_any_event_gives_exactly_the_rest(entries: list[Entry]) -> None:
    whole = events(encode(entries))
    for after in range(-1, len(whole)):
        state, first = ResponseState.resume(SID, *columns(entries), after)
        rest = events(ResponsesEncoder(state).encode(first + 1, *columns(entries[first:])) if first < len(entries)
                      else b"")
        assert rest == whole[after + 1:], after
        assert rest or after == len(whole) - 1  # a resume that has something to send sends it in its first write


def test_parallel_calls_with_interleaved_arguments_are_whole_when_done() -> None:
    final = events(encode(MIXED))[-1]["response"]
    reasoning, message, f, g = final["output"]
    assert (f["call_id"], f["arguments"], g["call_id"], g["arguments"]) == ("c0", '{"a":1}', "c1", "{}")
    assert message["content"][0]["text"] == "Hello" and reasoning["summary"][0]["text"] == "Hmm."
    assert orjson.loads(reasoning["encrypted_content"]) == {"x": {"sig": "abc"}}
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["total_tokens"] == 12


def test_provider_data_without_reasoning_gets_a_reasoning_item() -> None:
    entries = log((DELTA, "a"), end=(DONE, {"finish_reason": "stop", "usage": USAGE, "provider_data": {"k": 1}}))
    out = events(encode(entries))
    assert violations(out) == []
    assert out[-1]["response"]["output"][1] == {"id": f"rs_{SID}_1", "type": "reasoning", "status": "completed",
                                                 "summary": [], "encrypted_content": '{"k":1}'}


def test_a_background_response_is_queued_until_its_first_output() -> None:
    state = ResponseState(SID)
    entries = log((DELTA, "a"), echo={**ECHO, "background": True})
    state.feed(*entries[0])
    assert state.response()["status"] == "queued"
    state.feed(*entries[1])
    assert state.response()["status"] == "in_progress"
    assert [e["type"] for e in events(encode(entries))][:5] == [
        "response.created", "response.queued", "response.in_progress", "response.output_item.added",
        "response.content_part.added"]


# --- requests ---------------------------------------------------------------------------------------------------------
def translate(body: dict[str, Any]) -> list[dict[str, Any]]:
    chat, _ = responses_request(parse_body({"model": "m", **body}), "m")
    return chat.messages


def test_previous_output_items_become_one_assistant_turn() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                     {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Think."}],
         "encrypted_content": '{"anthropic": {"thinking": []}}'},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}", "id": "fc_1", "status": None},
        {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rainy"}]},
    ]
    assert translate({"instructions": "Be brief.", "input": items}) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                     {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}}]},
        {"role": "assistant", "content": "Let me look.", "reasoning": "Think.",
         "provider_data": {"anthropic": {"thinking": []}},
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                        {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
    ]


def test_a_provider_refusal_names_the_field_as_the_client_sent_it() -> None:
    items = [{"role": "user", "content": "a"},
             {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "[]"}]
    _, origins = responses_request(parse_body({"input": items, "instructions": "x"}), "m")
    assert origins.translate("messages[2].tool_calls[0].function.arguments: not a JSON object") == \
        "input[1].arguments: not a JSON object"
    assert origins.translate("messages[1].content[0]: image_url parts") == "input[0].content[0]: image_url parts"
    assert origins.translate("messages[0].content[0]: x") == "instructions.content[0]: x"
    assert origins.translate("verbosity: not supported by the demo upstream") == \
        "text.verbosity: not supported by the demo upstream"
    assert origins.translate("tools[0].function.strict: not supported") == "tools[0].strict: not supported"


def test_a_previous_response_comes_before_the_input_without_its_instructions() -> None:
    """``previous_response_id``: this request's instructions, the previous conversation (what it sent upstream
    without its instructions), its output items translated as if the client had sent them back, the new input;
    and all of it but the instructions is kept for the next response, so that chains go on."""
    first, _ = responses_request(parse_body({"instructions": "Old rules.", "input": "Weather in Oslo?"}), "m")
    assert first.history is not None
    assert orjson.loads(first.history) == [{"role": "user", "content": "Weather in Oslo?"}]
    output = [
        {"id": "rs_a_0", "type": "reasoning", "status": "completed",
         "summary": [{"type": "summary_text", "text": "Need it."}], "encrypted_content": '{"sig": "s1"}'},
        {"id": "fc_a_1", "type": "function_call", "status": "completed", "call_id": "c1", "name": "w",
         "arguments": '{"city": "Oslo"}'},
    ]
    previous = Previous("resp_a", orjson.loads(first.history), output)
    body = {"instructions": "New rules.", "input": [{"type": "function_call_output", "call_id": "c1", "output": "-3"}],
            "previous_response_id": "resp_a"}
    second, origins = responses_request(parse_body(body), "m", previous)
    call = {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}
    turn = {"role": "assistant", "content": None, "reasoning": "Need it.", "provider_data": {"sig": "s1"},
            "tool_calls": [call]}
    conversation = [{"role": "user", "content": "Weather in Oslo?"}, turn,
                    {"role": "tool", "tool_call_id": "c1", "content": "-3"}]
    assert second.messages == [{"role": "system", "content": "New rules."}, *conversation]
    assert second.history is not None and orjson.loads(second.history) == conversation
    assert second.echo is not None and second.echo["previous_response_id"] == "resp_a"
    assert origins.translate("messages[2].tool_calls[0].function.arguments: bad") == \
        "previous_response_id.arguments: bad"
    # the next one in the chain starts from all of that
    third, _ = responses_request(parse_body({"input": "Thanks", "store": False}), "m",
                                 Previous("resp_b", orjson.loads(second.history), []))
    assert third.messages == [*conversation, {"role": "user", "content": "Thanks"}]
    assert third.history is None  # store: false keeps nothing to continue from


@pytest.mark.parametrize(("body", "named"), [
    ({"input": 3}, "input"),
    ({"input": [{"type": "message", "role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "nope"}]}, "input[0].encrypted_content"),
    ({"input": "hi", "reasoning": {"effort": "low", "summary": "detailed"}}, "reasoning.summary"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "input[0].content[0]"),
    ({"input": "x", "background": True, "store": False}, "background"),
    ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"input": "x", "tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata"),
    ({"input": "x", "stream_options": {"include_usage": True}}, "stream_options.include_usage"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_image", "image_url": "https://x/a.png"}]}]}, "input[0].output[0]"),
])
def test_bad_requests_name_the_field(body: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        responses_request(parse_body(body), "m")
    assert info.value.status == 400 and named in info.value.message, info.value.message
