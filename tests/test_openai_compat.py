"""The OpenAI-compatible API with the official ``openai`` SDK (sync and async) as the client, end to end:
the SDK → a real ``ssegate serve`` → the fake OpenAI upstream, all over loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess

DELTAS = ["Hel", "lo", ",", " wor", "ld", " — ünïcode ✓", "\n", "data: not an event\n\n", "!"]
TEXT = "".join(DELTAS)


def user(prompt: str) -> list[openai.types.chat.ChatCompletionMessageParam]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say it. {prompt}"}]


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=15) as c:
        yield c


@pytest.fixture
async def aclient(gateway: GatewayProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=15) as c:
        yield c


# --- streamed and non-streamed text --------------------------------------------------------------------
def test_sync_stream_text_equals_upstream(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, delay=0.002))
    with client.chat.completions.create(model="fake-model", messages=user(prompt), stream=True) as stream:
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"fake-model"}
    assert [r.request_json["messages"] for r in upstream.records(prompt)] == [user(prompt)]


async def test_async_stream_text_equals_upstream(aclient: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS))
    stream = await aclient.chat.completions.create(model="fake-model", messages=user(prompt), stream=True)
    async with stream:
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sync_non_streamed_text_and_usage(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, prompt_tokens=11))
    done = client.chat.completions.create(model="fake-model", messages=user(prompt), max_tokens=50, temperature=0.2,
                                          stop=["\x00"])
    assert done.object == "chat.completion"
    assert done.choices[0].message.content == TEXT
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        11, len(DELTAS), 11 + len(DELTAS))
    sent = upstream.records(prompt)[0].request_json
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (50, 0.2, ["\x00"])


async def test_async_non_streamed_text(aclient: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS))
    done = await aclient.chat.completions.create(model="fake-model", messages=user(prompt),
                                                 max_completion_tokens=20)
    assert done.choices[0].message.content == TEXT
    sent = upstream.records(prompt)[0].request_json
    assert sent["max_completion_tokens"] == 20 and "max_tokens" not in sent  # as the client named it


def test_include_usage_yields_a_usage_chunk(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, prompt_tokens=13))
    with client.chat.completions.create(model="fake-model", messages=user(prompt), stream=True,
                                        stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        13, len(DELTAS), 13 + len(DELTAS))
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_include_usage(aclient: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS))
    stream = await aclient.chat.completions.create(model="fake-model", messages=user(prompt), stream=True,
                                                   stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(DELTAS)


def test_stream_ends_with_done_sentinel(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """The raw wire: OpenAI chunks only (no ids, no ssegate events), ending with ``data: [DONE]``."""
    prompt = upstream.script(Script(deltas=["a", "b"]))
    body = {"model": "fake-model", "messages": user(prompt), "stream": True, "n": 1, "top_p": 0.5,
            "seed": 3, "user": "someone", "logit_bias": {}}
    resp = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=15)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.text.endswith("data: [DONE]\n\n")
    assert "id:" not in resp.text and "event:" not in resp.text


# --- errors --------------------------------------------------------------------------------------------
def test_precommit_upstream_500_raises_status_error(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(status=500))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="fake-model", messages=user(prompt), stream=True)
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "upstream_error"
    assert info.value.body["type"] == "api_error"


async def test_async_precommit_upstream_500_raises_status_error(aclient: openai.AsyncOpenAI,
                                                               upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(status=500))
    with pytest.raises(openai.InternalServerError) as info:
        await aclient.chat.completions.create(model="fake-model", messages=user(prompt), stream=True)
    assert info.value.status_code == 502
    prompt = upstream.script(Script(status=500))
    with pytest.raises(openai.InternalServerError):
        await aclient.chat.completions.create(model="fake-model", messages=user(prompt))


def test_midstream_reset_raises_api_error(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, fault=Fault.RESET, fault_after=3))
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        with client.chat.completions.create(model="fake-model", messages=user(prompt), stream=True) as stream:
            for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
    assert not isinstance(info.value, openai.APIStatusError)  # a 200 stream that failed, not a refused request
    assert "".join(got) == "".join(DELTAS[:3])
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "upstream_error"
    assert len(upstream.records(prompt)) == 1  # text went out: never retried


async def test_async_midstream_reset_raises_api_error(aclient: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, fault=Fault.RESET, fault_after=2))
    got: list[str] = []
    stream = await aclient.chat.completions.create(model="fake-model", messages=user(prompt), stream=True)
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "".join(DELTAS[:2])


def test_n_other_than_one_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-model", messages=user("x"), n=2)
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict) and "n=1" in info.value.body["message"]


@pytest.mark.parametrize(("fields", "named"), [({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"),
                                               ({"logprobs": True, "top_logprobs": 5}, "logprobs")])
@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_are_a_400_naming_the_field_on_the_openai_endpoint(client: openai.OpenAI, upstream: FakeUpstream,
                                                                     fields: dict[str, Any], named: str,
                                                                     stream: bool) -> None:
    """ssegate does not relay log probabilities, so asking for them is refused before anything reaches the upstream
    (never a 200 without them)."""
    prompt = upstream.script(Script(deltas=["never"]))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-model", messages=user(prompt), stream=stream,  # type: ignore
                                       **fields)
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"].startswith(f"{named}: ") and info.value.body["code"] == "invalid_request"
    assert upstream.records(prompt) == []


@pytest.mark.parametrize("options", [{"include_usage": True, "continuous_usage_stats": True}, {"x": 1}])
def test_a_stream_option_ssegate_does_not_take_is_a_400_naming_it(client: openai.OpenAI, upstream: FakeUpstream,
                                                                   options: dict[str, Any]) -> None:
    """Regression: any key of ``stream_options`` was accepted, and none but ``include_usage`` did anything (the
    stream is ssegate's own, not the upstream's). Now the key is named in a 400 before anything reaches the
    upstream."""
    prompt = upstream.script(Script(deltas=["never"]))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-model", messages=user(prompt), stream=True,
                                       stream_options=options)  # type: ignore[arg-type]
    assert info.value.status_code == 400 and isinstance(info.value.body, dict)
    named = next(k for k in options if k != "include_usage")
    assert info.value.body["message"].startswith(f"stream_options.{named}: not supported")
    assert upstream.records(prompt) == []


@pytest.mark.parametrize("obfuscation", [False, True])
def test_include_obfuscation_is_taken_and_no_chunk_carries_padding(client: openai.OpenAI, upstream: FakeUpstream,
                                                                   obfuscation: bool) -> None:
    """The upstream pads its chunks (OpenAI's default); ssegate writes its own, which carry no padding."""
    prompt = upstream.script(Script(deltas=DELTAS[:2], obfuscation=True))
    chunks = list(client.chat.completions.create(
        model="fake-model", messages=user(prompt), stream=True,
        stream_options={"include_usage": True, "include_obfuscation": obfuscation}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(DELTAS[:2])
    assert chunks[-1].usage is not None
    assert not any((c.model_extra or {}).get("obfuscation") for c in chunks)


@pytest.mark.parametrize(("fields", "named"), [({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"),
                                               ({"n": 2}, "n")])
def test_logprobs_are_a_400_naming_the_field_on_the_native_stream(gateway: GatewayProcess, upstream: FakeUpstream,
                                                                   fields: dict[str, Any], named: str) -> None:
    """The native endpoint gives the same 400 with the reason, not the 422 of an unknown field."""
    prompt = upstream.script(Script(deltas=["never"]))
    resp = httpx.post(gateway.url + "/v1/chat/stream", timeout=15,
                      json={"messages": [{"role": "user", "content": prompt}], **fields})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["message"].startswith(f"{named}: ") and err["code"] == "invalid_request" and err["retryable"] is False
    assert upstream.records(prompt) == []


TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(("path", "fields", "message"), [
    ("/v1/chat/stream", {"response_format": {"type": "json_schema"}},
     "response_format: type 'json_schema' needs a 'json_schema' object"),
    ("/v1/chat/completions", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     "tool_choice names the function 'other', which is not in tools"),
    ("/v1/chat/stream", {"tool_choice": "required"}, "tool_choice is set, but tools is empty"),
    ("/v1/chat/completions", {"resume_grace_s": 5}, "resume_grace_s: OpenAI clients do not resume streams"),
])
def test_contradictory_fields_are_a_400_that_says_why(gateway: GatewayProcess, upstream: FakeUpstream, path: str,
                                                      fields: dict[str, Any], message: str) -> None:
    """What the body models cannot say (``starts.chat_request``'s checks) is refused on both endpoints before
    anything reaches the upstream, with the reason."""
    prompt = upstream.script(Script(deltas=["never"]))
    body = {"messages": [{"role": "user", "content": prompt}], **fields}
    resp = httpx.post(gateway.url + path, timeout=15, json=body)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["message"].startswith(message), err
    assert upstream.records(prompt) == []


def test_logprobs_false_is_the_default_and_accepted(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["fine"]))
    for path in ("/v1/chat/stream", "/v1/chat/completions"):
        resp = httpx.post(gateway.url + path, timeout=15,
                          json={"messages": [{"role": "user", "content": prompt}], "logprobs": False, "n": 1})
        assert resp.status_code == 200, resp.text
    assert [r.status for r in upstream.records(prompt)] == [200, 200]


def test_bad_request_uses_openai_error_shape(gateway: GatewayProcess) -> None:
    resp = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "fake-model", "messages": []}, timeout=15)
    assert resp.status_code in (400, 422)
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"} and err["type"] == "invalid_request_error"


# --- closing the stream cancels the upstream -----------------------------------------------------------
def test_stream_close_closes_upstream(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["tok "] * 500, delay=0.01))
    stream = client.chat.completions.create(model="fake-model", messages=user(prompt), stream=True)
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices[0].delta.content)
        if seen == 3:
            break
    closed = time.monotonic()
    stream.close()
    rec = upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None
    assert rec.closed_at - closed < 1.0, f"upstream closed {rec.closed_at - closed:.3f}s after the client"
    assert not rec.finished and rec.deltas_sent < 500


