"""The fake upstreams themselves, driven over loopback by plain aiohttp/httpx clients and the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import aiohttp
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.fakes import (
    DEFAULT_DELTAS,
    HUGE_TEXT,
    FakeUpstream,
    Fault,
    Part,
    Reasoning,
    RedactedThinking,
    Script,
    Text,
    ToolCall,
    conversation,
)

HANG = 10.0  # seconds: only catches a hang


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def anth() -> Iterator[FakeUpstream]:
    with FakeUpstream(kind="anthropic") as fake:
        yield fake


@pytest.fixture
def sdk(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    """The official OpenAI SDK, pointed at the fake."""
    with openai.OpenAI(base_url=up.url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


def chat(prompt: str, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream, **extra}


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, bytes]]:
    """(event name, raw data bytes) per event."""
    name: str | None = None
    data: list[bytes] = []
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield name, b"\n".join(data)
            name, data = None, []
        elif line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data.append(line[6:])


async def openai_chunks(resp: aiohttp.ClientResponse) -> list[Any]:
    """Decoded data payloads; ``[DONE]`` stays the string "[DONE]"."""
    return [d.decode() if d == b"[DONE]" else json.loads(d) async for _, d in sse(resp)]


def text_of(chunks: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if isinstance(c, dict) and c["choices"])


async def test_streamed_script_text_role_chunk_and_framing(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["Hel", "lo", " wor\nld"]))
    async with session.post(up.url + "/chat/completions", json=chat(f"say {prompt} please")) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers["transfer-encoding"] == "chunked"
        chunks = await openai_chunks(resp)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["model"] == "m"
    assert text_of(chunks) == "Hello wor\nld"
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[-1] == "[DONE]"
    assert not any("usage" in c for c in chunks if isinstance(c, dict))  # not asked for
    rec = up.wait_request(prompt)
    assert rec.request_json == chat(f"say {prompt} please")
    assert rec.finished and rec.deltas_sent == 3 and rec.attempt == 1 and rec.status == 200
    assert rec.opened_at <= rec.request_at <= (rec.first_byte_at or 0)


async def test_usage_chunk_when_asked(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["a", "b"], role_chunk=False, prompt_tokens=11))
    body = chat(prompt, stream_options={"include_usage": True})
    async with session.post(up.url + "/chat/completions", json=body) as resp:
        chunks = await openai_chunks(resp)
    assert chunks[0]["choices"][0]["delta"] == {"content": "a"}  # no role chunk
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    assert all(c["usage"] is None for c in chunks[:-2])
    assert up.records(prompt)[0].request_json["stream_options"] == {"include_usage": True}


async def test_reset_after_two_deltas(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["one ", "two ", "three "], fault=Fault.RESET, fault_after=2))
    got: list[Any] = []
    with pytest.raises(aiohttp.ClientError):
        async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
            async for _, data in sse(resp):
                got.append(json.loads(data))
    assert text_of(got) == "one two "
    rec = await up.await_closed(prompt)
    assert rec.closed_at is not None and rec.closed_by == "server"
    assert rec.deltas_sent == 2 and not rec.finished


async def test_client_closing_mid_stream_is_recorded_at_once(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """The fake records a client's close when it happens, not when its script would have ended (30 s here); the
    bound only catches that, so a loaded machine keeps it. How soon a close reaches an upstream is a figure of the
    bench (``cancel``: the gateway's disconnect to the upstream's FIN), not a pass/fail bound here."""
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(3000)], delay=0.01))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        seen = 0
        async for _, _data in sse(resp):
            seen += 1
            if seen == 4:  # role chunk + 3 deltas
                break
        assert up.records(prompt)[0].closed_at is None
        resp.close()  # drops the connection
        closed = time.monotonic()
    rec = await up.await_closed(prompt, timeout=HANG)
    assert rec.closed_by == "client" and rec.closed_at is not None
    assert 0 <= rec.closed_at - closed < HANG
    assert 3 <= rec.deltas_sent < 3000 and not rec.finished


async def test_fail_attempts_then_the_script(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["ok"], fail_attempts=2, fail_status=429, headers={"Retry-After": "1"}))
    for _ in range(2):
        async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
            assert resp.status == 429 and resp.headers["retry-after"] == "1"
            err = (await resp.json())["error"]
            assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        assert resp.status == 200
        assert text_of(await openai_chunks(resp)) == "ok"
    assert [(r.attempt, r.status, r.finished) for r in up.records(prompt)] == [
        (1, 429, False), (2, 429, False), (3, 200, True)]
    assert up.wait_request(prompt, attempt=3).deltas_sent == 1


async def test_error_status_before_the_stream(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    body = {"error": {"message": "nope", "type": "x", "code": None}}
    prompt = up.script(Script(status=401, error_body=body))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        assert resp.status == 401 and resp.content_type == "application/json"
        assert await resp.json() == body
    prompt = up.script(Script(status=500))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"]["type"] == "server_error"


async def test_non_stream_answer_and_models(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["Hel", "lo"], finish_reason="length"))
    body = chat(prompt)
    del body["stream"]
    async with session.post(up.url + "/chat/completions", json=body) as resp:
        obj = await resp.json()
    assert obj["object"] == "chat.completion"
    assert obj["choices"][0]["message"]["content"] == "Hello"
    assert obj["choices"][0]["finish_reason"] == "length"
    assert obj["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    async with session.get(up.url + "/models") as resp:
        assert (await resp.json())["data"][0]["id"] == "fake-model"


async def test_unmatched_prompt_plays_the_default_script(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    async with session.post(up.url + "/chat/completions", json=chat("hello there")) as resp:
        assert text_of(await openai_chunks(resp)) == "".join(DEFAULT_DELTAS)
    assert any(r.prompt_key is None for r in up.records())


@pytest.mark.parametrize(
    ("fault", "bad_line"),
    [(Fault.MALFORMED_JSON, b"{not json"), (Fault.INVALID_UTF8, b"bad\xff\xfebytes")],
)
async def test_bad_data_line_then_the_rest(up: FakeUpstream, session: aiohttp.ClientSession, fault: Fault,
                                           bad_line: bytes) -> None:
    prompt = up.script(Script(deltas=["a", "b", "c"], fault=fault, fault_after=1))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        datas = [d async for _, d in sse(resp)]
    bad = [i for i, d in enumerate(datas) if bad_line in d]
    assert bad == [2]  # role chunk, "a", then the bad line
    assert datas[-1] == b"[DONE]"


async def test_no_done_and_double_done(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["x", "y"], fault=Fault.NO_DONE, fault_after=2))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        chunks = await openai_chunks(resp)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "[DONE]" not in chunks
    assert up.records(prompt)[0].finished
    prompt = up.script(Script(deltas=["x"], fault=Fault.DOUBLE_DONE))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        assert (await openai_chunks(resp))[-2:] == ["[DONE]", "[DONE]"]


async def test_early_eof_is_an_incomplete_body(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["a", "b", "c"], fault=Fault.EARLY_EOF, fault_after=1))
    got: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
            async for _, data in sse(resp):
                got.append(data)
    assert len(got) == 2  # the role chunk and "a"
    assert (await up.await_closed(prompt)).closed_by == "server"


async def test_stall_and_silence_hold_the_connection_until_the_client_leaves(
        up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    for fault in (Fault.STALL, Fault.HEADERS_THEN_SILENCE):
        prompt = up.script(Script(deltas=["a", "b"], fault=fault, fault_after=1))
        async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
            assert resp.status == 200
            if fault is Fault.STALL:
                first = [d async for _, d in _take(sse(resp), 2)]
                assert b'"content":"a"' in first[1]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(resp.content.readany(), 0.1)  # nothing more comes
            assert up.records(prompt)[0].closed_at is None
            resp.close()
        rec = await up.await_closed(prompt)
        assert rec.closed_by == "client" and rec.deltas_sent == (1 if fault is Fault.STALL else 0)


async def _take(it: AsyncIterator[tuple[str | None, bytes]], n: int) -> AsyncIterator[tuple[str | None, bytes]]:
    for _ in range(n):
        yield await anext(it)


async def test_huge_chunk(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(deltas=["a", "b"], fault=Fault.HUGE_CHUNK, fault_after=1))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        raw = await resp.read()  # a 1 MiB line is more than aiohttp's line reader takes
    chunks = [json.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    assert text_of(chunks) == "a" + HUGE_TEXT + "b"
    assert up.records(prompt)[0].deltas_sent == 3


def test_a_reader_that_stops_reading_holds_the_writer_back(up: FakeUpstream) -> None:
    """Flow control: the fake does not buffer the whole script when nobody reads."""
    prompt = up.script(Script(deltas=["x" * 2000] * 5000))
    body = json.dumps(chat(prompt)).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", up.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    rec = up.wait_request(prompt)
    # an observation window, not a synchronisation: the writer must come to rest well short of the end
    sent, deadline = -1, time.monotonic() + 3
    while rec.deltas_sent != sent and time.monotonic() < deadline:
        sent = rec.deltas_sent
        time.sleep(0.1)
    assert rec.deltas_sent < 5000 and not rec.finished and rec.closed_at is None
    sock.close()
    rec = up.wait_closed(prompt)
    assert rec.closed_by == "client" and not rec.finished


def test_keep_alive_and_open_connections_from_sync_code() -> None:
    with FakeUpstream() as up:
        keep_alive_on_one_connection(up)


def keep_alive_on_one_connection(up: FakeUpstream) -> None:
    before = up.open_connections()
    assert before == 0
    prompts = [up.script(Script(deltas=[str(i)])) for i in range(3)]
    with httpx.Client(base_url=up.url) as client:
        for i, prompt in enumerate(prompts):
            resp = client.post("/chat/completions", json=chat(prompt, stream=False))
            assert resp.json()["choices"][0]["message"]["content"] == str(i)
        assert up.open_connections() == before + 1
        assert len({up.records(p)[0].conn_id for p in prompts}) == 1  # one connection served all three
        assert up.records(prompts[0])[0].closed_at is None
    rec = up.wait_closed(prompts[0])
    assert rec.closed_by == "client"
    assert up.open_connections() == before


def test_wait_request_times_out(up: FakeUpstream) -> None:
    prompt = up.script(Script())
    with pytest.raises(TimeoutError, match=prompt):
        up.wait_request(prompt, timeout=0.01)


def test_ttft_and_delay_pace_the_deltas(up: FakeUpstream) -> None:
    prompt = up.script(Script(deltas=["a", "b"], ttft=0.1, delay=0.05))
    t0 = time.monotonic()
    with httpx.Client(base_url=up.url) as client, client.stream("POST", "/chat/completions", json=chat(prompt)) as resp:
        arrivals = [time.monotonic() for line in resp.iter_lines() if '"content":"' in line and '""' not in line]
    assert len(arrivals) == 2
    assert arrivals[0] - t0 >= 0.1 and arrivals[1] - t0 >= 0.15  # the fake cannot be early


async def test_anthropic_stream_format(anth: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = anth.script(Script(deltas=["Hel", "lo"], prompt_tokens=5, finish_reason="length"))
    body = {"model": "claude-x", "max_tokens": 64, "system": "be brief", "stream": True,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]}
    headers = {"x-api-key": "k-123", "anthropic-version": "2023-06-01"}
    async with session.post(anth.url + "/messages", json=body, headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        events = [(name, json.loads(data)) async for name, data in sse(resp)]
    names = [n for n, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 5
    assert events[0][1]["message"]["model"] == "claude-x"
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "Hello"
    assert events[6][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[6][1]["usage"] == {"output_tokens": 2}
    rec = anth.wait_request(prompt)
    assert rec.headers["x-api-key"] == "k-123" and rec.headers["anthropic-version"] == "2023-06-01"
    assert rec.request_json["system"] == "be brief" and rec.request_json["max_tokens"] == 64
    assert rec.path == "/v1/messages" and rec.finished


async def test_anthropic_errors_and_overload(anth: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = anth.script(Script(status=529))
    async with session.post(anth.url + "/messages", json=chat(prompt)) as resp:
        assert resp.status == 529
        assert await resp.json() == {"type": "error", "error": {"type": "overloaded_error",
                                                                "message": "fake upstream answered 529"}}
    prompt = anth.script(Script(deltas=["a", "b"], fault=Fault.ANTHROPIC_OVERLOADED, fault_after=1))
    async with session.post(anth.url + "/messages", json=chat(prompt)) as resp:
        events = [(name, json.loads(data)) async for name, data in sse(resp)]
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert [n for n, _ in events].count("content_block_delta") == 1
    prompt = anth.script(Script(deltas=["Hi"]))
    async with session.post(anth.url + "/messages", json=chat(prompt, stream=False)) as resp:
        msg = await resp.json()
    assert msg["type"] == "message" and msg["content"] == [{"type": "text", "text": "Hi"}]
    assert msg["stop_reason"] == "end_turn" and msg["usage"] == {"input_tokens": 7, "output_tokens": 1}


# -- every part of an answer: OpenAI dialect --------------------------------------------------------------------

WEATHER_PARTS: list[Part] = [
    Reasoning("Let me think"), Reasoning(" more"), Text("Hi "),
    ToolCall(id="call_1", name="get_weather", args=['{"city": "Pa', 'ris"}']),
    ToolCall(id="call_2", name="get_time", args=["{}"]),
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
             "type": "object", "properties": {"city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]


def deltas_of(chunks: list[Any]) -> list[dict[str, Any]]:
    """The choice deltas of the chunks that have a choice, in order."""
    return [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c["choices"]]


async def test_openai_reasoning_text_and_parallel_tool_calls_as_real_servers_stream_them(
        up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(parts=WEATHER_PARTS))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        chunks = await openai_chunks(resp)
    assert deltas_of(chunks) == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Let me think"}, {"reasoning_content": " more"},
        {"content": "Hi "},
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                         "function": {"name": "get_time", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"  # the default when there are tool calls
    assert chunks[-1] == "[DONE]"
    assert len({c["id"] for c in chunks[:-1]}) == 1
    rec = up.wait_request(prompt)
    assert rec.deltas_sent == 8 and rec.finished  # 2 reasoning + 1 text + (start + 2 pieces) + (start + 1 piece)


def test_openai_sdk_assembles_the_exact_tool_calls_and_reasoning(up: FakeUpstream, sdk: openai.OpenAI) -> None:
    prompt = up.script(Script(parts=WEATHER_PARTS))
    messages: Any = [{"role": "user", "content": prompt}]
    with sdk.chat.completions.stream(model="m", messages=messages, tools=cast(Any, TOOLS)) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert kinds.count("tool_calls.function.arguments.done") == 2
    whole = sdk.chat.completions.create(model="m", messages=messages, tools=cast(Any, TOOLS))  # not streamed
    for completion in (final, whole):
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Hi "
        assert [(c.id, c.type, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []
                if isinstance(c, ChatCompletionMessageFunctionToolCall)] == [
            ("call_1", "function", "get_weather", '{"city": "Paris"}'), ("call_2", "function", "get_time", "{}")]
        assert (choice.message.model_extra or {})["reasoning_content"] == "Let me think more"


async def test_openai_answer_that_opens_with_a_tool_call(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """OpenAI sends no role-only chunk then: the role rides on the first tool-call chunk, content null."""
    prompt = up.script(Script(parts=[ToolCall("get_time", "{}", id="call_9")]))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        chunks = await openai_chunks(resp)
    assert deltas_of(chunks)[0] == {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        {"index": 0, "id": "call_9", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}
    assert deltas_of(chunks)[1:] == [{"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, {}]
    prompt = up.script(Script(parts=[ToolCall("get_time", "{}")]))  # a fresh call_... id
    body = chat(prompt, stream=False)
    async with session.post(up.url + "/chat/completions", json=body) as resp:
        message = (await resp.json())["choices"][0]["message"]
    assert message["content"] is None and "reasoning_content" not in message
    assert message["tool_calls"][0]["id"].startswith("call_") and message["tool_calls"][0]["function"] == {
        "name": "get_time", "arguments": "{}"}


def tool_fragments(chunks: list[Any]) -> list[dict[str, Any]]:
    return [f for d in deltas_of(chunks) for f in d.get("tool_calls", [])]


async def test_openai_tool_index_quirks(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    """Ollama puts every parallel call at index 0 (only the id differs); some servers send no index at all."""
    parts: list[Part] = [ToolCall("a", ["{", "}"], id="call_a"), ToolCall("b", "{}", id="call_b")]
    seen = {}
    quirks = {"ollama_index_reuse": Script(parts=parts, ollama_index_reuse=True),
              "omit_tool_index": Script(parts=parts, omit_tool_index=True)}
    for quirk, script in quirks.items():
        async with session.post(up.url + "/chat/completions", json=chat(up.script(script))) as resp:
            seen[quirk] = tool_fragments(await openai_chunks(resp))
    assert [(f["index"], f.get("id")) for f in seen["ollama_index_reuse"]] == [
        (0, "call_a"), (0, None), (0, None), (0, "call_b"), (0, None)]
    assert [f.get("id") for f in seen["omit_tool_index"]] == ["call_a", None, None, "call_b", None]
    assert not any("index" in f for f in seen["omit_tool_index"])


async def test_openai_finish_chunk_twice_like_openrouter(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(parts=[ToolCall("a", "{}")], repeat_finish=True, prompt_tokens=3))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        chunks = await openai_chunks(resp)
    finishes = [c for c in chunks if isinstance(c, dict) and c["choices"] and c["choices"][0]["finish_reason"]]
    assert [(c["choices"][0]["finish_reason"], c["choices"][0]["delta"]) for c in finishes] == [
        ("tool_calls", {}), ("tool_calls", {})]
    assert "usage" not in finishes[0]
    assert finishes[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert chunks[-3:-1] == finishes and chunks[-1] == "[DONE]"


@pytest.mark.parametrize(("field", "expected"), [
    ("reasoning", {"reasoning": "hmm"}),
    ("reasoning_details", {"reasoning_details": [
        {"type": "reasoning.text", "text": "hmm", "format": "unknown", "index": 0}]}),
    (("reasoning", "reasoning_details"), {"reasoning": "hmm", "reasoning_details": [
        {"type": "reasoning.text", "text": "hmm", "format": "unknown", "index": 0}]}),
])
async def test_openai_reasoning_field_names(up: FakeUpstream, session: aiohttp.ClientSession, field: Any,
                                            expected: dict[str, Any]) -> None:
    prompt = up.script(Script(parts=[Reasoning("hmm"), Text("ok")], reasoning_field=field))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        assert deltas_of(await openai_chunks(resp))[1:3] == [expected, {"content": "ok"}]
    async with session.post(up.url + "/chat/completions", json=chat(prompt, stream=False)) as resp:
        message = (await resp.json())["choices"][0]["message"]
    assert {k: message[k] for k in expected} == expected and message["content"] == "ok"


async def test_a_fault_counts_every_event_even_inside_a_tool_call(up: FakeUpstream,
                                                                  session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(parts=WEATHER_PARTS, fault=Fault.RESET, fault_after=5))
    got: list[Any] = []
    with pytest.raises(aiohttp.ClientError):
        async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
            async for _, data in sse(resp):
                got.append(json.loads(data))
    assert [f["function"]["arguments"] for f in tool_fragments(got)] == ["", '{"city": "Pa']  # cut mid-arguments
    assert (await up.await_closed(prompt)).deltas_sent == 5


# -- request checks and conversations ---------------------------------------------------------------------------

CALLED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}


@pytest.mark.parametrize(("tail", "message", "param"), [
    ([CALLED, {"role": "tool", "content": "21 C"}],
     "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
     "messages.[2].tool_call_id"),
    ([CALLED, {"role": "tool", "tool_call_id": "call_7", "content": "21 C"}],
     "Invalid parameter: 'tool_call_id' of 'call_7' not found in 'tool_calls' of previous message.",
     "messages.[2].tool_call_id"),
    ([{"role": "tool", "tool_call_id": "call_1", "content": "21 C"}],
     "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
     "messages.[1].role"),
    ([CALLED, {"role": "user", "content": "and?"}],
     "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
     "The following tool_call_ids did not have response messages: call_1", "messages.[1].role"),
])
def test_require_tool_call_ids_answers_400_like_openai(up: FakeUpstream, sdk: openai.OpenAI,
                                                       tail: list[dict[str, Any]], message: str, param: str) -> None:
    prompt = up.script(Script(deltas=["fine"], require_tool_call_ids=True))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="m", messages=cast(Any, [{"role": "user", "content": prompt}, *tail]))
    assert caught.value.body == {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    assert up.wait_request(prompt).status == 400
    ok = [{"role": "user", "content": prompt}, CALLED, {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}]
    assert sdk.chat.completions.create(model="m", messages=cast(Any, ok)).choices[0].message.content == "fine"


def test_an_agent_loop_with_turns(up: FakeUpstream, sdk: openai.OpenAI) -> None:
    """turns[i] answers a conversation that already holds i assistant messages."""
    prompt = up.script(Script(require_tool_call_ids=True, turns=[
        Script(parts=[ToolCall("get_weather", ['{"city": ', '"Paris"}'])]),
        Script(deltas=["It is 21 C ", "in Paris."]),
    ]))
    messages: list[Any] = [{"role": "user", "content": f"Weather in Paris? {prompt}"}]
    for _ in range(5):
        with sdk.chat.completions.stream(model="m", messages=messages, tools=cast(Any, TOOLS)) as stream:
            message = stream.get_final_completion().choices[0].message
        messages.append(message.model_dump(exclude_none=True, exclude={"parsed"}))
        if not message.tool_calls:
            break
        messages += [{"role": "tool", "tool_call_id": c.id, "content": "21 C"} for c in message.tool_calls]
    assert message.content == "It is 21 C in Paris."
    first, second = up.records(prompt)
    assert (first.turn, second.turn, second.attempt) == (0, 1, 2)
    call_id = messages[1]["tool_calls"][0]["id"]
    assert second.tool_results() == [(call_id, "21 C")]
    assert second.messages()[1]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                 "arguments": '{"city": "Paris"}'}
    assert [t["function"]["name"] for t in second.tools()] == ["get_weather", "get_time"]


async def test_fail_attempts_count_per_turn(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = up.script(Script(turns=[Script(deltas=["first"]), Script(deltas=["second"], fail_attempts=1)]))
    history = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "first"},
               {"role": "user", "content": "more"}]  # the key is found in an earlier user message
    statuses = []
    for messages in ([history[0]], history, history):
        async with session.post(up.url + "/chat/completions", json={"messages": messages}) as resp:
            statuses.append((resp.status, (await resp.json())["choices"][0]["message"]["content"]
                             if resp.status == 200 else None))
    assert statuses == [(200, "first"), (503, None), (200, "second")]
    assert [(r.attempt, r.turn) for r in up.records(prompt)] == [(1, 0), (2, 1), (3, 1)]


async def test_validate_and_request_inspection(up: FakeUpstream, session: aiohttp.ClientSession) -> None:
    def no_images(body: dict[str, Any]) -> str | None:
        return "this model does not take images" if conversation.images(body) else None

    prompt = up.script(Script(deltas=["ok"], validate=no_images))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    body = chat("x", stream=False)
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": prompt}, image]}]
    async with session.post(up.url + "/chat/completions", json=body) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == {"message": "this model does not take images",
                                                "type": "invalid_request_error", "param": None, "code": None}
    assert up.records(prompt)[0].images() == [image]
    async with session.post(up.url + "/chat/completions", json=chat(prompt, stream=False)) as resp:
        assert resp.status == 200


async def test_pings_while_the_model_thinks(up: FakeUpstream, anth: FakeUpstream,
                                            session: aiohttp.ClientSession) -> None:
    """pings_every: keep-alives (Anthropic `ping` events, OpenAI-compatible SSE comments) during the pauses."""
    prompt = anth.script(Script(parts=[Reasoning("a"), Reasoning("b")], ttft=0.5, delay=0.25, pings_every=0.1))
    async with session.post(anth.url + "/messages", json=chat(prompt)) as resp:
        names = [name async for name, _ in sse(resp)]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    first = names.index("content_block_delta")
    # at least one keep-alive in each pause longer than pings_every, and never more than the pause holds
    assert set(names[3:first]) == {"ping"} and 1 <= first - 3 <= 5  # ~4 in the 0.5 s before the first delta
    assert names[first + 1] == "ping" and names.count("ping") <= 1 + 5 + 3
    prompt = up.script(Script(deltas=["a"], ttft=0.35, pings_every=0.1))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        raw = await resp.read()
    assert 1 <= raw.count(b": OPENROUTER PROCESSING\n\n") <= 4
    assert text_of([json.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]) == "a"


# -- every part of an answer: Anthropic dialect -----------------------------------------------------------------

_BLOCK_KEYS = {"text": {"type", "text"}, "thinking": {"type", "thinking", "signature"},
               "redacted_thinking": {"type", "data"}, "tool_use": {"type", "id", "name", "input"}}
_DELTAS = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"},
           "tool_use": {"input_json_delta"}, "redacted_thinking": set()}


def assemble(events: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The message an Anthropic stream builds, checking every frame against the shapes of the spec on the way:
    blocks start, take deltas of their own kind and stop one after another at indices 0, 1, ...; a thinking
    block starts empty and gets exactly one signature_delta, right before its stop; a tool_use block starts
    with ``input: {}`` and its input is the join of its partial_json pieces. A stream cut short (an error
    event) leaves the message as far as it got."""
    message: dict[str, Any] = {}
    blocks: list[dict[str, Any]] = []
    open_: int | None = None
    signed = False
    for name, data in events:
        assert name == data["type"]
        if name == "message_start":
            assert not message and data["message"]["content"] == [] and data["message"]["stop_reason"] is None
            message = data["message"]
        elif name == "content_block_start":
            block = data["content_block"]
            assert open_ is None and data["index"] == len(blocks) and set(block) == _BLOCK_KEYS[block["type"]]
            assert block.get("text", "") == block.get("thinking", "") == block.get("signature", "") == ""
            assert block.get("input", {}) == {} and block.get("id", "toolu_").startswith("toolu_")
            blocks.append({**block, "partial_json": ""})
            open_, signed = data["index"], False
        elif name == "content_block_delta":
            assert open_ is not None and data["index"] == open_ and not signed
            block, delta = blocks[open_], data["delta"]
            assert delta["type"] in _DELTAS[block["type"]] and len(delta) == 2
            field = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature",
                     "input_json_delta": "partial_json"}[delta["type"]]
            block[field] += delta[field]
            signed = delta["type"] == "signature_delta"
        elif name == "content_block_stop":
            assert data == {"type": "content_block_stop", "index": open_} and open_ is not None
            block = blocks[open_]
            assert signed == (block["type"] == "thinking")
            if block["type"] == "tool_use":
                block["input"] = json.loads(block["partial_json"] or "{}")
            open_ = None
        elif name == "message_delta":
            assert open_ is None and set(data["delta"]) == {"stop_reason", "stop_sequence"}
            message.update(data["delta"], usage={**message["usage"], **data["usage"]})
        else:
            assert (name, data) in [("ping", {"type": "ping"}), ("message_stop", {"type": "message_stop"}),
                                    ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "Overloaded"}})]
    for block in blocks:
        del block["partial_json"]
    return {**message, "content": blocks}


