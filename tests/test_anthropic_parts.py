"""OpenAI-shaped requests translated for Anthropic's Messages API, checked on what the fake Anthropic upstream got.

The client speaks OpenAI's shapes to the gateway (the ``openai`` SDK, ``ssegate.client``); the fake upstream
(tests/fakes/anthropic.py) records the Messages API body it received. Covered here: ``tool_choice`` auto / required
/ none / named → auto / any / none / tool, ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``, image
parts (a data URL → a base64 source, an https URL → a url source), ``reasoning_effort`` → the documented thinking
budgets (docs/fields.md), and ``Done.provider_data`` carried by the Python client into the next turn.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from ssegate.client import AsyncClient, Client, Done, Reasoning, ToolCallDelta, ToolCallStart
from tests.fakes import FakeUpstream, RedactedThinking, Script, Text, ToolCall
from tests.fakes import Reasoning as Thought
from tests.support.gateway import GatewayProcess

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
NAMED = {"type": "function", "function": {"name": "get_time"}}
BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
"""The thinking budget per effort, as docs/fields.md documents it."""
DEFAULT_MAX_TOKENS = 4096
"""What ssegate asks for when the request names no max_tokens (Anthropic requires one)."""


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def sdk(claude: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=claude.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        yield client


def sent(up: FakeUpstream, prompt: str) -> dict[str, Any]:
    """The Messages API body of the one request the upstream received for ``prompt``."""
    [rec] = up.records(prompt)
    assert rec.path == "/v1/messages" and rec.status == 200, (rec.path, rec.status)
    return rec.request_json


# --- tools ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
    (NAMED, {"type": "tool", "name": "get_time"}),
], ids=["auto", "required", "none", "named"])
def test_tool_choice_is_translated(sdk: openai.OpenAI, anthropic_upstream: FakeUpstream, choice: Any,
                                   expected: dict[str, Any]) -> None:
    prompt = anthropic_upstream.script(Script(parts=[ToolCall("get_time", ['{"city": "Oslo"}'])]))
    out = sdk.chat.completions.create(model="claude-test", messages=user(prompt),  # type: ignore[arg-type]
                                      tools=[WEATHER, TIME], tool_choice=choice)  # type: ignore[list-item]
    assert out.choices[0].finish_reason == "tool_calls"
    body = sent(anthropic_upstream, prompt)
    assert body["tool_choice"] == expected
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "input_schema": TIME["function"]["parameters"]}]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
    ({"parallel_tool_calls": False, "tool_choice": "required"}, {"type": "any", "disable_parallel_tool_use": True}),
    ({"parallel_tool_calls": False, "tool_choice": NAMED},
     {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}),
    ({"parallel_tool_calls": True}, None),
    ({"parallel_tool_calls": True, "tool_choice": "required"}, {"type": "any"}),
], ids=["false", "false-required", "false-named", "true", "true-required"])
def test_parallel_tool_calls_false_disables_parallel_tool_use(claude: GatewayProcess,
                                                              anthropic_upstream: FakeUpstream,
                                                              fields: dict[str, Any],
                                                              expected: dict[str, Any] | None) -> None:
    """``parallel_tool_calls: false`` is ``disable_parallel_tool_use`` on whatever tool choice goes up (``auto``
    when none was asked); ``true`` is Anthropic's default and adds nothing."""
    prompt = anthropic_upstream.script(Script(parts=[ToolCall("get_time", ['{"city": "Oslo"}'])]))
    resp = httpx.post(claude.url + "/v1/chat/stream", timeout=30,
                      json={"messages": user(prompt), "tools": [WEATHER, TIME], **fields})
    assert resp.status_code == 200, resp.text
    body = sent(anthropic_upstream, prompt)
    assert body.get("tool_choice") == expected


# --- images --------------------------------------------------------------------------------------------------
def test_images_become_base64_and_url_sources(sdk: openai.OpenAI, anthropic_upstream: FakeUpstream) -> None:
    """A data URL becomes a base64 source with its media type and the very same data (a 1 MiB image here);
    an https URL becomes a url source; text parts stay text blocks, in order."""
    data = base64.b64encode(os.urandom(3 << 18)).decode()  # 1 MiB of base64
    prompt = anthropic_upstream.script(Script(deltas=["Two ", "pictures."]))
    content = [{"type": "text", "text": f"Compare these. {prompt}"},
               {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    out = sdk.chat.completions.create(model="claude-test",
                                      messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
    assert out.choices[0].message.content == "Two pictures."
    body = sent(anthropic_upstream, prompt)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": f"Compare these. {prompt}"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": data}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}]


def test_image_detail_low_is_refused_and_auto_or_high_relayed(sdk: openai.OpenAI,
                                                              anthropic_upstream: FakeUpstream) -> None:
    """Claude reads every image in full: ``detail: low`` (a promise of a cheaper read) is a 400 naming the field,
    and nothing reaches the upstream; ``auto`` and ``high`` are what it does, and go through."""
    prompt = anthropic_upstream.script(Script(deltas=["Seen."]))
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="claude-test", messages=[{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]}],
        )  # type: ignore[list-item,misc]
    assert "messages[0].content[1].image_url.detail" in str(err.value)
    assert anthropic_upstream.records(prompt) == []
    for detail in ("auto", "high"):
        out = sdk.chat.completions.create(model="claude-test", messages=[{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": detail}}]}],
        )  # type: ignore[list-item,misc]
        assert out.choices[0].message.content == "Seen."


# --- reasoning_effort ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("effort", list(BUDGETS))
def test_reasoning_effort_is_the_documented_thinking_budget(sdk: openai.OpenAI, anthropic_upstream: FakeUpstream,
                                                            effort: str) -> None:
    """Without max_tokens the budget is the effort's, and max_tokens leaves DEFAULT_MAX_TOKENS for the answer."""
    prompt = anthropic_upstream.script(Script(parts=[Thought("Hmm."), Text("Yes.")]))
    out = sdk.chat.completions.create(model="claude-test", messages=user(prompt),  # type: ignore[arg-type]
                                      reasoning_effort=effort)  # type: ignore[arg-type]
    assert out.choices[0].message.content == "Yes."
    body = sent(anthropic_upstream, prompt)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": BUDGETS[effort]}
    assert body["max_tokens"] == BUDGETS[effort] + DEFAULT_MAX_TOKENS


def test_reasoning_effort_budget_stays_below_max_tokens(sdk: openai.OpenAI, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=["ok"]))
    sdk.chat.completions.create(model="claude-test", messages=user(prompt),  # type: ignore[arg-type]
                                reasoning_effort="high", max_completion_tokens=5000)
    body = sent(anthropic_upstream, prompt)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4999} and body["max_tokens"] == 5000


