"""The ``anthropic`` provider end to end: a real ``ssegate serve`` on the fake Anthropic Messages server,
through the native stream and the OpenAI-compatible API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, post_events, text_of

DELTAS = ["Bon", "jour", ", ", "wörld", " ✓", "\n\nevent: forged\n"]
TEXT = "".join(DELTAS)
KEY = "sk-ant-test-key"


@pytest.fixture(scope="module")
def claude(anthropic_upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    settings = {"provider": "anthropic", "upstream_url": anthropic_upstream.url, "model": "claude-test",
                "upstream_api_key": KEY, **FAST}
    with GatewayProcess(settings) as gw:
        yield gw


def conversation(prompt: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": f"Go. {prompt}"},
    ]


def native(gw: GatewayProcess, prompt: str, **extra: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return post_events(gw.url, {"messages": conversation(prompt), **extra})


# --- the native stream ---------------------------------------------------------------------------------
def test_native_stream_maps_text_usage_and_request(claude: GatewayProcess, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=DELTAS, delay=0.002, prompt_tokens=21))
    resp, events = native(claude, prompt)
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start"] + ["message"] * len(DELTAS) + ["done"]
    assert text_of(events) == TEXT
    assert events[-1].json() == {"finish_reason": "stop", "usage": {"prompt_tokens": 21,
                                 "completion_tokens": len(DELTAS), "estimated": False}}
    [rec] = anthropic_upstream.records(prompt)
    assert rec.path.endswith("/v1/messages")
    sent = rec.request_json
    assert sent["system"] == "You are terse.\n\nAnswer in French."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
        {"role": "user", "content": [{"type": "text", "text": f"Go. {prompt}"}]},
    ]
    assert (sent["model"], sent["max_tokens"], sent["stream"]) == ("claude-test", 4096, True)
    assert rec.headers["x-api-key"] == KEY
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in rec.headers


def test_options_and_max_tokens_finish(claude: GatewayProcess, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=["a", "b"], finish_reason="length"))
    _, events = native(claude, prompt, max_tokens=2, temperature=0.5, stop=["END"])
    assert events[-1].event == "done" and events[-1].json()["finish_reason"] == "length"
    sent = anthropic_upstream.records(prompt)[0].request_json
    assert (sent["max_tokens"], sent["temperature"], sent["stop_sequences"]) == (2, 0.5, ["END"])


def test_midstream_overloaded_is_a_retryable_error_event(claude: GatewayProcess,
                                                         anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=DELTAS, fault=Fault.ANTHROPIC_OVERLOADED, fault_after=2))
    resp, events = native(claude, prompt)
    assert resp.status_code == 200
    assert text_of(events) == "".join(DELTAS[:2])
    assert events[-1].event == "error"
    err = events[-1].json()["error"]
    assert err["retryable"] is True and err["code"] == "upstream_error"
    assert "overloaded" in err["message"]
    assert len(anthropic_upstream.records(prompt)) == 1  # text went out: never retried


def test_overloaded_before_any_text_is_retried(claude: GatewayProcess, anthropic_upstream: FakeUpstream) -> None:
    """An ``overloaded_error`` event before the first delta, every time: retried, then a real 502."""
    prompt = anthropic_upstream.script(Script(deltas=DELTAS, fault=Fault.ANTHROPIC_OVERLOADED, fault_after=0))
    resp, _ = native(claude, prompt)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_error" and resp.json()["error"]["retryable"] is True
    assert len(anthropic_upstream.records(prompt)) == 3


def test_http_529_then_stream(claude: GatewayProcess, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=DELTAS, fail_attempts=1, fail_status=529))
    resp, events = native(claude, prompt)
    assert resp.status_code == 200 and text_of(events) == TEXT and events[-1].event == "done"
    assert [r.status for r in anthropic_upstream.records(prompt)] == [529, 200]


def test_rate_limit_is_429_with_retry_after(claude: GatewayProcess, anthropic_upstream: FakeUpstream) -> None:
    """A ``Retry-After`` longer than the commit deadline: not waited out, the client gets the 429 itself."""
    prompt = anthropic_upstream.script(Script(status=429, headers={"Retry-After": "7"}))
    resp, _ = native(claude, prompt)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["error"]["code"] == "rate_limited"
    assert len(anthropic_upstream.records(prompt)) == 1


def test_invalid_request_is_not_retried(claude: GatewayProcess, anthropic_upstream: FakeUpstream) -> None:
    """The upstream's 400 is the request's fault: the client gets a 400 (not a 502) that says not to retry."""
    prompt = anthropic_upstream.script(Script(status=400))
    resp, _ = native(claude, prompt)
    assert resp.status_code == 400 and resp.headers["x-should-retry"] == "false"
    assert resp.json()["error"]["code"] == "invalid_request"
    assert resp.json()["error"]["retryable"] is False
    assert "invalid_request_error" in resp.json()["error"]["message"]
    assert len(anthropic_upstream.records(prompt)) == 1


# --- the OpenAI-compatible API -------------------------------------------------------------------------
@pytest.fixture
def client(claude: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=claude.url + "/v1", api_key="unused", max_retries=0, timeout=15) as c:
        yield c


def test_openai_sdk_streams_from_anthropic(client: openai.OpenAI, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=DELTAS, prompt_tokens=9))
    with client.chat.completions.create(model="claude-test", messages=conversation(prompt),
                                        stream=True, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, len(DELTAS))
    assert anthropic_upstream.records(prompt)[0].request_json["system"] == "You are terse.\n\nAnswer in French."


def test_openai_sdk_non_streamed_from_anthropic(client: openai.OpenAI, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=DELTAS))
    done = client.chat.completions.create(model="claude-test", messages=conversation(prompt),
                                          max_tokens=64)
    assert done.choices[0].message.content == TEXT
    assert done.usage is not None and done.usage.completion_tokens == len(DELTAS)
    assert anthropic_upstream.records(prompt)[0].request_json["max_tokens"] == 64


def test_openai_sdk_raises_on_midstream_overloaded(client: openai.OpenAI, anthropic_upstream: FakeUpstream) -> None:
    prompt = anthropic_upstream.script(Script(deltas=DELTAS, fault=Fault.ANTHROPIC_OVERLOADED, fault_after=3))
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="claude-test", messages=conversation(prompt),
                                                    stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "".join(DELTAS[:3])
    assert isinstance(info.value.body, dict) and "overloaded" in info.value.body["message"]
