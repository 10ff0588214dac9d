"""Every part of an answer through the gateway (CONTRACT §3.1, §7): reasoning, tool calls, JSON, with the demo model.

The demo model takes the same path as every provider (parts into the generation's sink), so these tests run the
production path: the native stream's events, the official ``openai`` SDK (sync and async, streamed and not) in a
full agent loop, and the Python client's typed events and next-turn helper.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ssegate.client import Client, Done, Reasoning, ToolCallDelta, ToolCallStart
from ssegate.sse import ServerSentEvent
from tests.support.gateway import GatewayProcess, post_events

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def post(gw: GatewayProcess, **body: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return post_events(gw.url, body)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def sdk(demo_gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=demo_gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


# --- the native stream ------------------------------------------------------------------------------------
def test_native_stream_carries_reasoning_then_parallel_tool_calls(demo_gateway: GatewayProcess) -> None:
    resp, events = post(demo_gateway, messages=user("What is the weather in Paris and in Rome?"),
                        tools=[WEATHER, TIME], reasoning_effort="low")
    assert resp.status_code == 200
    kinds = [e.event for e in events]
    first_call = kinds.index("tool_call")
    assert kinds[0] == "start" and set(kinds[1:first_call]) == {"reasoning"} and kinds[-1] == "done"
    assert set(kinds[first_call:-1]) == {"tool_call", "tool_call_delta"}
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    # the pieces, joined by index, are exactly the calls that `done` repeats whole
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        if e.event == "tool_call":
            d = e.json()
            calls[d["index"]] = {"id": d["id"], "type": "function", "function": {"name": d["name"], "arguments": ""}}
        elif e.event == "tool_call_delta":
            d = e.json()
            calls[d["index"]]["function"]["arguments"] += d["arguments"]
    done = events[-1].json()
    assert done["finish_reason"] == "tool_calls"
    assert done["tool_calls"] == [calls[0], calls[1]]
    assert [json.loads(c["function"]["arguments"]) for c in done["tool_calls"]] == [{"city": "Paris"},
                                                                                   {"city": "Rome"}]
    assert {c["function"]["name"] for c in done["tool_calls"]} == {"get_weather"}


def test_a_tool_result_turn_is_answered_from_the_result(demo_gateway: GatewayProcess) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages = [*user("Weather in Oslo?"), {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "-3 C and snowing"}]
    resp, events = post(demo_gateway, messages=messages, tools=[WEATHER])
    assert resp.status_code == 200
    text = "".join(e.json()["delta"] for e in events if e.event == "message")
    assert "-3 C and snowing" in text and "get_weather" in text
    assert events[-1].json()["finish_reason"] == "stop"


@pytest.mark.parametrize(("body", "field"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]},
     "messages[0].content[0]"),
    ({"response_format": {"type": "json_schema"}}, "json_schema"),
    ({"seedling": 3}, "seedling"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_field(demo_gateway: GatewayProcess, body: dict[str, Any],
                                                           field: str) -> None:
    resp, _ = post(demo_gateway, **{"messages": user("hi"), **body})
    assert resp.status_code in (400, 422), resp.text
    assert field in resp.json()["error"]["message"]


def test_json_schema_response_format_answers_json(demo_gateway: GatewayProcess, sdk: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
              "required": ["city", "temperature"]}
    out = sdk.chat.completions.create(
        model="ssegate-demo", messages=user("How warm is it in Lisbon? 24 degrees?"),  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}})
    data = json.loads(out.choices[0].message.content or "")
    assert data == {"city": "Lisbon", "temperature": 24.0}


# --- the official openai SDK ---------------------------------------------------------------------------------
def test_openai_sdk_agent_loop(sdk: openai.OpenAI) -> None:
    """Stream a tool call with the SDK's own helper, run the tool, send the result back, get the answer."""
    messages: list[Any] = user("What is the weather in Paris?")
    with sdk.chat.completions.stream(model="ssegate-demo", messages=messages, tools=[WEATHER],  # type: ignore[list-item]
                                     reasoning_effort="low") as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "18 C, light rain"}]
    answer = sdk.chat.completions.create(model="ssegate-demo", messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert answer.choices[0].finish_reason == "stop"
    assert "18 C, light rain" in (answer.choices[0].message.content or "")


def test_openai_sdk_streams_reasoning_content(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="ssegate-demo", messages=user("What is SSE?"),  # type: ignore[arg-type]
                                              reasoning_effort="medium", stream=True))
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning.startswith("The question is") and text
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    last_reasoning = max(i for i, c in enumerate(chunks)
                         if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning_content"))
    assert last_reasoning < first_text


async def test_async_openai_sdk_non_streamed_tool_calls(demo_gateway: GatewayProcess) -> None:
    async with openai.AsyncOpenAI(base_url=demo_gateway.url + "/v1", api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(
            model="ssegate-demo", messages=user("Time in Tokyo and weather in Tokyo?"),  # type: ignore[arg-type]
            tools=[WEATHER, TIME], reasoning_effort="low")  # type: ignore[list-item]
    message = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls" and message.content is None
    assert sorted(c.function.name for c in message.tool_calls or []) == ["get_time", "get_weather"]
    assert all(json.loads(c.function.arguments) == {"city": "Tokyo"} for c in message.tool_calls or [])
    assert (message.model_extra or {}).get("reasoning_content", "").startswith("The question is")


# --- the Python client -------------------------------------------------------------------------------------
def test_python_client_events_and_next_turn(demo_gateway: GatewayProcess) -> None:
    with Client(demo_gateway.url) as client:
        stream = client.stream(user("Weather in Paris?"), tools=[WEATHER], reasoning_effort="low")
        events = list(stream)
        assert any(isinstance(e, Reasoning) for e in events)
        starts = [e for e in events if isinstance(e, ToolCallStart)]
        assert [s.name for s in starts] == ["get_weather"]
        assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == '{"city":"Paris"}'
        done = events[-1]
        assert isinstance(done, Done) and done.finish_reason == "tool_calls"
        turn = stream.assistant_message()
        assert turn["role"] == "assistant" and turn["tool_calls"] == done.tool_calls
        assert turn["reasoning"] == stream.reasoning and turn["content"] is None
        result = {"role": "tool", "tool_call_id": done.tool_calls[0]["id"], "content": "31 C"}
        answer = client.stream([*user("Weather in Paris?"), turn, result], tools=[WEATHER]).read_text()
    assert "31 C" in answer


def test_the_part_values_compare_hash_pickle_and_refuse_assignment() -> None:
    """The parts are plain immutable values (``ssegate.parts``, compiled): equal by their fields, hashable (all but
    ``Finish``, which holds a dict), pickled and read back equal; compiled, an assignment raises ``AttributeError``."""
    import pickle

    from ssegate import parts
    from ssegate.parts import Finish, Usage

    values: list[Any] = [parts.Reasoning("why"), parts.ToolCallStart(0, "call_1", "get_weather"),
                         parts.ToolCallDelta(0, '{"ci'), Usage(3, 4), Usage(3, 4, estimated=True),
                         Finish("tool_calls", Usage(1, 2), {"sig": "x"})]
    for value in values:
        again = pickle.loads(pickle.dumps(value))
        assert again == value and type(again) is type(value)
        if not parts.__file__.endswith(".py"):  # compiled (make compile): Final fields refuse an assignment
            field = next(iter(vars(type(value))["__dataclass_fields__"]))
            with pytest.raises(AttributeError):
                setattr(value, field, getattr(value, field))
    assert len({parts.Reasoning("a"), parts.Reasoning("a"), parts.ToolCallDelta(1, "a"),
                parts.ToolCallDelta(1, "a")}) == 2
    assert Usage(3, 4) != Usage(3, 4, estimated=True) and Finish() == Finish("stop", None, None)
    assert repr(parts.ToolCallStart(0, "c", "f")) == "ToolCallStart(index=0, id='c', name='f')"
