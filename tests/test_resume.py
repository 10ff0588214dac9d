"""Resume, cancel and detach grace (CONTRACT §5, issue 4), in memory mode and in Redis mode.

Every test that takes ``replicas`` runs twice: ``memory`` (one gateway, the in-process event log) and ``redis``
(two ``ssegate serve`` processes sharing a real redis-server; a stream started on A is resumed on B, and the
random test hops between them). Streams come from the embedded demo model's ``/script``, or from the fake
OpenAI-compatible upstream where the test needs to see the upstream connection close.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Script
from tests.support.gateway import GatewayProcess, chat_body, sse_events
from tests.support.redis import RedisServer
from tests.support.resume import assert_whole, auth, read, resume, script, start

COMMON: dict[str, Any] = {
    **FAST,
    "commit_timeout_s": 1.0,
    "first_token_timeout_s": 5.0,
    "idle_timeout_s": 5.0,
    "send_timeout_s": 2.0,
    "heartbeat_s": 1.0,
    "api_keys": "k1,k2",
    "token_secret": "one-secret-for-every-replica-0123456789",  # owners are key fingerprints under it
    "detach_grace_s": 10.0,  # generous: a slow CI runner must not turn a resume into a cancelled stream
    "log_ttl_s": 60.0,
    "redis_lease_s": 1.0,
}
SHORT_TTL_S = 1.5
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
    """(A, B): where streams start and where they are resumed (the same gateway in memory mode)."""
    if request.param == "memory":
        gw: GatewayProcess = request.getfixturevalue("memory_gw")
        return gw, gw
    pair: Pair = request.getfixturevalue("redis_pair")
    return pair


def words(n: int, tag: str = "w") -> list[str]:
    return [f"{tag}{i} " for i in range(n)]


@pytest.mark.parametrize("style", ["header", "after", "chat"])
def test_resume_after_a_disconnect_gives_the_whole_answer(replicas: Pair, style: str) -> None:
    a, b = replicas
    deltas = words(40)
    resp, head = start(a.url, script(deltas, delay=0.005), n=5)
    assert resp.status_code == 200 and len(head) == 5
    resp, rest = resume(b.url, head[-1].id or "", style=style)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert_whole(head + rest, deltas)


def test_many_random_disconnects_and_resumes_keep_every_stream_whole(replicas: Pair) -> None:
    """A seeded random walk: read a few events, drop the connection, resume (any style, any replica), repeat."""
    rng = random.Random(20240604)
    for stream in range(3):
        deltas = words(rng.randint(30, 90), f"s{stream}.")
        first = rng.choice(replicas)
        resp, events = start(first.url, script(deltas, delay=rng.choice([0.0, 0.002, 0.01])), n=rng.randint(1, 6))
        assert resp.status_code == 200
        cycles = 0
        while events[-1].event not in ("done", "error"):
            cycles += 1
            assert cycles < 500, "the stream never ended"
            gw = rng.choice(replicas)
            resp, more = resume(gw.url, events[-1].id or "", style=rng.choice(["header", "after", "chat"]),
                                n=rng.randint(1, 8))
            assert resp.status_code == 200, resp.text
            assert more, "a resume of an unfinished stream must send something"
            events += more
        assert cycles >= 3
        assert_whole(events, deltas)
        resp, _ = resume(rng.choice(replicas).url, events[-1].id or "", style=rng.choice(["header", "chat"]))
        assert resp.status_code == 204


@pytest.mark.parametrize("style", ["header", "after", "chat"])
def test_resume_once_the_terminal_event_was_delivered_is_204(replicas: Pair, style: str) -> None:
    a, b = replicas
    resp, events = start(a.url, script(["one", "two"]))
    assert_whole(events, ["one", "two"])
    resp, more = resume(b.url, events[-1].id or "", style=style)
    assert resp.status_code == 204 and not more
    # one event short of the end: just the terminal event
    resp, more = resume(b.url, events[-2].id or "", style=style)
    assert resp.status_code == 200
    assert [e.id for e in more] == [events[-1].id] and more[0].event == "done"


def test_a_resume_or_cancel_elsewhere_at_once_finds_the_stream_as_far_as_the_client_has_it(replicas: Pair) -> None:
    """Another replica learns of a stream when the generating one's writer puts it in Redis (every 20 ms while a
    reader may wait, ``cluster/redis_log.py``). A client that resumes there at once, already holding events Redis
    does not have yet (even the stream's start), gets the stream as it is, not 404 for a stream that exists, nor a
    live stream that ends with the terminal event it already has: the replica waits for Redis to catch up. So does
    a cancel sent there."""
    a, b = replicas
    # a stream of A followed on B keeps A's writer flushing every 20 ms: each stream below lands inside that wait
    deltas = words(300, "bg")
    _, head = start(a.url, script(deltas, delay=0.01), n=2)
    body = chat_body(script(["one", "two"]))
    # kept-alive clients: a resume leaves within a millisecond or two of the end (a new client takes ~10 ms)
    with ThreadPoolExecutor(1) as pool, httpx.Client(headers=auth(), timeout=15) as ca, \
            httpx.Client(headers=auth(), timeout=15) as cb:
        background = pool.submit(resume, b.url, head[-1].id or "", style="after")
        for i in range(16):
            with ca.stream("POST", a.url + "/v1/chat/stream", content=body,
                           headers={"content-type": "application/json"}) as resp:
                events = list(sse_events(resp.iter_text()))
            assert_whole(events, ["one", "two"])
            sid, _, last = (events[-1].id or "").rpartition(":")
            after = last if i % 2 else "1"  # everything (204), or all but the start (the rest, once)
            resp = cb.get(f"{b.url}/v1/streams/{sid}", params={"after": after})
            got = [(e.id, e.event) for e in sse_events(iter([resp.text]))]
            want = [(e.id, e.event) for e in events[int(after):]]
            assert (resp.status_code, got) == (204 if i % 2 else 200, want), resp.text
        for _ in range(4):  # and a cancel there, as soon as the client knows the stream's id
            with ca.stream("POST", a.url + "/v1/chat/stream", content=chat_body(script(["a", "b"], stall=True)),
                           headers={"content-type": "application/json"}) as resp:
                it = sse_events(resp.iter_text())
                events = [next(it)]
                cancel = cb.post(f"{b.url}/v1/streams/{events[0].json()['stream_id']}/cancel")
                assert cancel.status_code == 202, cancel.text
                events += list(it)
            assert_whole(events, ["a", "b"], finish_reason="cancelled")
        assert not background.done(), "the background stream ended before the checks: they may have missed the wait"
        _, rest = background.result()
    assert_whole(head + rest, deltas)


def test_resume_replays_from_the_start_with_after_zero(replicas: Pair) -> None:
    a, b = replicas
    resp, events = start(a.url, script(["x", "y", "z"]))
    sid = events[0].json()["stream_id"]
    resp, again = read("GET", f"{b.url}/v1/streams/{sid}", params={"after": 0})
    assert resp.status_code == 200
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in events]


def test_unknown_stream_is_404_and_a_malformed_last_event_id_is_400(replicas: Pair) -> None:
    _, b = replicas
    unknown = "A" * 22
    for style in ("header", "after", "chat"):
        resp, _ = resume(b.url, f"{unknown}:3", style=style)
        assert resp.status_code == 404, style
        assert resp.json()["error"]["code"] == "not_found"
    resp = httpx.post(f"{b.url}/v1/streams/{unknown}/cancel", headers=auth(), timeout=5)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = httpx.get(f"{b.url}/chat", params={"q": "x"}, headers={**auth(), "Last-Event-ID": "garbage"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request"


def test_resume_past_the_end_of_a_finished_stream_is_404(replicas: Pair) -> None:
    a, b = replicas
    _, events = start(a.url, script(["x"]))
    sid = events[0].json()["stream_id"]
    resp, _ = read("GET", f"{b.url}/v1/streams/{sid}", params={"after": len(events) + 5})
    assert resp.status_code == 404


def test_only_the_key_that_started_a_stream_may_resume_or_cancel_it(replicas: Pair) -> None:
    a, b = replicas
    resp, events = start(a.url, script(words(60), delay=0.005), n=3)
    sid = events[0].json()["stream_id"]
    for gw in {a.url, b.url}:
        resp, _ = resume(gw, events[-1].id or "", key="k2")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
        resp2 = httpx.post(f"{gw}/v1/streams/{sid}/cancel", headers=auth("k2"), timeout=5)
        assert resp2.status_code == 404
        resp, _ = resume(gw, events[-1].id or "", key="nope")
        assert resp.status_code == 401
    # the owner still can: the stream was neither cancelled nor disturbed
    resp, rest = resume(b.url, events[-1].id or "")
    assert_whole(events + rest, words(60))


@pytest.fixture(scope="module")
def short_ttl_pair() -> Iterator[Pair]:
    with RedisServer() as redis:
        settings = {**COMMON, "redis_url": redis.url, "log_ttl_s": SHORT_TTL_S}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            yield a, b


@pytest.mark.parametrize("mode", ["memory", "redis"])
def test_a_finished_stream_expires_after_the_log_ttl(short_ttl_pair: Pair, mode: str) -> None:
    """A answers a resume of its own stream from its in-process log (memory mode's code); B reads Redis."""
    a, b = short_ttl_pair
    reader = a if mode == "memory" else b
    _, events = start(a.url, script(["bye"]))
    ended = time.monotonic()
    assert resume(reader.url, events[-2].id or "")[0].status_code == 200
    deadline = ended + SHORT_TTL_S + 10
    while True:  # polling for a clock-driven expiry; the upper bound only catches "never expires"
        status = resume(reader.url, events[-1].id or "")[0].status_code
        if status == 404:
            break
        assert status == 204 and time.monotonic() < deadline, "the stream never expired"
        time.sleep(0.05)
    assert time.monotonic() - ended >= SHORT_TTL_S - 0.2


def test_cancel_ends_the_stream_with_done_cancelled_and_the_usage_so_far(replicas: Pair) -> None:
    a, b = replicas
    with httpx.stream("POST", a.url + "/v1/chat/stream", headers=auth(), timeout=15,
                      content=_body(script(["a", "b", "c"], stall=True))) as resp:
        events: list[ServerSentEvent] = []
        it = _events(resp)
        while len(events) < 4:
            events.append(next(it))
        sid = events[0].json()["stream_id"]
        cancel = httpx.post(f"{b.url}/v1/streams/{sid}/cancel", headers=auth(), timeout=5)
        assert cancel.status_code == 202
        assert cancel.json() == {"stream_id": sid, "status": "cancelling"}
        events += list(it)
    assert_whole(events, ["a", "b", "c"], finish_reason="cancelled")
    usage = events[-1].json()["usage"]
    assert usage["completion_tokens"] == 3 and usage["estimated"] is True and usage["prompt_tokens"] > 0
    # cancelling again (or a finished stream) is harmless
    assert httpx.post(f"{b.url}/v1/streams/{sid}/cancel", headers=auth(), timeout=5).status_code == 202


def test_resume_in_the_middle_of_a_tool_calls_arguments(replicas: Pair) -> None:
    """Every part is kept in the log (memory and Redis): a resume inside a tool call's argument pieces gives the
    remaining pieces, and the events before and after the drop reassemble the calls byte for byte."""
    a, b = replicas
    pieces = ['{"ci', 'ty": "Pa', 'ris", "un', 'it": "cel', 'sius"}']
    parts: list[Any] = [{"reasoning": "I need "}, {"reasoning": "the weather."},
                        {"tool_call": {"id": "call_a", "name": "get_weather"}}, *({"arguments": p} for p in pieces),
                        {"tool_call": {"id": "call_b", "name": "get_time"}}, {"arguments": "{}"}]
    resp, head = start(a.url, "/script " + json.dumps({"parts": parts, "delay": 0.05,
                                                       "finish_reason": "tool_calls"}), n=6)
    assert resp.status_code == 200
    assert [e.event for e in head][3:] == ["tool_call", "tool_call_delta", "tool_call_delta"]
    _, rest = resume(b.url, head[-1].id or "")
    events = head + rest
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    assert [e.event for e in events] == ["start", "reasoning", "reasoning", "tool_call", *["tool_call_delta"] * 5,
                                         "tool_call", "tool_call_delta", "done"]
    joined = "".join(e.json()["arguments"] for e in events if e.event == "tool_call_delta" and e.json()["index"] == 0)
    assert joined == "".join(pieces)
    done = events[-1].json()
    assert done["finish_reason"] == "tool_calls"
    assert [c["function"]["arguments"] for c in done["tool_calls"]] == ["".join(pieces), "{}"]
    assert [c["id"] for c in done["tool_calls"]] == ["call_a", "call_b"]


# --- against a real upstream: the upstream connection itself ---------------------------------------------
@pytest.fixture(scope="module")
def relay_gw(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    settings = {**COMMON, "provider": "openai", "upstream_url": upstream.url, "model": "m", "detach_grace_s": 1.0}
    with GatewayProcess(settings) as gw:
        yield gw


def test_cancel_closes_the_upstream(relay_gw: GatewayProcess, upstream: FakeUpstream) -> None:
    """The client is still attached, so nothing but the cancel can close the upstream before its 10 s answer ends
    (bench/ measures how soon it does: well under 50 ms on a quiet machine)."""
    prompt = upstream.script(Script(deltas=words(500), delay=0.02))
    with httpx.stream("POST", relay_gw.url + "/v1/chat/stream", headers=auth(), timeout=15,
                      content=_body(prompt)) as resp:
        it = _events(resp)
        events = [next(it) for _ in range(4)]
        sid = events[0].json()["stream_id"]
        with httpx.Client(headers=auth(), timeout=5) as client:  # built beforehand: measure the gateway only
            sent_at = time.monotonic()
            assert client.post(f"{relay_gw.url}/v1/streams/{sid}/cancel").status_code == 202
        rec = upstream.wait_closed(prompt, timeout=5)
        events += list(it)
    assert rec.closed_at is not None and rec.closed_at - sent_at < 2.0, f"{rec.closed_at - sent_at:.3f}s"
    assert not rec.finished
    done = events[-1].json()
    assert events[-1].event == "done" and done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] == len(events) - 2


def test_reconnecting_inside_the_detach_grace_continues_the_same_generation(
    relay_gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    deltas = words(40)
    prompt = upstream.script(Script(deltas=deltas, delay=0.02))
    _, head = start(relay_gw.url, prompt, n=4)
    _, rest = resume(relay_gw.url, head[-1].id or "")
    assert_whole(head + rest, deltas)
    assert len(upstream.records(prompt)) == 1  # one upstream request, played to its end (the whole text)


def test_after_the_detach_grace_the_upstream_is_closed(relay_gw: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=words(500), delay=0.02))
    _, head = start(relay_gw.url, prompt, n=4)
    left_at = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=10)
    assert rec.closed_at is not None and not rec.finished
    waited = rec.closed_at - left_at
    assert 1.0 - 0.05 <= waited < 1.0 + 1.0, f"closed {waited:.3f}s after the client left (grace 1.0s)"
    _, rest = resume(relay_gw.url, head[-1].id or "")
    events = head + rest
    assert events[-1].event == "done" and events[-1].json()["finish_reason"] == "cancelled"
    assert [e.id for e in events] == [f"{events[0].json()['stream_id']}:{i + 1}" for i in range(len(events))]


# --- the resume grace a request asks for (CONTRACT §5) ------------------------------------------------------
@pytest.fixture(scope="module")
def no_grace_gw(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """The server default (no grace: a drop cancels), with a low cap on what a request may ask for."""
    settings = {**COMMON, "provider": "openai", "upstream_url": upstream.url, "model": "m", "detach_grace_s": 0,
                "resume_grace_max_s": 1.0}
    with GatewayProcess(settings) as gw:
        yield gw


def test_a_request_without_a_grace_is_cancelled_when_its_client_drops(
    no_grace_gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    prompt = upstream.script(Script(deltas=words(500), delay=0.02))
    start(no_grace_gw.url, prompt, n=3)
    left_at = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=10)
    assert rec.closed_at is not None and not rec.finished
    assert rec.closed_at - left_at < 0.5, f"closed {rec.closed_at - left_at:.3f}s after the client left"


def test_a_requested_grace_keeps_the_generation_for_a_resume(no_grace_gw: GatewayProcess,
                                                             upstream: FakeUpstream) -> None:
    deltas = words(40)
    prompt = upstream.script(Script(deltas=deltas, delay=0.02))
    _, head = start(no_grace_gw.url, prompt, n=4, resume_grace_s=1.0)
    _, rest = resume(no_grace_gw.url, head[-1].id or "")
    assert_whole(head + rest, deltas)
    assert len(upstream.records(prompt)) == 1


def test_a_requested_grace_is_capped_by_resume_grace_max(no_grace_gw: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=words(2000), delay=0.02))
    start(no_grace_gw.url, prompt, n=3, resume_grace_s=30)  # the cap is 1 s
    left_at = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=10)
    assert rec.closed_at is not None and not rec.finished
    waited = rec.closed_at - left_at
    assert 1.0 - 0.05 <= waited < 1.0 + 2.0, f"closed {waited:.3f}s after the client left (cap 1.0s)"


def test_a_grace_asked_on_get_chat_overrides_the_servers(memory_gw: GatewayProcess) -> None:
    """``?grace=0`` on ``GET /chat`` against a server whose DETACH_GRACE_S is 10 s: the drop cancels at once."""
    deltas = words(400)
    resp, head = read("GET", memory_gw.url + "/chat", n=3, params={"q": script(deltas, delay=0.01), "grace": 0})
    assert resp.status_code == 200
    time.sleep(0.5)  # far longer than a cancel takes, far shorter than the server's own grace
    _, rest = resume(memory_gw.url, head[-1].id or "")
    events = head + rest
    assert events[-1].event == "done" and events[-1].json()["finish_reason"] == "cancelled"
    assert len(events) < 100


def _body(prompt: str) -> bytes:
    return chat_body(prompt)


def _events(resp: httpx.Response) -> Iterator[ServerSentEvent]:
    assert resp.status_code == 200, resp.read()
    return sse_events(resp.iter_text())