async def anthropic_events(anth: FakeUpstream, session: aiohttp.ClientSession,
                           body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    async with session.post(anth.url + "/messages", json={"max_tokens": 64, **body, "stream": True}) as resp:
        assert resp.status == 200
        return [(name, json.loads(data)) async for name, data in sse(resp)]


ANTHROPIC_PARTS: list[Part] = [
    Reasoning("Let me think"), Reasoning(" more", signature="sig-abc"), RedactedThinking("opaque-1"),
    Text("Hi "), Text("there."),
    ToolCall(id="toolu_01A", name="get_weather", args=["", '{"city": "Pa', 'ris"}']),
    ToolCall(id="toolu_01B", name="get_time"),  # no argument at all: no input_json_delta
    ToolCall(id="toolu_01C", name="get_date", args=[""]),  # no argument, one empty input_json_delta
    Reasoning("", signature="sig-omitted"),  # display "omitted": a signature, no thinking_delta
]
ANTHROPIC_CONTENT = [
    {"type": "thinking", "thinking": "Let me think more", "signature": "sig-abc"},
    {"type": "redacted_thinking", "data": "opaque-1"},
    {"type": "text", "text": "Hi there."},
    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
    {"type": "tool_use", "id": "toolu_01C", "name": "get_date", "input": {}},
    {"type": "thinking", "thinking": "", "signature": "sig-omitted"},
]


async def test_anthropic_blocks_for_thinking_text_and_tools(anth: FakeUpstream,
                                                            session: aiohttp.ClientSession) -> None:
    prompt = anth.script(Script(parts=ANTHROPIC_PARTS, prompt_tokens=9))
    events = await anthropic_events(anth, session, chat(prompt))
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]  # the first block opens before the ping
    assert names[-2:] == ["message_delta", "message_stop"]
    message = assemble(events)
    assert message["content"] == ANTHROPIC_CONTENT
    assert message["stop_reason"] == "tool_use" and message["usage"] == {"input_tokens": 9, "output_tokens": 13}
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert deltas.count("input_json_delta") == 4 and deltas.count("thinking_delta") == 2
    async with session.post(anth.url + "/messages", json=chat(prompt, stream=False)) as resp:
        whole = await resp.json()
    assert whole["content"] == ANTHROPIC_CONTENT and whole["stop_reason"] == "tool_use"
    assert {"sig-abc", "opaque-1", "sig-omitted"} <= anth.issued_signatures()


