"""OpenAI's Responses API (CONTRACT §11) end to end, with the official ``openai`` SDK against real gateways.

Streams come from the embedded demo model (its ``/script`` plays an exact answer; its own answers reason and call
tools) and from the fake OpenAI-compatible upstream (to see what the gateway sends upstream, to break the upstream
mid-stream, and to see its connection close). Tests that take ``replicas`` run twice: one gateway (``memory``) and
two gateways sharing a real redis-server (``redis``: created on A, resumed or cancelled on B). Every stream read is
checked against the grammar of Responses streams (``tests/support/responses.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, Fault, Reasoning, RedactedThinking, Script, Text, ToolCall
from tests.support.gateway import GatewayProcess
from tests.support.invariants import Invariants
from tests.support.redis import RedisServer
from tests.support.responses import normalized, raw_events, violations

COMMON: dict[str, Any] = {
    "commit_timeout_s": 1.0,
    "first_token_timeout_s": 5.0,
    "idle_timeout_s": 5.0,
    "send_timeout_s": 2.0,
    "heartbeat_s": 1.0,
    "api_keys": "k1,k2",
    "token_secret": "one-secret-for-every-replica-0123456789",  # owners are key fingerprints under it
    "log_ttl_s": 60.0,
    "redis_lease_s": 1.0,
    "demo_ttft_s": 0.02,
    "demo_tokens_per_s": 400,
}
UPSTREAM: dict[str, Any] = {
    "provider": "openai", "model": "fake-model", "commit_timeout_s": 0.5, "first_token_timeout_s": 2.0,
    "idle_timeout_s": 1.0, "send_timeout_s": 2.0, "heartbeat_s": 0.5, "retry_backoff_s": 0.02, "log_ttl_s": 30,
}
CLOSE_BOUND_S = 2.0
"""A hang-catching bound on "the upstream connection is closed" (the 50 ms figure is measured in bench/)."""

WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
Pair = tuple[GatewayProcess, GatewayProcess]


@pytest.fixture(scope="module")
def memory_gw() -> Iterator[GatewayProcess]:
    with GatewayProcess(COMMON) as gw:
        yield gw


@pytest.fixture(scope="module")
def redis_pair() -> Iterator[Pair]:
    with RedisServer() as redis:
        settings = {**COMMON, "redis_url": redis.url}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            yield a, b


@pytest.fixture(params=["memory", "redis"])
def replicas(request: pytest.FixtureRequest) -> Pair:
    """(A, B): where responses are created and where they are resumed or cancelled (the same gateway in memory)."""
    if request.param == "memory":
        gw: GatewayProcess = request.getfixturevalue("memory_gw")
        return gw, gw
    pair: Pair = request.getfixturevalue("redis_pair")
    return pair


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def up_gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    with GatewayProcess({**UPSTREAM, "upstream_url": up.url}) as gw:
        yield gw


@pytest.fixture(scope="module")
def up_redis_pair(up: FakeUpstream) -> Iterator[Pair]:
    with RedisServer() as redis:
        settings = {**UPSTREAM, "upstream_url": up.url, "redis_url": redis.url, "redis_lease_s": 1.0}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            yield a, b


@pytest.fixture(params=["memory", "redis"])
def up_replicas(request: pytest.FixtureRequest) -> Pair:
    """``replicas`` in front of the fake OpenAI-compatible upstream (``up``)."""
    if request.param == "memory":
        gw: GatewayProcess = request.getfixturevalue("up_gw")
        return gw, gw
    pair: Pair = request.getfixturevalue("up_redis_pair")
    return pair


@pytest.fixture(scope="module")
def anthropic_gw(anthropic_upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    settings = {**UPSTREAM, "provider": "anthropic", "upstream_url": anthropic_upstream.url, "model": "claude-t"}
    with GatewayProcess(settings) as gw:
        yield gw


@pytest.fixture(scope="module")
def inv(up_gw: GatewayProcess, up: FakeUpstream) -> Iterator[Invariants]:
    """The invariants of the upstream gateway (one terminal per stream, nothing left open, no task or memory left
    behind), baselined after a warm-up."""
    for _ in range(3):
        post_raw(up_gw, {"input": up.script(Script(deltas=["a", "b"])), "stream": True})
    invariants = Invariants(up_gw, up)
    invariants.rebase()
    yield invariants
    invariants.close()


def matrix(scenario: str, expected: str) -> pytest.MarkDecorator:
    return pytest.mark.fault_matrix(group="Upstream faults", scenario=f"Responses API: {scenario}", expected=expected)


@pytest.fixture
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """``sdk(gw, key="k1")``: an SDK client for a gateway (no retries: the tests see every answer)."""
    clients: list[openai.OpenAI] = []

    def make(gw: GatewayProcess, key: str = "k1") -> openai.OpenAI:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def script(parts: list[Any], **spec: Any) -> str:
    """A prompt the demo model plays exactly."""
    return "/script " + json.dumps({"parts": parts, **spec})


def dicts(events: list[Any]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events]


def words(n: int, tag: str = "w") -> list[str]:
    return [f"{tag}{i} " for i in range(n)]


def post_raw(gw: GatewayProcess, body: dict[str, Any], key: str | None = None
             ) -> tuple[httpx.Response, list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.stream("POST", gw.url + "/v1/responses", json=body, headers=headers, timeout=30) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, list(raw_events(resp))


REASON_TEXT_CALL = [{"reasoning": "Think"}, {"reasoning": "ing."}, "It is ", "sunny.",
                    {"tool_call": {"id": "call_a", "name": "get_weather"}}, {"arguments": '{"city":'},
                    {"arguments": ' "Oslo"}'}]


# --- streaming, in OpenAI's order ---------------------------------------------------------------------------------
def test_sdk_stream_reasoning_then_tool_call_in_openai_order(memory_gw: GatewayProcess, sdk: Any) -> None:
    events = dicts(list(sdk(memory_gw).responses.create(
        model="ssegate-demo", input="What is the weather in Paris?", tools=[WEATHER],  # type: ignore[list-item]
        reasoning={"effort": "low"}, stream=True)))
    assert violations(events) == []
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.reasoning_summary_part.added"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    reasoning_end = types.index("response.reasoning_summary_text.done")
    assert set(types[4:reasoning_end]) == {"response.reasoning_summary_text.delta"}
    assert types[reasoning_end:] == [
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", *["response.function_call_arguments.delta"] * (len(types) - reasoning_end - 7),
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["id"].startswith("resp_")
    reasoning, call = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"][0]["text"].startswith("The question is")
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert final["tools"] == [WEATHER] and final["usage"]["output_tokens"] > 0


def test_sdk_stream_from_an_openai_upstream_and_what_it_was_sent(up_gw: GatewayProcess, up: FakeUpstream,
                                                                 sdk: Any) -> None:
    prompt = up.script(Script(parts=[Reasoning("Let me "), Reasoning("think."), Text("It is "), Text("sunny."),
                                     ToolCall("get_weather", ['{"city":', ' "Oslo"}'], id="call_x")]))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    client = sdk(up_gw)
    events = dicts(list(client.responses.create(
        model="fake-model", instructions="Be brief.", input=[{"role": "user", "content": prompt}],
        tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},  # type: ignore[list-item]
        reasoning={"effort": "high"}, max_output_tokens=50, temperature=0.5, top_p=0.9, user="u1",
        text={"format": {"type": "json_schema", "name": "w", "schema": schema}, "verbosity": "low"}, stream=True)))
    assert violations(events) == []
    final = client.responses.retrieve(events[0]["response"]["id"])
    types = [e["type"] for e in events if e["type"].endswith(("added", "done", "completed"))]
    assert types == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    assert final.output_text == "It is sunny."
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    call = final.output[2]
    assert call.type == "function_call" and call.call_id == "call_x" and call.arguments == '{"city": "Oslo"}'
    sent = up.records(prompt)[0].request_json
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": schema}}
    assert (sent["reasoning_effort"], sent["max_tokens"], sent["temperature"]) == ("high", 50, 0.5)
    assert (sent["top_p"], sent["user"], sent["verbosity"]) == (0.9, "u1", "low")
    assert final.instructions == "Be brief." and final.max_output_tokens == 50 and final.top_p == 0.9


def test_not_streamed_answer_has_output_text_and_usage(memory_gw: GatewayProcess, sdk: Any) -> None:
    out = sdk(memory_gw).responses.create(model="ssegate-demo", input="What is SSE?", metadata={"k": "v"})
    assert out.status == "completed" and out.object == "response"
    assert "Server-Sent Events" in out.output_text or out.output_text
    [message] = out.output
    assert message.type == "message" and message.status == "completed"
    assert out.usage is not None and out.usage.output_tokens > 0 and out.usage.input_tokens > 0
    assert out.metadata == {"k": "v"} and out.store is True and out.background is False
    again = sdk(memory_gw).responses.retrieve(out.id)
    assert again.to_dict() == out.to_dict()


def test_json_schema_text_format_answers_json(memory_gw: GatewayProcess, sdk: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
              "required": ["city", "temperature"]}
    out = sdk(memory_gw).responses.create(model="ssegate-demo", input="How warm is it in Lisbon? 24 degrees?",
                                          text={"format": {"type": "json_schema", "name": "w", "schema": schema}})
    assert json.loads(out.output_text) == {"city": "Lisbon", "temperature": 24.0}


def test_max_output_tokens_ends_incomplete(memory_gw: GatewayProcess) -> None:
    body = {"input": script(words(10), finish_reason="length"), "max_output_tokens": 4, "stream": True}
    resp, events = post_raw(memory_gw, body, key="k1")
    assert resp.status_code == 200 and violations(events) == []
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"
    assert final["response"]["output"][0]["content"][0]["text"] == "w0 w1 w2 w3 "


# --- function calling round trip ----------------------------------------------------------------------------------
def test_function_call_round_trip_with_the_output_sent_back(memory_gw: GatewayProcess, sdk: Any) -> None:
    client = sdk(memory_gw)
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model="ssegate-demo", input=question, tools=[WEATHER], reasoning={"effort": "low"})
    [call] = [o for o in first.output if o.type == "function_call"]
    assert json.loads(call.arguments) == {"city": "Paris"}
    following = [*question, *[o.to_dict() for o in first.output],
                 {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, light rain"}]
    second = client.responses.create(model="ssegate-demo", input=following, tools=[WEATHER])
    assert second.status == "completed" and "18 C, light rain" in second.output_text


def test_function_call_output_reaches_the_upstream_as_a_tool_message(up_gw: GatewayProcess, up: FakeUpstream,
                                                                      sdk: Any) -> None:
    prompt = up.script(Script(require_tool_call_ids=True, turns=[
        Script(parts=[Reasoning("Need the weather."), ToolCall("get_weather", '{"city": "Oslo"}', id="call_7")]),
        Script(deltas=["It is ", "-3 C."])]))
    client = sdk(up_gw)
    question: list[Any] = [{"role": "user", "content": prompt}]
    first = client.responses.create(model="fake-model", input=question, tools=[WEATHER])
    following = [*question, *[o.to_dict() for o in first.output],
                 {"type": "function_call_output", "call_id": "call_7", "output": "-3 C"}]
    second = client.responses.create(model="fake-model", input=following, tools=[WEATHER])
    assert second.output_text == "It is -3 C."
    sent = up.records(prompt)[-1].request_json["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"] == [
        {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert sent[1].get("reasoning_content") == "Need the weather."  # a tool turn's reasoning goes back upstream
    assert sent[2] == {"role": "tool", "tool_call_id": "call_7", "content": "-3 C"}


def test_anthropic_thinking_round_trips_as_encrypted_content(anthropic_gw: GatewayProcess,
                                                             anthropic_upstream: FakeUpstream, sdk: Any) -> None:
    """The upstream refuses a tool turn without its thinking blocks as it sent them: they ride on the reasoning item
    as ``encrypted_content`` and come back when the output is sent back as input, or when the next request names
    the response in ``previous_response_id``."""
    prompt = anthropic_upstream.script(Script(require_signatures=True, turns=[
        Script(parts=[Reasoning("Need the weather."), RedactedThinking(), ToolCall("get_weather", '{"city": "Oslo"}')]),
        Script(deltas=["It is -3 C."])]))
    client = sdk(anthropic_gw)
    question: list[Any] = [{"role": "user", "content": prompt}]
    first = client.responses.create(model="claude-t", input=question, tools=[WEATHER],
                                    reasoning={"effort": "low"}, include=["reasoning.encrypted_content"])
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert call.type == "function_call"
    result: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}
    following = [*question, *[o.to_dict() for o in first.output], result]
    second = client.responses.create(model="claude-t", input=following, tools=[WEATHER])
    without = [{k: v for k, v in item.items() if k != "encrypted_content"} for item in following]
    with pytest.raises(openai.BadRequestError):  # what the upstream says when the thinking does not come back
        client.responses.create(model="claude-t", input=without, tools=[WEATHER])
    continued = client.responses.create(model="claude-t", previous_response_id=first.id, input=[result],
                                        tools=[WEATHER])
    assert second.output_text == "It is -3 C." and continued.output_text == "It is -3 C."
    sent = [r.request_json for r in anthropic_upstream.records(prompt) if r.status == 200]
    assert [r.turn for r in anthropic_upstream.records(prompt)] == [0, 1, 1, 1]
    assert sent[-1]["messages"] == sent[-2]["messages"]  # the same conversation as when the client sent it back


# --- previous_response_id -----------------------------------------------------------------------------------------
def test_previous_response_id_continues_the_conversation_on_any_replica(up_replicas: Pair, up: FakeUpstream,
                                                                        sdk: Any) -> None:
    """The upstream receives the previous response's input without its instructions (the new request's come
    first), its output (reasoning, text, the function call) and the new input; the chain goes on from there.
    Created on A, continued on B (streamed), then on A again."""
    a, b = up_replicas
    prompt = up.script(Script(require_tool_call_ids=True, turns=[
        Script(parts=[Reasoning("Need the weather."), Text("Let me look."),
                      ToolCall("get_weather", '{"city": "Oslo"}', id="call_7")]),
        Script(deltas=["It is ", "-3 C."]),
        Script(deltas=["You are welcome."])]))
    question: list[Any] = [{"role": "user", "content": prompt}]
    result: Any = {"type": "function_call_output", "call_id": "call_7", "output": "-3 C"}
    first = sdk(a).responses.create(model="fake-model", instructions="Be brief.", input=question, tools=[WEATHER])
    events = dicts(list(sdk(b).responses.create(model="fake-model", instructions="Be very brief.",
                                                previous_response_id=first.id, input=[result], tools=[WEATHER],
                                                stream=True)))
    assert violations(events) == []
    second = events[-1]["response"]
    assert second["status"] == "completed" and second["previous_response_id"] == first.id
    third = sdk(a).responses.create(model="fake-model", previous_response_id=second["id"], input="Thanks!")
    assert third.output_text == "You are welcome." and third.previous_response_id == second["id"]
    assert sdk(b).responses.retrieve(third.id).previous_response_id == second["id"]

    sent = [r.request_json["messages"] for r in up.records(prompt)]
    assert [r.turn for r in up.records(prompt)] == [0, 1, 2]
    turn = sent[1][2]
    assert sent[1][:2] == [{"role": "system", "content": "Be very brief."}, {"role": "user", "content": prompt}]
    assert (turn["role"], turn["content"], turn["reasoning_content"]) == ("assistant", "Let me look.",
                                                                          "Need the weather.")
    assert turn["tool_calls"] == [{"id": "call_7", "type": "function",
                                   "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert sent[1][3:] == [{"role": "tool", "tool_call_id": "call_7", "content": "-3 C"}]
    # the chain: no instructions this time, and everything before, then the second answer and the new input
    assert sent[2][:3] == sent[1][1:]
    assert (sent[2][3]["role"], sent[2][3]["content"]) == ("assistant", "It is -3 C.")
    assert sent[2][4:] == [{"role": "user", "content": "Thanks!"}]
    # exactly what the upstream receives when the client sends the previous output back itself
    sdk(b).responses.create(model="fake-model", instructions="Be very brief.", tools=[WEATHER],
                            input=[*question, *[o.to_dict() for o in first.output], result])
    assert up.records(prompt)[-1].request_json["messages"] == sent[1]


def test_previous_response_id_without_a_response_to_continue_is_a_bad_request(replicas: Pair, sdk: Any) -> None:
    """Unknown, malformed, another key's and ``store: false`` responses cannot be continued: 400 with
    ``param: previous_response_id``, as OpenAI answers; a stored one of the same key can, on any replica."""
    a, b = replicas
    kept = sdk(a).responses.create(model="ssegate-demo", input=script(["a"]))
    unstored = sdk(a).responses.create(model="ssegate-demo", input=script(["a"]), store=False)
    for key, rid in [("k1", "resp_nosuchresponse"), ("k1", "not-a-response"), ("k2", kept.id), ("k1", unstored.id)]:
        with pytest.raises(openai.BadRequestError) as info:
            sdk(b, key).responses.create(model="ssegate-demo", input="hi", previous_response_id=rid)
        assert info.value.param == "previous_response_id" and info.value.code == "invalid_request"
        assert rid in info.value.message and info.value.response.headers["x-should-retry"] == "false"
    continued = sdk(b).responses.create(model="ssegate-demo", input=script(["b"]), previous_response_id=kept.id)
    assert continued.output_text == "b" and continued.previous_response_id == kept.id


def test_a_response_continues_on_another_replica_at_once(replicas: Pair, sdk: Any) -> None:
    """An agent's loop: a response ends on A and the next request, continuing it, reaches B a millisecond later,
    before A's writer has put the end in Redis (``cluster/redis_log.py``, every 20 ms): B waits for it, and
    continues the response instead of calling it unknown or still running."""
    a, b = replicas
    on_a, on_b = sdk(a), sdk(b)  # kept: the next request leaves at once
    previous = on_a.responses.create(model="ssegate-demo", input=script(["0"]))
    for i in range(1, 9):
        created = on_a.responses.create(model="ssegate-demo", input=script([str(i)]),
                                        previous_response_id=previous.id)
        continued = on_b.responses.create(model="ssegate-demo", input=script([f"{i}b"]),
                                          previous_response_id=created.id)
        assert (created.output_text, continued.output_text) == (str(i), f"{i}b")
        previous = continued


def test_previous_response_id_of_a_running_response_is_a_bad_request(replicas: Pair, sdk: Any) -> None:
    a, b = replicas
    created = sdk(a).responses.create(model="ssegate-demo", input=script(words(400), delay=0.02), background=True)
    deadline = time.monotonic() + 10
    while sdk(a).responses.retrieve(created.id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(openai.BadRequestError) as info:
        sdk(b).responses.create(model="ssegate-demo", input="And then?", previous_response_id=created.id)
    assert info.value.param == "previous_response_id" and "still running" in info.value.message
    assert sdk(b).responses.cancel(created.id).status == "cancelled"
    continued = sdk(b).responses.create(model="ssegate-demo", input=script(["ok"]), previous_response_id=created.id)
    assert continued.output_text == "ok"  # a cancelled response has ended: it can be continued


SHORT_TTL_S = 1.5


@pytest.fixture(scope="module")
def short_ttl_pair() -> Iterator[Pair]:
    with RedisServer() as redis:
        settings = {**COMMON, "redis_url": redis.url, "log_ttl_s": SHORT_TTL_S}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            yield a, b


@pytest.mark.parametrize("mode", ["memory", "redis"])
def test_a_response_expires_with_the_log_ttl(short_ttl_pair: Pair, mode: str, sdk: Any) -> None:
    """Retention is the event log's ``LOG_TTL_S``: then retrieve is a 404 and continuing it a 400. A reads its own
    response from its in-process log (memory mode's code); B reads Redis."""
    a, b = short_ttl_pair
    reader = a if mode == "memory" else b
    created = sdk(a).responses.create(model="ssegate-demo", input=script(["bye"]))
    ended = time.monotonic()
    assert sdk(reader).responses.retrieve(created.id).id == created.id
    continued = sdk(reader).responses.create(model="ssegate-demo", input=script(["again"]),
                                             previous_response_id=created.id)
    assert continued.output_text == "again"
    deadline = ended + SHORT_TTL_S + 10
    while True:  # polling for a clock-driven expiry; the upper bound only catches "never expires"
        try:
            sdk(reader).responses.retrieve(created.id)
        except openai.NotFoundError:
            break
        assert time.monotonic() < deadline, "the response never expired"
        time.sleep(0.05)
    assert time.monotonic() - ended >= SHORT_TTL_S - 0.2
    with pytest.raises(openai.BadRequestError) as info:
        sdk(reader).responses.create(model="ssegate-demo", input="hi", previous_response_id=created.id)
    assert info.value.param == "previous_response_id"


# --- images -------------------------------------------------------------------------------------------------------
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJ"
       "RU5ErkJggg==")
