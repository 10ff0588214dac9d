"""The AI SDK stream (``POST /api/chat``) under the fault matrix's upstream faults and a client's disconnect, and
across replicas in Redis mode: it ends with the protocol's ``error`` chunk, the upstream is closed when the
client leaves, and a chat resumes and cancels on any replica."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import redis

from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, sse_events
from tests.support.invariants import Invariants
from tests.support.rawclient import RawStream, raw_request
from tests.support.redis import RedisServer

SETTINGS: dict[str, Any] = {
    "provider": "openai", "model": "fake-model", "commit_timeout_s": 0.5, "first_token_timeout_s": 1.5,
    "idle_timeout_s": 1.0, "send_timeout_s": 1.0, "heartbeat_s": 0.5, "retry_backoff_s": 0.02, "log_ttl_s": 30,
}
ABCDE = ["a", "b", "c", "d", "e"]
CLOSE_BOUND_S = 0.5
"""A hang-catching bound on "the upstream is closed at once" (see tests/test_faults.py)."""
UP = "Upstream faults"
CL = "Client faults"


def matrix(group: str, scenario: str, expected: str) -> pytest.MarkDecorator:
    return pytest.mark.fault_matrix(group=group, scenario=scenario, expected=expected)


def chat_body(prompt: str, chat_id: str | None = None, **fields: Any) -> bytes:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": prompt}]}
    return orjson.dumps({"id": chat_id or uuid.uuid4().hex, "messages": [message], "trigger": "submit-message",
                         **fields})


def chunks(resp: httpx.Response) -> Iterator[Any]:
    for event in sse_events(resp.iter_text()):
        yield event.data if event.data == "[DONE]" else event.json()


def text_of(chunk_list: list[Any]) -> str:
    return "".join(c["delta"] for c in chunk_list if isinstance(c, dict) and c["type"] == "text-delta")


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    with GatewayProcess({**SETTINGS, "upstream_url": up.url}) as g:
        yield g


@pytest.fixture(scope="module")
def inv(gw: GatewayProcess, up: FakeUpstream) -> Iterator[Invariants]:
    for _ in range(3):
        httpx.post(gw.url + "/api/chat", content=chat_body(up.script(Script(deltas=ABCDE))),
                   headers={"content-type": "application/json"}, timeout=30)
    invariants = Invariants(gw, up)
    invariants.rebase()
    yield invariants
    invariants.close()


@pytest.mark.parametrize(("script", "code"), [
    pytest.param(Script(deltas=ABCDE, delay=0.01, fault=Fault.RESET, fault_after=3), "upstream_error",
                 marks=matrix(UP, "AI SDK stream (`/api/chat`): TCP reset after 3 tokens",
                              "the 3 tokens in a text block, then an `error` chunk `upstream_error: ...`, "
                              "`[DONE]`"), id="reset"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.STALL, fault_after=3), "upstream_timeout",
                 marks=matrix(UP, "AI SDK stream (`/api/chat`): stall after 3 tokens",
                              "after IDLE_TIMEOUT_S an `error` chunk `upstream_timeout: ...`, `[DONE]`; the "
                              "upstream is closed"), id="stall"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.MALFORMED_JSON, fault_after=3), "upstream_error",
                 marks=matrix(UP, "AI SDK stream (`/api/chat`): malformed JSON after 3 tokens",
                              "the 3 tokens, then an `error` chunk `upstream_error: ...`, `[DONE]`"), id="malformed"),
    pytest.param(Script(deltas=ABCDE, delay=0.01, fault=Fault.EARLY_EOF, fault_after=3), "upstream_error",
                 marks=matrix(UP, "AI SDK stream (`/api/chat`): early EOF after 3 tokens",
                              "the 3 tokens, then an `error` chunk `upstream_error: ...`, `[DONE]`"), id="early-eof"),
])
def test_an_upstream_fault_mid_answer_ends_with_the_error_chunk(gw: GatewayProcess, up: FakeUpstream,
                                                                inv: Invariants, script: Script, code: str) -> None:
    prompt = up.script(script)
    with httpx.stream("POST", gw.url + "/api/chat", content=chat_body(prompt),
                      headers={"content-type": "application/json"}, timeout=30) as resp:
        assert resp.status_code == 200
        got = list(chunks(resp))
    kinds = [c if isinstance(c, str) else c["type"] for c in got]
    assert kinds[:3] == ["start", "start-step", "text-start"]
    assert text_of(got) == "abc"
    assert kinds[-2:] == ["error", "[DONE]"] and kinds.count("error") == 1 and "finish" not in kinds
    assert got[-2]["errorText"].startswith(f"{code}: ")
    assert len(up.records(prompt)) == 1  # never retried once text went out
    inv.check()


@matrix(UP, "AI SDK stream (`/api/chat`): TCP reset before the first token",
        "retried, then HTTP 502 with the text `upstream_error: ...` (what the SDK's error state shows)")
def test_an_upstream_reset_before_the_first_token_is_a_plain_text_502(gw: GatewayProcess, up: FakeUpstream,
                                                                      inv: Invariants) -> None:
    prompt = up.script(Script(deltas=ABCDE, fault=Fault.RESET, fault_after=0))
    resp = httpx.post(gw.url + "/api/chat", content=chat_body(prompt), headers={"content-type": "application/json"},
                      timeout=30)
    assert resp.status_code == 502
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert resp.text.startswith("upstream_error: ")
    assert len(up.records(prompt)) == 3
    inv.check()


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@matrix(CL, "AI SDK stream (`/api/chat`): hang up mid-answer (no resume grace: `stop()` or a closed tab)",
        "the generation is cancelled and its upstream request closed at once")
def test_a_disconnect_mid_answer_closes_the_upstream(gw: GatewayProcess, up: FakeUpstream, inv: Invariants,
                                                     rst: bool) -> None:
    before = inv.snapshot().ended_by_cause
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(1000)], delay=0.01))
    c = RawStream(gw.port)
    c.send(raw_request("POST", "/api/chat", chat_body(prompt)))
    assert c.read_head() == 200
    assert c.read_until(b'"delta":"t3 "')
    c.close(rst=rst)
    hung_up = time.monotonic()
    rec = up.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - hung_up < CLOSE_BOUND_S
    assert not rec.finished and rec.deltas_sent < 1000
    snap = inv.check()
    assert snap.ended_by_cause.get("cancelled:disconnect", 0) - before.get("cancelled:disconnect", 0) == 1


# --- Redis mode: the chat's stream is found on every replica ---------------------------------------------------
@pytest.fixture(scope="module")
def pair(up: FakeUpstream) -> Iterator[tuple[GatewayProcess, GatewayProcess, RedisServer]]:
    with RedisServer() as server:
        settings = {**SETTINGS, "idle_timeout_s": 5.0, "redis_url": server.url, "redis_lease_s": 1.0,
                    "upstream_url": up.url}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            yield a, b, server


def test_a_chat_resumes_on_another_replica_from_its_start(pair: tuple[GatewayProcess, GatewayProcess, RedisServer],
                                                          up: FakeUpstream) -> None:
    a, b, server = pair
    deltas = [f"w{i} " for i in range(60)]
    prompt = up.script(Script(deltas=deltas, delay=0.03))
    chat_id = "chat-" + uuid.uuid4().hex
    with httpx.stream("POST", a.url + "/api/chat", content=chat_body(prompt, chat_id, resume_grace_s=10),
                      headers={"content-type": "application/json"}, timeout=30) as first:
        reading = chunks(first)
        head = [next(reading) for _ in range(5)]  # then the tab reloads, and the balancer picks the other replica
    with httpx.stream("GET", f"{b.url}/api/chat/{chat_id}/stream", timeout=30) as again:
        assert again.status_code == 200 and again.headers["x-vercel-ai-ui-message-stream"] == "v1"
        whole = list(chunks(again))
    assert whole[:5] == head
    assert text_of(whole) == "".join(deltas) and whole[-2:] == [{"type": "finish"}, "[DONE]"]
    for replica in (a, b):
        assert httpx.get(f"{replica.url}/api/chat/{chat_id}/stream").status_code == 204
    keys = redis.Redis.from_url(server.url).keys("ssegate:chat:*")
    assert any(k.decode().endswith(":" + chat_id) for k in keys)
    assert all(redis.Redis.from_url(server.url).pttl(k) > 0 for k in keys)


def test_a_chat_cancels_on_another_replica(pair: tuple[GatewayProcess, GatewayProcess, RedisServer],
                                           up: FakeUpstream) -> None:
    a, b, _ = pair
    prompt = up.script(Script(deltas=[f"c{i} " for i in range(500)], delay=0.02))
    chat_id = "chat-" + uuid.uuid4().hex
    with httpx.stream("POST", a.url + "/api/chat", content=chat_body(prompt, chat_id, resume_grace_s=10),
                      headers={"content-type": "application/json"}, timeout=30) as resp:
        reading = chunks(resp)
        got = [next(reading) for _ in range(4)]
        cancel = httpx.post(f"{b.url}/api/chat/{chat_id}/cancel", timeout=10)
        assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling"
        got += list(reading)
    assert [c if isinstance(c, str) else c["type"] for c in got][-3:] == ["finish-step", "abort", "[DONE]"]
    rec = up.wait_closed(prompt, timeout=5)
    assert not rec.finished


def test_a_chat_resumes_on_another_replica_at_once(pair: tuple[GatewayProcess, GatewayProcess, RedisServer],
                                                   up: FakeUpstream) -> None:
    """The tab reloads a millisecond after its answer started, before A's writer has put the stream in Redis
    (every 20 ms while a reader may wait, ``cluster/redis_log.py``): B waits for it and resumes the answer from
    its start, instead of answering 204 (nothing running) for a running answer."""
    a, b, _ = pair
    json_body = {"content-type": "application/json"}

    def whole(url: str) -> tuple[int, list[Any]]:
        with httpx.stream("GET", url, timeout=30) as resp:
            return resp.status_code, list(chunks(resp)) if resp.status_code == 200 else []

    # a chat of A followed on B keeps A's writer at its 20 ms pace: each chat below starts inside that wait
    bg_id = "chat-" + uuid.uuid4().hex
    bg_deltas = [f"b{i} " for i in range(300)]
    bg_prompt = up.script(Script(deltas=bg_deltas, delay=0.01))
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=30) as ca, httpx.Client(timeout=30) as cb:
        with ca.stream("POST", a.url + "/api/chat", content=chat_body(bg_prompt, bg_id, resume_grace_s=10),
                       headers=json_body) as first:
            next(chunks(first))
        background = pool.submit(whole, f"{b.url}/api/chat/{bg_id}/stream")
        for i in range(8):
            chat_id = "chat-" + uuid.uuid4().hex
            prompt = up.script(Script(deltas=[f"x{i} ", "y", "z"], delay=0.05))
            with ca.stream("POST", a.url + "/api/chat", content=chat_body(prompt, chat_id, resume_grace_s=10),
                           headers=json_body) as resp:
                next(chunks(resp))  # the answer started: the tab reloads, the balancer picks B
                with cb.stream("GET", f"{b.url}/api/chat/{chat_id}/stream") as again:
                    assert again.status_code == 200, f"chat {i}: {again.status_code}"
                    resumed = list(chunks(again))
            assert text_of(resumed) == f"x{i} yz" and resumed[-2:] == [{"type": "finish"}, "[DONE]"]
        assert not background.done(), "the background chat ended before the checks: they may have missed the wait"
        status, rest = background.result()
    assert status == 200 and text_of(rest) == "".join(bg_deltas)