async def test_anthropic_answer_opening_with_a_tool_call(anth: FakeUpstream, session: aiohttp.ClientSession) -> None:
    prompt = anth.script(Script(parts=[ToolCall("get_time", "{}")]))
    events = await anthropic_events(anth, session, chat(prompt))
    assert [n for n, _ in events][:3] == ["message_start", "ping", "content_block_start"]
    [block] = assemble(events)["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_01") and block["input"] == {}


@pytest.mark.parametrize("fault_after", range(9))
async def test_anthropic_overloaded_after_any_number_of_events(anth: FakeUpstream, session: aiohttp.ClientSession,
                                                               fault_after: int) -> None:
    """Events: 2 thinking deltas, the redacted block, a text delta, a tool start and 3 argument pieces."""
    parts = [*ANTHROPIC_PARTS[:4], ANTHROPIC_PARTS[5]]
    prompt = anth.script(Script(parts=parts, fault=Fault.ANTHROPIC_OVERLOADED, fault_after=fault_after))
    events = await anthropic_events(anth, session, chat(prompt))
    assert events[-1][0] == "error" and "message_stop" not in [n for n, _ in events]
    content = assemble(events)["content"]  # well-formed as far as it got
    rec = anth.records(prompt)[0]  # the body ended cleanly: the connection stays open for the next request
    assert rec.deltas_sent == min(fault_after, 8) and not rec.finished
    if fault_after == 2:  # mid-thinking: the block is still open, its signature not sent yet
        assert content == [{"type": "thinking", "thinking": "Let me think more", "signature": ""}]
    if fault_after == 6:  # mid-tool-call
        assert content[-1] == {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}