async def test_async_stream_close_closes_upstream(aclient: openai.AsyncOpenAI,
                                                             upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["tok "] * 500, delay=0.01))
    stream = await aclient.chat.completions.create(model="fake-model", messages=user(prompt), stream=True)
    seen = 0
    async for chunk in stream:
        seen += bool(chunk.choices[0].delta.content)
        if seen == 3:
            break
    closed = time.monotonic()
    await stream.close()
    rec = await upstream.await_closed(prompt, timeout=5)
    assert rec.closed_at is not None
    assert rec.closed_at - closed < 1.0, f"upstream closed {rec.closed_at - closed:.3f}s after the client"
    assert not rec.finished


def test_non_streamed_client_gone_cancels_upstream(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """``stream: false``: a client that gives up waiting also stops the generation."""
    prompt = upstream.script(Script(deltas=["tok "] * 500, delay=0.01))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=0.3) as c:
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="fake-model", messages=user(prompt))
    gave_up = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - gave_up < 0.5
    assert not rec.finished


# --- models --------------------------------------------------------------------------------------------
def test_models_lists_the_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert client.models.retrieve("fake-model").id == "fake-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


async def test_async_models(aclient: openai.AsyncOpenAI) -> None:
    page = await aclient.models.list()
    assert [m.id for m in page.data] == ["fake-model"]


@pytest.mark.parametrize(("status", "exc"), [(400, openai.BadRequestError), (401, openai.InternalServerError)])
def test_regression_the_sdk_resends_deterministic_failures(gateway: GatewayProcess, upstream: FakeUpstream,
                                                           status: int, exc: type[Exception]) -> None:
    """The OpenAI SDK retries 5xx answers twice by default; an upstream 401 (a wrong key: 502 here) or 400 reached
    the upstream three times. ``x-should-retry: false`` on non-retryable errors stops that."""
    prompt = upstream.script(Script(status=status))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=2) as sdk, pytest.raises(exc) as info:
        sdk.chat.completions.create(model="fake-model", messages=user(prompt))
    assert info.value.response.headers["x-should-retry"] == "false"  # type: ignore[attr-defined]
    assert len(upstream.records(prompt)) == 1
