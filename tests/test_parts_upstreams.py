"""Parts of an answer relayed from real-format upstreams: an OpenAI-compatible server and Anthropic's Messages API.

The fake upstreams speak the vendors' wire formats byte for byte (tests/fakes), including the quirks of real
servers; the official ``openai`` SDK is the client. The upstream's own record shows what the gateway sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Reasoning, RedactedThinking, Script, Text, ToolCall
from tests.support.gateway import GatewayProcess, chat_body, post_events, sse_events

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
PARALLEL = [Reasoning("They want two "), Reasoning("things."), Text("Checking."),
            ToolCall("get_weather", ['{"ci', 'ty": "Pa', 'ris"}'], id="call_w"),
            ToolCall("get_time", ['{"city"', ': "Tokyo"}'], id="call_t")]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def native(gw: GatewayProcess, **body: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return post_events(gw.url, body)


@pytest.fixture(scope="module")
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


# --- OpenAI-compatible upstreams -------------------------------------------------------------------------------
def test_sdk_assembles_parallel_tool_calls_and_reasoning(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(parts=PARALLEL, delay=0.002))
    with sdk.chat.completions.stream(model="fake-model", messages=user(prompt),  # type: ignore[arg-type]
                                     tools=[WEATHER, TIME]) as stream:  # type: ignore[list-item]
        chunks = list(stream)
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and message.content == "Checking."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        ("call_w", "get_weather", '{"city": "Paris"}'), ("call_t", "get_time", '{"city": "Tokyo"}')]
    reasoning = "".join(
        (getattr(c, "chunk", None) and (c.chunk.choices[0].delta.model_extra or {}).get("reasoning_content")) or ""
        for c in chunks if getattr(c, "type", "") == "chunk" and c.chunk.choices)
    assert reasoning == "They want two things."


async def test_async_sdk_stream_helper_assembles_parallel_tool_calls_and_reasoning(
        gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """``AsyncOpenAI``'s ``chat.completions.stream()``: its events name each call's arguments whole, in order, and
    ``get_final_completion()`` has the exact calls; the upstream got the tools as sent."""
    prompt = upstream.script(Script(parts=PARALLEL, delay=0.002))
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        async with client.chat.completions.stream(model="fake-model", messages=user(prompt),  # type: ignore[arg-type]
                                                  tools=[WEATHER, TIME]) as stream:  # type: ignore[list-item]
            events = [event async for event in stream]
            final = await stream.get_final_completion()
    done = [(e.index, e.name, e.arguments) for e in events if e.type == "tool_calls.function.arguments.done"]
    assert done == [(0, "get_weather", '{"city": "Paris"}'), (1, "get_time", '{"city": "Tokyo"}')]
    pieces = [e.arguments_delta for e in events if e.type == "tool_calls.function.arguments.delta" and e.index == 0]
    assert "".join(pieces) == '{"city": "Paris"}' and len(pieces) > 1  # relayed piece by piece, not joined
    reasoning = "".join((e.chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for e in events if e.type == "chunk" and e.chunk.choices)
    assert reasoning == "They want two things."
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
        ("call_w", "get_weather", '{"city": "Paris"}'), ("call_t", "get_time", '{"city": "Tokyo"}')]
    [rec] = upstream.records(prompt)
    assert rec.request_json["tools"] == [WEATHER, TIME] and rec.request_json["stream"] is True


async def test_async_sdk_raw_chunks_carry_tool_call_pieces_by_index(gateway: GatewayProcess,
                                                                    upstream: FakeUpstream) -> None:
    """``create(stream=True)`` with ``AsyncOpenAI``: the chunks as an application that assembles them itself reads
    them (``delta.tool_calls[].index``, the id and name once, then argument pieces; reasoning before the calls)."""
    prompt = upstream.script(Script(parts=PARALLEL))
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        stream = await client.chat.completions.create(model="fake-model", messages=user(prompt),  # type: ignore
                                                      tools=[WEATHER, TIME], stream=True)  # type: ignore[list-item]
        chunks = [c async for c in stream]
    calls: dict[int, list[str]] = {}
    ids: dict[int, tuple[str | None, str | None]] = {}
    order: list[str] = []
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            order.append("reasoning")
        for frag in delta.tool_calls or []:
            order.append("tool")
            if frag.id is not None:
                assert frag.index not in ids, "a call's id and name come once"
                ids[frag.index] = (frag.id, frag.function.name if frag.function else None)
            calls.setdefault(frag.index, []).append((frag.function.arguments or "") if frag.function else "")
    assert ids == {0: ("call_w", "get_weather"), 1: ("call_t", "get_time")}
    assert {i: "".join(p) for i, p in calls.items()} == {0: '{"city": "Paris"}', 1: '{"city": "Tokyo"}'}
    assert order.index("tool") > max(i for i, kind in enumerate(order) if kind == "reasoning")
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_non_streamed_message_has_tool_calls_and_reasoning(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(parts=PARALLEL))
    out = sdk.chat.completions.create(model="fake-model", messages=user(prompt), tools=[WEATHER, TIME])  # type: ignore
    message = out.choices[0].message
    assert [c.function.arguments for c in message.tool_calls or []] == ['{"city": "Paris"}', '{"city": "Tokyo"}']
    assert (message.model_extra or {})["reasoning_content"] == "They want two things."
    assert out.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("quirk", [{"ollama_index_reuse": True}, {"omit_tool_index": True},
                                   {"repeat_finish": True}, {"reasoning_field": "reasoning"},
                                   {"reasoning_field": "reasoning_details"}])
def test_upstream_quirks_are_normalised(gateway: GatewayProcess, upstream: FakeUpstream,
                                        quirk: dict[str, Any]) -> None:
    """Ollama's index reuse, servers without ``index``, OpenRouter's repeated finish, the other reasoning fields:
    the client sees calls 0 and 1, whole, once, and the reasoning."""
    prompt = upstream.script(Script(parts=PARALLEL, **quirk))
    resp, events = native(gateway, messages=user(prompt), tools=[WEATHER, TIME])
    assert resp.status_code == 200
    kinds = [e.event for e in events]
    assert kinds.count("tool_call") == 2 and kinds.count("done") == 1
    assert "".join(e.json()["delta"] for e in events if e.event == "reasoning") == "They want two things."
    done = events[-1].json()
    assert [(c["id"], c["function"]["arguments"]) for c in done["tool_calls"]] == [
        ("call_w", '{"city": "Paris"}'), ("call_t", '{"city": "Tokyo"}')]
    assert done["finish_reason"] == "tool_calls"


def test_every_field_reaches_the_upstream_unchanged(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    """Tools, tool choice, response format, image parts, tool-call ids and the fields ssegate does not own arrive
    exactly as the client sent them."""
    prompt = upstream.script(Script(deltas=["ok"], require_tool_call_ids=True))
    call = {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, image]},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_x", "content": "sunny"},
                {"role": "user", "content": prompt}]
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}}
    extra = {"seed": 7, "top_p": 0.5, "user": "u-1", "metadata": {"team": "a"}, "service_tier": "flex",
             "logit_bias": {"50256": -100}, "frequency_penalty": 0.1}
    out = sdk.chat.completions.create(
        model="fake-model", messages=messages, tools=[WEATHER], tool_choice="required",  # type: ignore[arg-type]
        parallel_tool_calls=False, response_format=fmt, max_completion_tokens=99, extra_body=extra)  # type: ignore
    assert out.choices[0].message.content == "ok"
    [rec] = upstream.records(prompt)
    sent = rec.request_json
    assert sent["messages"] == messages
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert sent["response_format"] == fmt and sent["max_completion_tokens"] == 99
    for key, value in extra.items():
        assert sent[key] == value, key


def test_agent_loop_through_the_gateway(sdk: openai.OpenAI, upstream: FakeUpstream) -> None:
    """Tool call, tool result, final answer, with an upstream that refuses a tool message it cannot match."""
    prompt = upstream.script(Script(require_tool_call_ids=True, turns=[
        Script(parts=[ToolCall("get_weather", ['{"city": ', '"Paris"}'])]),
        Script(deltas=["It is ", "21 C in Paris."])]))
    messages: list[Any] = user(prompt)
    with sdk.chat.completions.stream(model="fake-model", messages=messages, tools=[WEATHER]) as stream:  # type: ignore
        first = stream.get_final_completion().choices[0].message
    [call] = first.tool_calls or []
    messages += [{"role": "assistant", "content": first.content, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "21 C"}]
    answer = sdk.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])  # type: ignore
    assert answer.choices[0].message.content == "It is 21 C in Paris."
    second = upstream.records(prompt)[-1]
    assert second.status == 200 and second.tool_results() == [(call.id, "21 C")]


def test_a_malformed_tool_call_fragment_is_a_typed_error(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(parts=[Text("a"), ToolCall("f", ["{}"])], fault=Fault.MALFORMED_JSON,
                                    fault_after=2))
    resp, events = native(gateway, messages=user(prompt))
    assert resp.status_code == 200 and events[-1].event == "error"
    assert events[-1].json()["error"]["code"] == "upstream_error"


LATE = 10.0
"""A timeout reported this much after it was due fired on the wrong deadline (the first-token timeout is 30 s)."""


def timed(gw: GatewayProcess, prompt: str) -> list[tuple[float, ServerSentEvent]]:
    """The native stream's events for ``prompt``, each with the monotonic time it arrived."""
    out: list[tuple[float, ServerSentEvent]] = []
    with httpx.stream("POST", gw.url + "/v1/chat/stream", content=chat_body(prompt), timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        out.extend((time.monotonic(), event) for event in sse_events(resp.iter_text()))
    return out


@pytest.fixture(scope="module")
def idle_gw(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """The fake OpenAI upstream behind a short idle timeout (1 s) and a first-token timeout far from it (30 s)."""
    with GatewayProcess({**FAST, "provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                         "idle_timeout_s": 1.0, "first_token_timeout_s": 30.0}) as gw:
        yield gw


def test_openai_comment_pings_keep_a_long_reasoning_phase_alive(idle_gw: GatewayProcess,
                                                                upstream: FakeUpstream) -> None:
    """After its first reasoning the upstream is quiet but for ``: OPENROUTER PROCESSING`` comments, for 4x
    IDLE_TIMEOUT_S: its bytes prove it alive (CONTRACT §2, §3.1), so the stream is not cut and the answer comes."""
    prompt = upstream.script(Script(parts=[Reasoning("Thinking hard..."), Text("42.")], delay=4.0, pings_every=0.1))
    events = timed(idle_gw, prompt)
    assert [e.event for _, e in events] == ["start", "reasoning", "message", "done"]
    paused = events[2][0] - events[1][0]
    assert paused > 3.0, f"the answer came {paused:.2f}s after the reasoning: the pause was not played"
    assert events[2][1].json()["delta"] == "42."


def test_openai_silence_after_reasoning_is_cut_at_the_idle_timeout(idle_gw: GatewayProcess,
                                                                   upstream: FakeUpstream) -> None:
    """The control: the same upstream, silent after its first reasoning (no pings), is cut IDLE_TIMEOUT_S (1 s)
    after its last byte, not at the first-token deadline (30 s), and its connection is closed."""
    prompt = upstream.script(Script(parts=[Reasoning("Thinking hard..."), Text("42.")], delay=25.0))
    events = timed(idle_gw, prompt)
    assert [e.event for _, e in events] == ["start", "reasoning", "error"]
    assert events[-1][1].json()["error"]["code"] == "upstream_timeout"
    waited = events[-1][0] - events[1][0]
    assert 0.9 <= waited < LATE, f"the stall was reported {waited:.2f}s after the reasoning (idle 1 s)"
    assert upstream.wait_closed(prompt, timeout=LATE).closed_by == "client"  # the gateway let go of it


# --- Anthropic ---------------------------------------------------------------------------------------------------
def test_anthropic_thinking_tool_use_and_the_signature_round_trip(claude: GatewayProcess,
                                                                  anthropic_upstream: FakeUpstream) -> None:
    """Thinking streams as reasoning, tool_use as a tool call; the next turn carries the thinking blocks back
    unchanged (signature included) from ``provider_data``, so an upstream that checks them accepts the turn."""
    prompt = anthropic_upstream.script(Script(require_signatures=True, delay=0.002, turns=[
        Script(parts=[Reasoning("Need the "), Reasoning("weather.", signature="sig-1"), RedactedThinking("r-9"),
                      ToolCall("get_weather", ["", '{"city"', ': "Oslo"}']), ToolCall("get_time", [])]),
        Script(deltas=["Cold in Oslo."])]))
    messages: list[Any] = user(prompt)
    resp, events = native(claude, messages=messages, tools=[WEATHER, TIME], reasoning_effort="low")
    assert resp.status_code == 200
    assert "".join(e.json()["delta"] for e in events if e.event == "reasoning") == "Need the weather."
    done = events[-1].json()
    assert done["finish_reason"] == "tool_calls"
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in done["tool_calls"]] == [
        ("get_weather", '{"city": "Oslo"}'), ("get_time", "{}")]  # a tool with no input is "{}"
    thinking = done["provider_data"]["anthropic"]["thinking"]
    assert thinking == [{"type": "thinking", "thinking": "Need the weather.", "signature": "sig-1"},
                        {"type": "redacted_thinking", "data": "r-9"}]
    first = anthropic_upstream.records(prompt)[0].request_json
    assert first["thinking"]["type"] == "enabled" and first["tools"][0]["input_schema"] == WEATHER["function"][
        "parameters"]
    messages += [{"role": "assistant", "content": None, "tool_calls": done["tool_calls"],
                  "provider_data": done["provider_data"], "reasoning": "Need the weather."},
                 {"role": "tool", "tool_call_id": done["tool_calls"][0]["id"], "content": "-2 C"},
                 {"role": "tool", "tool_call_id": done["tool_calls"][1]["id"], "content": "09:00"}]
    resp, events = native(claude, messages=messages, tools=[WEATHER, TIME], reasoning_effort="low")
    assert resp.status_code == 200, resp.text
    assert "".join(e.json()["delta"] for e in events if e.event == "message") == "Cold in Oslo."
    second = anthropic_upstream.records(prompt)[-1].request_json["messages"]
    assert second[1]["content"][:2] == thinking  # replayed first, unchanged
    assert [b["type"] for b in second[2]["content"]] == ["tool_result", "tool_result"]


def test_anthropic_without_the_signature_is_refused_by_the_upstream(claude: GatewayProcess,
                                                                     anthropic_upstream: FakeUpstream) -> None:
    """The control for the test above: the same second turn without provider_data is refused by the fake (as by
    the real API), and the client gets that as a 400 (the request's fault), not a 502."""
    prompt = anthropic_upstream.script(Script(require_signatures=True, turns=[
        Script(parts=[Reasoning("hmm", signature="sig-2"), ToolCall("get_weather", ['{"city": "Rome"}'])]),
        Script(deltas=["never"])]))
    _, events = native(claude, messages=user(prompt), tools=[WEATHER], reasoning_effort="low")
    calls = events[-1].json()["tool_calls"]
    messages = [*user(prompt), {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "warm"}]
    resp, _ = native(claude, messages=messages, tools=[WEATHER], reasoning_effort="low")
    assert resp.status_code == 400 and resp.headers["x-should-retry"] == "false"


def test_anthropic_overloaded_mid_thinking_is_a_retryable_error_event(claude: GatewayProcess,
                                                                       anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(parts=[Reasoning("a"), Reasoning("b"), Text("c")],
                                              fault=Fault.ANTHROPIC_OVERLOADED, fault_after=2))
    resp, events = native(claude, messages=user(prompt))
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "reasoning", "reasoning", "error"]
    assert events[-1].json()["error"] == {"code": "upstream_error", "retryable": True,
                                          "message": events[-1].json()["error"]["message"]}
    assert "overloaded" in events[-1].json()["error"]["message"]


def test_anthropic_pings_keep_a_long_thinking_phase_alive(anthropic_upstream: FakeUpstream,
                                                          make_gateway: Any) -> None:
    """After its first output the upstream only pings, for longer than IDLE_TIMEOUT_S (1 s here): its bytes prove it
    alive (CONTRACT §2, §3.1), so the stream is not cut and the answer arrives."""
    gw = make_gateway({"provider": "anthropic", "upstream_url": anthropic_upstream.url, "model": "c",
                       "idle_timeout_s": 1.0, "first_token_timeout_s": 30.0})
    prompt = anthropic_upstream.script(Script(parts=[Reasoning("thinking..."), Text("done")], delay=3.0,
                                              pings_every=0.2))
    resp, events = native(gw, messages=user(prompt))
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "reasoning", "message", "done"]


def test_anthropic_silence_after_the_first_output_is_cut_at_the_idle_timeout(anthropic_upstream: FakeUpstream,
                                                                            make_gateway: Any) -> None:
    """The control: the same pause without pings is silence, reported as upstream_timeout."""
    gw = make_gateway({"provider": "anthropic", "upstream_url": anthropic_upstream.url, "model": "c",
                       "idle_timeout_s": 1.0, "first_token_timeout_s": 30.0})
    prompt = anthropic_upstream.script(Script(parts=[Reasoning("thinking..."), Text("done")], delay=3.0))
    resp, events = native(gw, messages=user(prompt))
    assert resp.status_code == 200 and [e.event for e in events] == ["start", "reasoning", "error"]
    assert events[-1].json()["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize(("body", "field"), [
    ({"seed": 1}, "seed"), ({"logit_bias": {"1": 1}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
    ({"reasoning_effort": "high", "temperature": 0.2}, "temperature"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
])
def test_anthropic_refuses_what_it_cannot_honour(claude: GatewayProcess, body: dict[str, Any], field: str) -> None:
    with httpx.Client(timeout=10) as c:
        resp = c.post(claude.url + "/v1/chat/completions", json={"messages": user("hi"), **body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"].startswith(field)


def test_anthropic_json_response_format_via_a_forced_tool(claude: GatewayProcess,
                                                          anthropic_upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    prompt = anthropic_upstream.script(Script(parts=[ToolCall("json_response", ['{"n"', ": 3}"])]))
    with httpx.Client(timeout=10) as c:
        resp = c.post(claude.url + "/v1/chat/completions", json={
            "messages": user(prompt), "response_format": {"type": "json_schema",
                                                          "json_schema": {"name": "x", "schema": schema}}})
    choice = resp.json()["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"n": 3} and choice["finish_reason"] == "stop"
    sent = anthropic_upstream.records(prompt)[0].request_json
    assert sent["tools"] == [{"name": "json_response", "description": "Answer with this JSON.",
                              "input_schema": schema}]
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