async def test_anthropic_require_signatures_answers_400_like_the_api(anth: FakeUpstream,
                                                                     session: aiohttp.ClientSession) -> None:
    """An assistant turn with tool_use must come back with its thinking blocks exactly as the fake sent them."""
    prompt = anth.script(Script(require_signatures=True, turns=[
        Script(parts=[Reasoning("Need "), Reasoning("the weather."), RedactedThinking(),
                      ToolCall("get_weather", '{"city": "Paris"}')]),
        Script(deltas=["21 C in Paris."]),
    ]))
    question = {"role": "user", "content": [{"type": "text", "text": f"Weather? {prompt}"}]}
    content = assemble(await anthropic_events(anth, session, {"messages": [question]}))["content"]
    thinking, redacted, tool_use = content
    assert thinking["signature"] in anth.issued_signatures() and redacted["data"] in anth.issued_signatures()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    result: dict[str, Any] = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
                                           "content": [{"type": "text", "text": "21 C"}, image]}]}

    async def answer(*assistant: dict[str, Any]) -> tuple[int, Any]:
        turn = {"role": "assistant", "content": list(assistant)}
        body = {"model": "c", "max_tokens": 64, "messages": [question, turn, result]}
        async with session.post(anth.url + "/messages", json=body) as resp:
            return resp.status, await resp.json()

    def refused(message: str) -> tuple[int, Any]:
        return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}

    status, whole = await answer(thinking, redacted, tool_use)
    assert status == 200 and whole["content"] == [{"type": "text", "text": "21 C in Paris."}]
    rec = anth.records(prompt)[-1]
    assert rec.turn == 1 and rec.tool_results() == [(tool_use["id"], result["content"][0]["content"])]
    assert rec.images() == [image]
    assert await answer(tool_use) == refused(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When "
        "`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
        "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
        "previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
        "https://docs.claude.com/en/docs/build-with-claude/extended-thinking")
    assert await answer({**thinking, "signature": "forged"}, redacted, tool_use) == refused(
        "messages.1.content.0: Invalid `signature` in `thinking` block")
    assert await answer({**thinking, "thinking": "Need the time."}, redacted, tool_use) == refused(
        "messages.1.content.0: `thinking` or `redacted_thinking` blocks in the latest assistant message cannot be "
        "modified. These blocks must remain as they were in the original response.")
    assert await answer(thinking, {**redacted, "data": "forged"}, tool_use) == refused(
        "messages.1.content.1: Invalid `data` in `redacted_thinking` block")
    assert [r.status for r in anth.records(prompt)] == [200, 200, 400, 400, 400, 400]