def test_reasoning_effort_none_turns_thinking_off(sdk: openai.OpenAI, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=["ok"]))
    sdk.chat.completions.create(model="claude-test", messages=user(prompt),  # type: ignore[arg-type]
                                reasoning_effort="none")
    body = sent(anthropic_upstream, prompt)
    assert "thinking" not in body and body["max_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(("fields", "named"), [
    ({"reasoning_effort": "ultra"}, "reasoning_effort"),
    ({"reasoning_effort": "low", "max_tokens": 1000}, "max_tokens"),
    ({"reasoning_effort": "low", "tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
])
def test_reasoning_effort_the_upstream_cannot_honour_is_a_400(claude: GatewayProcess,
                                                              anthropic_upstream: FakeUpstream,
                                                              fields: dict[str, Any], named: str) -> None:
    prompt = anthropic_upstream.script(Script(deltas=["never"]))
    resp = httpx.post(claude.url + "/v1/chat/completions", json={"messages": user(prompt), **fields}, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"].startswith(f"{named}: ")
    assert anthropic_upstream.records(prompt) == []


# --- the Python client: provider_data into the next turn -------------------------------------------------------
def thinking_then_tools(up: FakeUpstream) -> str:
    """A two-turn script: thinking (signed), a redacted block and two tool calls, then an answer that the fake only
    gives when the thinking blocks come back unchanged (as the real API checks)."""
    return up.script(Script(require_signatures=True, delay=0.002, turns=[
        Script(parts=[Thought("Two cities, "), Thought("two calls.", signature="sig-client"),
                      RedactedThinking("redacted-client"),
                      ToolCall("get_weather", ['{"city": ', '"Oslo"}']), ToolCall("get_time", ['{"city": "Lima"}'])]),
        Script(deltas=["Oslo: -2 C; ", "Lima: 09:00."])]))


EXPECTED_THINKING = [{"type": "thinking", "thinking": "Two cities, two calls.", "signature": "sig-client"},
                     {"type": "redacted_thinking", "data": "redacted-client"}]


def test_python_client_done_carries_provider_data_into_the_next_turn(claude: GatewayProcess,
                                                                     anthropic_upstream: FakeUpstream) -> None:
    prompt = thinking_then_tools(anthropic_upstream)
    with Client(claude.url) as client:
        stream = client.stream(user(prompt), tools=[WEATHER, TIME], reasoning_effort="low")
        events = list(stream)
        assert "".join(e.text for e in events if isinstance(e, Reasoning)) == "Two cities, two calls."
        assert [(e.index, e.name) for e in events if isinstance(e, ToolCallStart)] == [(0, "get_weather"),
                                                                                    (1, "get_time")]
        assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == 0) == \
            '{"city": "Oslo"}'
        done = events[-1]
        assert isinstance(done, Done) and done.finish_reason == "tool_calls"
        assert done.provider_data == {"anthropic": {"thinking": EXPECTED_THINKING}}
        turn = stream.assistant_message()
        assert turn["provider_data"] == done.provider_data and turn["tool_calls"] == done.tool_calls
        results = [{"role": "tool", "tool_call_id": done.tool_calls[0]["id"], "content": "-2 C"},
                   {"role": "tool", "tool_call_id": done.tool_calls[1]["id"], "content": "09:00"}]
        answer = client.stream([*user(prompt), turn, *results], tools=[WEATHER, TIME],
                               reasoning_effort="low").read_text()
    assert answer == "Oslo: -2 C; Lima: 09:00."
    second = anthropic_upstream.records(prompt)[-1]
    assert second.status == 200 and second.request_json["messages"][1]["content"][:2] == EXPECTED_THINKING
    assert second.tool_results() == [(done.tool_calls[0]["id"], "-2 C"), (done.tool_calls[1]["id"], "09:00")]


@pytest.fixture
async def aclient(claude: GatewayProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(claude.url) as client:
        yield client


async def test_async_python_client_done_carries_provider_data(aclient: AsyncClient,
                                                              anthropic_upstream: FakeUpstream) -> None:
    prompt = thinking_then_tools(anthropic_upstream)
    stream = aclient.stream(user(prompt), tools=[WEATHER, TIME], reasoning_effort="low")
    async with stream:
        events = [e async for e in stream]
    done = events[-1]
    assert isinstance(done, Done) and done.provider_data == {"anthropic": {"thinking": EXPECTED_THINKING}}
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "sunny"} for c in done.tool_calls]
    answer = await aclient.stream([*user(prompt), stream.assistant_message(), *results], tools=[WEATHER, TIME],
                                  reasoning_effort="low").read_text()
    assert answer == "Oslo: -2 C; Lima: 09:00."