"""A 1x1 PNG as a data URL."""


def image_input(prompt: str, detail: str = "low") -> list[Any]:
    return [{"role": "user", "content": [{"type": "input_text", "text": f"What is in these? {prompt}"},
                                         {"type": "input_image", "image_url": PNG, "detail": detail},
                                         {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]


def test_an_input_image_reaches_an_openai_upstream_as_an_image_part(up_gw: GatewayProcess, up: FakeUpstream,
                                                                    sdk: Any) -> None:
    prompt = up.script(Script(deltas=["A dot ", "and a cat."]))
    out = sdk(up_gw).responses.create(model="fake-model", input=image_input(prompt))
    assert out.output_text == "A dot and a cat."
    assert up.records(prompt)[0].images() == [
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]


def test_an_input_image_reaches_anthropic_as_an_image_block(anthropic_gw: GatewayProcess,
                                                            anthropic_upstream: FakeUpstream, sdk: Any) -> None:
    """(Claude reads every image in full: ``detail: high`` goes through, ``low`` is a 400 naming it.)"""
    prompt = anthropic_upstream.script(Script(deltas=["A dot ", "and a cat."]))
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]\.content\[1\]\.detail: "):
        sdk(anthropic_gw).responses.create(model="claude-t", input=image_input(prompt, "low"))
    assert anthropic_upstream.records(prompt) == []
    out = sdk(anthropic_gw).responses.create(model="claude-t", input=image_input(prompt, "high"))
    assert out.output_text == "A dot and a cat."
    media_type, data = PNG.removeprefix("data:").split(";base64,")
    assert anthropic_upstream.records(prompt)[0].images() == [
        {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]


# --- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "named"), [
    ({"conversation": "conv_1"}, "conversation"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"include": ["file_search_call.results"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "tool_choice"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                              {"type": "input_image", "image_url": "https://x/a.png"}]}]},
     "input[0].content[1]"),  # refused by the demo upstream (text only), named as the client sent it
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
])
def test_what_cannot_be_honoured_is_a_bad_request_naming_the_field(memory_gw: GatewayProcess, sdk: Any,
                                                                   fields: dict[str, Any], named: str) -> None:
    body = {"model": "ssegate-demo", "input": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as info:
        sdk(memory_gw).responses.create(**body)
    assert named in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"


def test_an_unknown_field_is_a_bad_request_naming_it(memory_gw: GatewayProcess, sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(memory_gw).responses.create(model="ssegate-demo", input="hi", extra_body={"frobnicate": 1})
    assert "frobnicate" in info.value.message


# --- background, resume, cancel -----------------------------------------------------------------------------------
def test_background_stream_resumes_after_a_drop_with_no_gap_and_no_duplicate(replicas: Pair, sdk: Any) -> None:
    a, b = replicas
    prompt = script([*REASON_TEXT_CALL[:2], *words(30)], delay=0.01)
    stream = sdk(a).responses.create(model="ssegate-demo", input=prompt, background=True, stream=True)
    head = []
    for event in stream:
        head.append(event)
        if len(head) == 12:
            break
    stream.close()  # the connection drops mid-answer
    rid, last = head[0].response.id, head[-1].sequence_number
    rest = list(sdk(b).responses.retrieve(rid, stream=True, starting_after=last))
    events = dicts(head + rest)
    assert violations(events) == []
    assert events[0]["response"]["status"] == "queued" and events[1]["type"] == "response.queued"
    # exactly what an uninterrupted run of the same answer streams
    whole = dicts(list(sdk(a).responses.create(model="ssegate-demo", input=prompt, background=True, stream=True)))
    assert normalized(events) == normalized(whole)
    # and a replay from the start (what the SDK's responses.stream(response_id=...) asks for) is the same again
    with sdk(b).responses.stream(response_id=rid, starting_after=last) as resumed:
        tail = [(e.sequence_number, e.type) for e in resumed]
        final = resumed.get_final_response()
    assert tail == [(e["sequence_number"], e["type"]) for e in events[len(head):]]
    assert final.output_text == "".join(words(30)) and final.status == "completed"


def test_background_response_runs_to_its_end_without_a_client(replicas: Pair, sdk: Any) -> None:
    a, b = replicas
    created = sdk(a).responses.create(model="ssegate-demo", input=script(words(20), delay=0.01), background=True)
    assert created.status == "queued" and created.background is True and created.output == []
    deadline = time.monotonic() + 15
    seen = {created.status}
    while True:
        got = sdk(b).responses.retrieve(created.id)
        seen.add(got.status)
        if got.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling, as an OpenAI client does
    assert got.status == "completed" and got.output_text == "".join(words(20))
    assert seen <= {"queued", "in_progress", "completed"}


def test_resume_of_a_finished_response_from_its_last_event_is_empty(memory_gw: GatewayProcess, sdk: Any) -> None:
    client = sdk(memory_gw)
    events = list(client.responses.create(model="ssegate-demo", input=script(["a", "b"]), background=True,
                                          stream=True))
    rid, last = events[0].response.id, events[-1].sequence_number
    assert list(client.responses.retrieve(rid, stream=True, starting_after=last)) == []
    assert dicts(list(client.responses.retrieve(rid, stream=True, starting_after=last - 1))) == [events[-1].to_dict()]
    with pytest.raises(openai.NotFoundError):
        list(client.responses.retrieve(rid, stream=True, starting_after=last + 1))


def test_cancel_stops_a_background_response(replicas: Pair, sdk: Any) -> None:
    a, b = replicas
    created = sdk(a).responses.create(model="ssegate-demo", input=script(words(400), delay=0.02), background=True)
    deadline = time.monotonic() + 10
    while sdk(b).responses.retrieve(created.id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    cancelled = sdk(b).responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    text = cancelled.output[0].content[0].text  # type: ignore[union-attr]
    assert 0 < len(text) < len("".join(words(400)))
    assert sdk(b).responses.cancel(created.id).to_dict() == cancelled.to_dict()  # idempotent
    assert sdk(a).responses.retrieve(created.id).status == "cancelled"
    events = dicts(list(sdk(a).responses.retrieve(created.id, stream=True)))
    assert violations(events) == []
    assert events[-1]["type"] == "response.cancelled" and events[-1]["response"]["status"] == "cancelled"


def test_cancel_closes_the_upstream(up_gw: GatewayProcess, up: FakeUpstream, sdk: Any) -> None:
    prompt = up.script(Script(deltas=words(200), delay=0.05))
    created = sdk(up_gw).responses.create(model="fake-model", input=prompt, background=True)
    up.wait_request(prompt)
    assert sdk(up_gw).responses.cancel(created.id).status == "cancelled"
    rec = up.wait_closed(prompt, CLOSE_BOUND_S)
    assert not rec.finished


def test_only_the_key_that_created_a_response_sees_it(memory_gw: GatewayProcess, sdk: Any) -> None:
    created = sdk(memory_gw).responses.create(model="ssegate-demo", input=script(["a"]))
    with pytest.raises(openai.NotFoundError):
        sdk(memory_gw, "k2").responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk(memory_gw, "k2").responses.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk(memory_gw).responses.retrieve("resp_nosuchstream")


def test_store_false_is_not_retrievable(memory_gw: GatewayProcess, sdk: Any) -> None:
    out = sdk(memory_gw).responses.create(model="ssegate-demo", input=script(["a"]), store=False)
    assert out.output_text == "a" and out.store is False
    with pytest.raises(openai.NotFoundError):
        sdk(memory_gw).responses.retrieve(out.id)


def test_native_start_event_does_not_carry_the_responses_echo(memory_gw: GatewayProcess, sdk: Any) -> None:
    out = sdk(memory_gw).responses.create(model="ssegate-demo", input=script(["a"]), instructions="secretive")
    sid = out.id.removeprefix("resp_")
    resp = httpx.get(f"{memory_gw.url}/v1/streams/{sid}", params={"after": 0},
                     headers={"Authorization": "Bearer k1"}, timeout=10)
    start = next(line for line in resp.text.splitlines() if line.startswith("data:") and "stream_id" in line)
    assert json.loads(start[5:]) == {"stream_id": sid, "model": "ssegate-demo"}


# --- upstream faults and disconnects ------------------------------------------------------------------------------
FAILED_AS_OPENAI = ("the 3 text deltas, the message item done `incomplete`, an `error` event with the code (the "
                    "SDK raises `APIError`), then `response.failed` with `error.code` `server_error`")


@pytest.mark.parametrize(("fault", "code"), [
    pytest.param(Script(deltas=words(6), delay=0.01, fault=Fault.RESET, fault_after=3), "upstream_error",
                 marks=matrix("TCP reset after 3 tokens", FAILED_AS_OPENAI + "; code `upstream_error`"), id="reset"),
    pytest.param(Script(deltas=words(6), delay=0.01, fault=Fault.STALL, fault_after=3), "upstream_timeout",
                 marks=matrix("upstream stalls after 3 tokens", FAILED_AS_OPENAI + " after IDLE_TIMEOUT_S; code "
                              "`upstream_timeout`"), id="stall"),
    pytest.param(Script(deltas=words(6), delay=0.01, fault=Fault.MALFORMED_JSON, fault_after=3), "upstream_error",
                 marks=matrix("malformed JSON after 3 tokens", FAILED_AS_OPENAI + "; code `upstream_error`"),
                 id="malformed"),
])
def test_upstream_fault_mid_stream_ends_with_error_and_response_failed(up_gw: GatewayProcess, up: FakeUpstream,
                                                                       inv: Invariants, sdk: Any, fault: Script,
                                                                       code: str) -> None:
    prompt = up.script(fault)
    resp, events = post_raw(up_gw, {"input": prompt, "stream": True})
    assert resp.status_code == 200 and violations(events) == []
    error, failed = events[-2:]
    assert error["type"] == "error" and error["code"] == code and error["error"]["code"] == code
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error" and failed["response"]["error"]["message"]
    message = failed["response"]["output"][0]
    assert message["status"] == "incomplete" and message["content"][0]["text"] == "w0 w1 w2 "
    # the SDK raises on the error event, as it does for Chat Completions
    prompt = up.script(fault)
    with pytest.raises(openai.APIError) as info:
        list(sdk(up_gw).responses.create(model="fake-model", input=prompt, stream=True))
    assert info.value.code == code
    inv.check()


@matrix("500 before the first token", "retried, then HTTP 502 with OpenAI's error body (the SDK raises "
        "`InternalServerError`, code `upstream_error`)")
def test_upstream_failure_before_the_first_token_is_an_http_error(up_gw: GatewayProcess, up: FakeUpstream,
                                                                  inv: Invariants, sdk: Any) -> None:
    prompt = up.script(Script(status=500))
    with pytest.raises(openai.InternalServerError) as info:
        list(sdk(up_gw).responses.create(model="fake-model", input=prompt, stream=True))
    assert info.value.status_code == 502 and info.value.code == "upstream_error"
    inv.check()


@pytest.mark.fault_matrix(group="Client faults", scenario="Responses API: a stream's client disconnects mid-answer",
                          expected="the upstream request is closed (the generation is cancelled)")
def test_disconnect_of_a_stream_closes_the_upstream(up_gw: GatewayProcess, up: FakeUpstream,
                                                    inv: Invariants) -> None:
    prompt = up.script(Script(deltas=words(200), delay=0.05))
    with httpx.stream("POST", up_gw.url + "/v1/responses", json={"input": prompt, "stream": True},
                      timeout=10) as resp:
        events = list(raw_events(resp, n=5))
    assert [e["sequence_number"] for e in events] == list(range(5))
    rec = up.wait_closed(prompt, CLOSE_BOUND_S)
    assert not rec.finished
    inv.check()


@pytest.mark.fault_matrix(group="Client faults",
                          scenario="Responses API: a background stream's client disconnects mid-answer",
                          expected="the generation goes on to its end; the response is retrievable, completed")
def test_disconnect_of_a_background_stream_does_not_stop_it(up_gw: GatewayProcess, up: FakeUpstream,
                                                            inv: Invariants, sdk: Any) -> None:
    prompt = up.script(Script(deltas=words(20), delay=0.02))
    with httpx.stream("POST", up_gw.url + "/v1/responses",
                      json={"input": prompt, "stream": True, "background": True}, timeout=10) as resp:
        events = list(raw_events(resp, n=5))
    rid = events[0]["response"]["id"]
    deadline = time.monotonic() + 10
    while not up.records(prompt)[0].finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.records(prompt)[0].finished  # the upstream answered to its end
    got = sdk(up_gw).responses.retrieve(rid)
    assert got.status == "completed" and got.output_text == "".join(words(20))
    inv.check()
