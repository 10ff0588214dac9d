"""The streaming response at the ASGI level, with hand-written ``receive``/``send`` (no sockets)."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any

import pytest

from ssegate.core.entries import DONE
from ssegate.core.request import ChatRequest
from ssegate.gateway import Gateway
from ssegate.http.encoders import NativeEncoder
from ssegate.settings import Settings
from ssegate.sse import SSEDecoder


def make_gateway(**kw: Any) -> Gateway:
    return Gateway(Settings(demo_ttft_s=0, demo_tokens_per_s=1000, commit_timeout_s=0.2, demo_scripts=True, **kw))


def scripted(**spec: Any) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": "/script " + json.dumps(spec)}], "m")


SCOPE = {"type": "http", "method": "GET", "path": "/chat", "headers": []}


async def test_disconnect_mid_stream_cancels_the_generation_at_once() -> None:
    gw = make_gateway()
    gen = gw.start_generation(scripted(deltas=["a", "b"], stall=True), "anonymous")
    disconnect = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if b'"delta":"b"' in message.get("body", b""):
            disconnect.set()

    resp = gw.follow(gen, NativeEncoder(gen.stream_id))
    await asyncio.wait_for(resp(dict(SCOPE), receive, send), 5)
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(asyncio.shield(gen.task), 1.0)  # the script would stall forever: only the cancel ends it
    assert asyncio.get_running_loop().time() - t0 < 1.0
    kind, payload = gen.log.kinds[-1], gen.log.payloads[-1]
    assert kind == DONE and payload["finish_reason"] == "cancelled"
    assert payload["usage"]["completion_tokens"] == 2 and payload["usage"]["estimated"] is True
    await gw.stop()


async def test_disconnect_before_the_first_token_cancels_the_generation() -> None:
    gw = make_gateway()
    gen = gw.start_generation(scripted(deltas=["never"], ttft=60), "anonymous")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing may be sent to a client that left before the commit")

    await asyncio.wait_for(gw.follow(gen, NativeEncoder(gen.stream_id))(dict(SCOPE), receive, send), 1)
    await asyncio.wait_for(asyncio.shield(gen.task), 1.0)
    assert gen.log.finished and gen.outputs == 0
    await gw.stop()


async def test_client_that_stops_reading_is_dropped_after_send_timeout() -> None:
    gw = make_gateway(send_timeout_s=0.3, heartbeat_s=0.1)
    gen = gw.start_generation(scripted(deltas=["x"] * 1000, delay=0.001), "anonymous")
    never = asyncio.Event()
    sends = 0

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal sends
        sends += 1
        if sends >= 3:  # the client's window is full: this send never completes
            await never.wait()

    t0 = asyncio.get_running_loop().time()
    task = asyncio.create_task(gw.follow(gen, NativeEncoder(gen.stream_id))(dict(SCOPE), receive, send))
    await asyncio.wait_for(asyncio.shield(gen.task), 5)
    elapsed = asyncio.get_running_loop().time() - t0
    assert 0.3 <= elapsed < 2.0
    assert gen.log.payloads[-1]["finish_reason"] == "cancelled"
    assert gen.outputs < 1000
    task.cancel()
    await gw.stop()


async def test_backlog_is_coalesced_into_one_write() -> None:
    """A client that fell behind gets everything pending in one body message, in order."""
    gw = make_gateway()
    gen = gw.start_generation(scripted(deltas=[str(i) for i in range(200)]), "anonymous")
    await gen.task  # the whole answer is in the log before the client reads
    bodies: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    await asyncio.wait_for(gw.follow(gen, NativeEncoder(gen.stream_id))(dict(SCOPE), receive, send), 5)
    assert len([b for b in bodies if b]) == 1
    events = list(SSEDecoder().feed(b"".join(bodies).decode()))
    assert "".join(e.json()["delta"] for e in events[1:-1]) == "".join(str(i) for i in range(200))
    await gw.stop()


async def test_a_library_reader_slower_than_the_logs_bound_gets_a_typed_error() -> None:
    """``Gateway.complete`` reads its parts from the stream's log: a reader that lets more parts pile up than the
    log keeps (``log_max_events``) gets ``NotFound`` naming why, not an answer with parts missing. (A script plays
    its ten deltas and its end without a pause: they are all appended before the reader's first look.)"""
    import ssegate

    gw = make_gateway(log_max_events=5)
    got: list[Any] = []
    try:
        with pytest.raises(ssegate.NotFound, match="outgrew the event log"):
            async with aclosing(gw.complete([{"role": "user", "content": "/script " + json.dumps(
                    {"deltas": list("abcdefghij")})}])) as parts:
                async for part in parts:
                    got.append(part)
        assert got == []
    finally:
        await gw.stop()
