"""The fake upstreams themselves, driven by plain aiohttp/httpx clients over loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.fakes import DEFAULT_DELTAS, HUGE_TEXT, FakeUpstream, Fault, Script


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def anth() -> Iterator[FakeUpstream]:
    with FakeUpstream(kind="anthropic") as fake:
        yield fake


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
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(500)], delay=0.01))
    async with session.post(up.url + "/chat/completions", json=chat(prompt)) as resp:
        seen = 0
        async for _, _data in sse(resp):
            seen += 1
            if seen == 4:  # role chunk + 3 deltas
                break
        assert up.records(prompt)[0].closed_at is None
        resp.close()  # drops the connection
        closed = time.monotonic()
    rec = await up.await_closed(prompt)
    assert rec.closed_by == "client" and rec.closed_at is not None
    assert 0 <= rec.closed_at - closed < 0.05
    assert 3 <= rec.deltas_sent < 500 and not rec.finished


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
