"""The fault matrix (issue 8): every upstream fault and every client-side fault, end to end, each followed by the
invariants checked against the running gateway (``tests/support/invariants.py``). The rows of
``docs/reliability.md`` come from the ``fault_matrix`` marks here (``tests/support/matrix.py``)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import psutil
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import HUGE_TEXT, FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, chat_body, free_port, post_events, text_of
from tests.support.invariants import Invariants, stream_violations
from tests.support.rawclient import RawStream, raw_request

# Short timeouts, so that every failure path ends within a couple of seconds.
SETTINGS: dict[str, Any] = {
    **FAST, "provider": "openai", "model": "fake-model", "commit_timeout_s": 0.5, "first_token_timeout_s": 1.5,
    "idle_timeout_s": 1.0, "send_timeout_s": 1.0, "heartbeat_s": 0.5, "retry_backoff_s": 0.02, "log_ttl_s": 30,
}
ABCDE = ["a", "b", "c", "d", "e"]
CLOSE_BOUND_S = 0.5
"""A hang-catching bound on "the upstream is closed at once" (CONTRACT §5's 50 ms is measured in test_relay and
bench/, not here: these tests run beside others on a loaded machine)."""


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
    """The invariants of the module's gateway, baselined after a warm-up (imports, pools, first streams)."""
    for _ in range(5):
        stream(gw, up.script(Script(deltas=ABCDE)))
    invariants = Invariants(gw, up)
    invariants.rebase()
    yield invariants
    invariants.close()


def stream(gw: GatewayProcess, prompt: str, path: str = "/v1/chat/stream", **extra: Any
           ) -> tuple[httpx.Response, list[ServerSentEvent]]:
    """POST a prompt, read the whole answer (events when 200, the JSON error otherwise)."""
    return post_events(gw.url, prompt, path=path, **extra)


def matrix(group: str, scenario: str, expected: str) -> pytest.MarkDecorator:
    return pytest.mark.fault_matrix(group=group, scenario=scenario, expected=expected)


# --- upstream faults ---------------------------------------------------------------------------------------------

UP = "Upstream faults"


def before_token(status: int, code: str, retryable: bool) -> Callable[[httpx.Response, list[ServerSentEvent]], None]:
    def check(resp: httpx.Response, events: list[ServerSentEvent]) -> None:
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"] == "application/json"
        err = resp.json()["error"]
        assert (err["code"], err["retryable"]) == (code, retryable)

    return check


def after_tokens(text: str, code: str) -> Callable[[httpx.Response, list[ServerSentEvent]], None]:
    def check(resp: httpx.Response, events: list[ServerSentEvent]) -> None:
        assert resp.status_code == 200
        assert not stream_violations(events), stream_violations(events)
        assert text_of(events) == text
        assert events[-1].event == "error", events[-1]
        err = events[-1].json()["error"]
        assert err["code"] == code and err["retryable"] is True

    return check


def done(text: str) -> Callable[[httpx.Response, list[ServerSentEvent]], None]:
    def check(resp: httpx.Response, events: list[ServerSentEvent]) -> None:
        assert resp.status_code == 200
        assert not stream_violations(events), stream_violations(events)
        assert text_of(events) == text
        assert events[-1].event == "done" and events[-1].json()["finish_reason"] == "stop"

    return check


UPSTREAM_FAULTS = [
    pytest.param(Script(status=400), before_token(400, "invalid_request", False), 1,
                 marks=matrix(UP, "400 before the first token (the request's fault)",
                              "HTTP 400 `invalid_request`, `x-should-retry: false`, no retry"), id="status-400"),
    pytest.param(Script(status=401), before_token(502, "upstream_error", False), 1,
                 marks=matrix(UP, "401 (bad upstream key) before the first token",
                              "HTTP 502 `upstream_error`, not retryable, no retry"), id="status-401"),
    pytest.param(Script(status=429, headers={"Retry-After": "3"}), before_token(429, "rate_limited", True), 1,
                 marks=matrix(UP, "429 with Retry-After before the first token",
                              "HTTP 429 `rate_limited` with the upstream's Retry-After (a retry would not fit "
                              "before the commit deadline)"), id="status-429"),
    pytest.param(Script(status=500), before_token(502, "upstream_error", True), 3,
                 marks=matrix(UP, "500 before the first token",
                              "retried (3 attempts), then HTTP 502 `upstream_error`, retryable"), id="status-500"),
    pytest.param(Script(status=503), before_token(502, "upstream_error", True), 3,
                 marks=matrix(UP, "503 before the first token",
                              "retried (3 attempts), then HTTP 502 `upstream_error`, retryable"), id="status-503"),
    pytest.param(Script(fail_attempts=2, fail_status=503, deltas=ABCDE), done("abcde"), 3,
                 marks=matrix(UP, "503 twice, then a good answer", "retried; the client sees one clean stream"),
                 id="503-then-ok"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.RESET, fault_after=0), before_token(502, "upstream_error", True), 3,
                 marks=matrix(UP, "TCP reset before the first token", "retried, then HTTP 502 `upstream_error`"),
                 id="reset-before-token"),
    pytest.param(Script(deltas=ABCDE, delay=0.01, fault=Fault.RESET, fault_after=3),
                 after_tokens("abc", "upstream_error"), 1, marks=matrix(UP, "TCP reset after 3 tokens",
                                 "the 3 tokens, then one `error` event `upstream_error` (never retried once text "
                                 "went out)"), id="reset-mid-stream"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.STALL, fault_after=3), after_tokens("abc", "upstream_timeout"), 1,
                 marks=matrix(UP, "stall after 3 tokens (connection open, silent)",
                              "after IDLE_TIMEOUT_S: one `error` event `upstream_timeout`; the upstream is closed"),
                 id="stall-mid-stream"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.STALL, fault_after=0), after_tokens("", "upstream_timeout"), 1,
                 marks=matrix(UP, "stall after the role chunk, before any text",
                              "committed at COMMIT_TIMEOUT_S (`start`, heartbeats), then `error` `upstream_timeout` "
                              "at FIRST_TOKEN_TIMEOUT_S"), id="stall-after-role-chunk"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.HEADERS_THEN_SILENCE), after_tokens("", "upstream_timeout"), 1,
                 marks=matrix(UP, "200 headers, then silence",
                              "committed at COMMIT_TIMEOUT_S, then `error` `upstream_timeout` at "
                              "FIRST_TOKEN_TIMEOUT_S"), id="headers-then-silence"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.MALFORMED_JSON, fault_after=3),
                 after_tokens("abc", "upstream_error"), 1,
                 marks=matrix(UP, "malformed JSON after 3 tokens", "the 3 tokens, then `error` `upstream_error`"),
                 id="malformed-json-mid-stream"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.MALFORMED_JSON, fault_after=0),
                 before_token(502, "upstream_error", True), 3,
                 marks=matrix(UP, "malformed JSON before the first token", "retried, then HTTP 502 `upstream_error`"),
                 id="malformed-json-first"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.INVALID_UTF8, fault_after=3),
                 after_tokens("abc", "upstream_error"), 1,
                 marks=matrix(UP, "invalid UTF-8 after 3 tokens", "the 3 tokens, then `error` `upstream_error`"),
                 id="invalid-utf8"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.NO_DONE, fault_after=5), done("abcde"), 1,
                 marks=matrix(UP, "no `[DONE]` after the finish chunk",
                              "a clean `done` (the finish reason arrived): `[DONE]` is not required"), id="no-done"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.NO_DONE, fault_after=3), after_tokens("abc", "upstream_error"), 1,
                 marks=matrix(UP, "body ends cleanly mid-answer (no finish, no `[DONE]`)",
                              "the 3 tokens, then `error` `upstream_error` (a truncated answer is not `done`)"),
                 id="no-finish"),
    pytest.param(Script(deltas=ABCDE, delay=0.01, fault=Fault.EARLY_EOF, fault_after=3),
                 after_tokens("abc", "upstream_error"), 1,
                 marks=matrix(UP, "early EOF (FIN, chunked body not terminated) after 3 tokens",
                              "the 3 tokens, then `error` `upstream_error`"), id="early-eof"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.DOUBLE_DONE), done("abcde"), 1,
                 marks=matrix(UP, "`[DONE]` twice", "exactly one `done`"), id="double-done"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.HUGE_CHUNK, fault_after=2), done("ab" + HUGE_TEXT + "cde"), 1,
                 marks=matrix(UP, "one 1 MiB delta", "relayed intact in one event, then `done`"), id="huge-chunk"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.SLOW_DRIP, fault_after=2), after_tokens("ab", "upstream_timeout"),
                 1, marks=matrix(UP, "slow drip (1 token / 5 s) slower than IDLE_TIMEOUT_S (1 s here)",
                                 "`error` `upstream_timeout` after the tokens that came in time"), id="slow-drip-idle"),
    pytest.param(Script(deltas=ABCDE, fault=Fault.ANTHROPIC_OVERLOADED, fault_after=3),
                 after_tokens("abc", "upstream_error"), 1,
                 marks=matrix(UP, "an error event mid-stream (`data: {\"error\": ...}`)",
                              "the 3 tokens, then `error` `upstream_error`"), id="error-event-mid-stream"),
]


@pytest.mark.parametrize(("script", "check", "attempts"), UPSTREAM_FAULTS)
def test_upstream_fault(gw: GatewayProcess, up: FakeUpstream, inv: Invariants, script: Script,
                        check: Callable[[httpx.Response, list[ServerSentEvent]], None], attempts: int) -> None:
    prompt = up.script(script)
    resp, events = stream(gw, prompt)
    check(resp, events)
    assert len(up.records(prompt)) == attempts
    inv.check()


@matrix(UP, "connection refused", "HTTP 502 `upstream_error` once the retries are spent; the server stays healthy")
def test_upstream_refuses_connections(make_gateway: Callable[..., GatewayProcess]) -> None:
    g = make_gateway({**SETTINGS, "upstream_url": f"http://127.0.0.1:{free_port()}/v1"})
    invariants = Invariants(g, None)
    resp, _ = stream(g, "hello")
    before_token(502, "upstream_error", True)(resp, [])
    invariants.check()
    invariants.close()


@pytest.fixture(scope="module")
def patient_gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    """A gateway with a long idle timeout and a detach grace."""
    with GatewayProcess({**SETTINGS, "upstream_url": up.url, "idle_timeout_s": 10, "heartbeat_s": 1.0,
                         "detach_grace_s": 1.0}) as g:
        yield g


@matrix(UP, "slow drip (1 token / 5 s) within IDLE_TIMEOUT_S",
        "heartbeats (`: ping`) keep the client's connection alive between tokens; the answer completes")
def test_slow_drip_within_the_idle_timeout_completes(up: FakeUpstream, patient_gw: GatewayProcess) -> None:
    invariants = Invariants(patient_gw, None)
    prompt = up.script(Script(deltas=["a", "b"], fault=Fault.SLOW_DRIP, fault_after=1))
    with RawStream(patient_gw.port) as c:
        c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
        events = c.read_all()
    assert not stream_violations(events) and text_of(events) == "ab"
    assert events[-1].event == "done"
    assert c.body.count(b": ping") >= 3  # ~5 s of silence upstream, a ping every second
    invariants.check()
    invariants.close()


# --- client faults -----------------------------------------------------------------------------------------------

CL = "Client faults"


def ended_by(inv: Invariants, cause: str, before: dict[str, float]) -> float:
    return inv.snapshot().ended_by_cause.get(cause, 0.0) - before.get(cause, 0.0)


@matrix(CL, "hang up in the middle of sending the request", "no generation starts; nothing is sent upstream")
def test_disconnect_while_sending_the_request(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    before = inv.snapshot()
    prompt = up.script(Script())
    body = chat_body(prompt)
    request = raw_request("POST", "/v1/chat/stream", body)
    for cut in (10, len(request) - len(body) - 2, len(request) - 5):  # in the request line, headers, body
        with RawStream(gw.port) as c:
            c.send(request[:cut])
            c.close(rst=cut % 2 == 0)
    after = inv.check()
    assert after.started == before.started
    assert up.records(prompt) == []


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@matrix(CL, "hang up while the status is held (before the response headers)",
        "the generation is cancelled and its upstream request closed at once")
def test_disconnect_before_the_headers(gw: GatewayProcess, up: FakeUpstream, inv: Invariants, rst: bool) -> None:
    before = inv.snapshot().ended_by_cause
    for _attempt in range(3):  # on a loaded machine the commit deadline may pass first: then try again
        prompt = up.script(Script(deltas=ABCDE, ttft=30))
        c = RawStream(gw.port)
        c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
        sent = time.monotonic()
        up.wait_request(prompt, timeout=5)
        c.close(rst=rst)
        hung_up = time.monotonic()
        rec = up.wait_closed(prompt, timeout=5)
        assert rec.closed_at is not None and rec.closed_at - hung_up < CLOSE_BOUND_S
        if hung_up - sent < SETTINGS["commit_timeout_s"] * 0.8:  # the status was still held
            break
    else:
        pytest.fail("could not hang up before the commit deadline in 3 tries")
    inv.check()
    assert ended_by(inv, "cancelled:disconnect", before) == _attempt + 1


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@matrix(CL, "hang up after `start`, before the first token",
        "the generation is cancelled and its upstream request closed at once")
def test_disconnect_before_the_first_token(gw: GatewayProcess, up: FakeUpstream, inv: Invariants, rst: bool) -> None:
    before = inv.snapshot().ended_by_cause
    prompt = up.script(Script(deltas=ABCDE, ttft=30))
    c = RawStream(gw.port)
    c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
    first = next(c.iter_events())
    assert c.status == 200 and first.event == "start"
    c.close(rst=rst)
    hung_up = time.monotonic()
    rec = up.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - hung_up < CLOSE_BOUND_S
    assert rec.deltas_sent == 0
    inv.check()
    assert ended_by(inv, "cancelled:disconnect", before) == 1


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
@matrix(CL, "hang up mid-stream", "the generation is cancelled and its upstream request closed at once")
def test_disconnect_mid_stream(gw: GatewayProcess, up: FakeUpstream, inv: Invariants, rst: bool) -> None:
    before = inv.snapshot().ended_by_cause
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(1000)], delay=0.01))
    c = RawStream(gw.port)
    c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
    for ev in c.iter_events():
        if ev.event == "message" and ev.json()["delta"] == "t3 ":
            break
    c.close(rst=rst)
    hung_up = time.monotonic()
    rec = up.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - hung_up < CLOSE_BOUND_S
    assert not rec.finished and rec.deltas_sent < 1000
    assert not stream_violations(c.events, client_left=True)
    inv.check()
    assert ended_by(inv, "cancelled:disconnect", before) == 1


@matrix(CL, "hang up mid-stream with DETACH_GRACE_S = 1 s and nobody resuming",
        "the generation goes on for the grace, then is cancelled and its upstream request closed")
def test_disconnect_with_a_detach_grace(up: FakeUpstream, patient_gw: GatewayProcess) -> None:
    invariants = Invariants(patient_gw, up)
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(1000)], delay=0.01))
    with RawStream(patient_gw.port) as c:
        c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
        for ev in c.iter_events():
            if ev.event == "message":
                break
        c.close(rst=True)
        hung_up = time.monotonic()
    rec = up.wait_closed(prompt, timeout=10)
    assert rec.closed_at is not None and 0.9 < rec.closed_at - hung_up < 5
    assert not rec.finished and rec.deltas_sent > 20  # it went on generating meanwhile
    snap = invariants.check()
    assert snap.ended_by_cause.get("cancelled:disconnect") == 1
    invariants.close()


@matrix(CL, "hang up right after the last token (racing the terminal event)",
        "the generation ends exactly once (`done` or `cancelled`); nothing leaks")
def test_disconnect_racing_the_terminal_event(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    before = inv.snapshot()
    for i in range(20):
        prompt = up.script(Script(deltas=ABCDE))
        c = RawStream(gw.port)
        c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
        for ev in c.iter_events():
            if ev.event == "message" and ev.json()["delta"] == "e":
                break
        c.close(rst=i % 2 == 0)
        assert not stream_violations(c.events, client_left=True)
    after = inv.check()
    assert after.started - before.started == 20


@matrix(CL, "hang up while the terminal event is being written (client stopped reading a 1 MiB token)",
        "the response task ends, the generation has ended once with `done`; nothing leaks")
def test_disconnect_during_the_terminal_event(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    before = inv.snapshot().ended_by_cause
    prompt = up.script(Script(deltas=["a", "b"], fault=Fault.HUGE_CHUNK, fault_after=2))
    c = RawStream(gw.port, rcvbuf=4096)
    c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
    assert c.read_until(b"event: start")
    inv.wait_no_generation()  # the generation is over: the gateway is stuck sending 1 MiB + `done` to us
    assert up.records(prompt)[0].finished
    assert b"event: done" not in c.buf
    c.close(rst=True)
    inv.check()
    assert ended_by(inv, "done", before) == 1


@matrix(CL, "a client that stops reading (slowloris reader)",
        "dropped after SEND_TIMEOUT_S; its generation is cancelled and the upstream closed; others unaffected")
def test_client_that_stops_reading_is_dropped(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    before = inv.snapshot().ended_by_cause
    # paced so that the upstream is still generating when the gateway gives up on the client
    prompt = up.script(Script(deltas=["x" * 4000] * 20000, delay=0.001))
    c = RawStream(gw.port, rcvbuf=4096)
    try:
        c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
        t0 = time.monotonic()
        # meanwhile another client is served normally
        other = up.script(Script(deltas=ABCDE, delay=0.05))
        done("abcde")(*stream(gw, other))
        rec = up.wait_closed(prompt, timeout=10)
        assert not rec.finished and rec.closed_at is not None
        assert rec.closed_at - t0 < SETTINGS["send_timeout_s"] + 2.0
        c.sock.settimeout(10)
        assert not c.read_until(b"event: done", deadline_s=10)  # cut off: EOF, not the rest of 80 MB
    finally:
        c.close()
    inv.check()
    assert ended_by(inv, "cancelled:disconnect", before) == 1


@matrix(CL, "200 clients that send half a request and wait (slowloris sender)",
        "other clients are served meanwhile; nothing starts upstream; closing them leaves nothing behind")
def test_half_sent_requests_do_not_block_others(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    before = inv.snapshot()
    prompt = up.script(Script())
    request = raw_request("POST", "/v1/chat/stream", chat_body(prompt))
    socks = []
    try:
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(request[: 20 + i % (len(request) - 30)])
            socks.append(s)
        done("abcde")(*stream(gw, up.script(Script(deltas=ABCDE))))
    finally:
        for s in socks:
            s.close()
    after = inv.check()
    assert after.started - before.started == 1
    assert up.records(prompt) == []


@matrix(CL, "OpenAI-compatible stream (`/v1/chat/completions`): hang up mid-stream",
        "the generation is cancelled and its upstream request closed at once")
def test_openai_stream_disconnect(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(1000)], delay=0.01))
    c = RawStream(gw.port)
    c.send(raw_request("POST", "/v1/chat/completions", chat_body(prompt, stream=True)))
    assert c.read_head() == 200
    assert c.read_until(b"t3 ")
    c.close(rst=True)
    hung_up = time.monotonic()
    rec = up.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - hung_up < CLOSE_BOUND_S and not rec.finished
    inv.check()


@matrix(CL, "OpenAI-compatible, `stream: false`: hang up while waiting for the answer",
        "the generation is cancelled and its upstream request closed at once")
def test_openai_non_streaming_disconnect(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(1000)], delay=0.01))
    c = RawStream(gw.port)
    c.send(raw_request("POST", "/v1/chat/completions", chat_body(prompt, stream=False)))
    rec = up.wait_request(prompt, timeout=5)
    c.close()
    hung_up = time.monotonic()
    rec = up.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - hung_up < CLOSE_BOUND_S and not rec.finished
    inv.check()


# --- load --------------------------------------------------------------------------------------------------------

LOAD = "Load"


async def _burst(port: int, requests: list[bytes], concurrency: int, deadline: float) -> dict[str, int]:
    """Connect, send, and hang up at once (half with a RST), ``concurrency`` at a time; counts what happened."""
    counts = {"connected": 0, "refused": 0}
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, request: bytes) -> None:
        async with sem:
            if time.monotonic() > deadline:
                return
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                counts["refused"] += 1
                return
            counts["connected"] += 1
            if request:
                writer.write(request)
                if i % 10 == 0:  # some wait for the first byte of the answer first
                    try:
                        await asyncio.wait_for(reader.read(1), timeout=5)
                    except (TimeoutError, OSError):
                        pass
            if i % 2:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.close()

    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    return counts


@matrix(LOAD, "2000 connections opened and dropped in a burst (3/8 bare, 3/8 half-requests, 1/4 full streams "
        "hung up at once or after the first byte, half of them with a RST)",
        "every generation started has ended, every upstream request is closed, the server answers at once after")
def test_burst_of_connects_and_disconnects(gw: GatewayProcess, up: FakeUpstream, inv: Invariants,
                                          record_property: Callable[[str, object], None]) -> None:
    before = inv.snapshot()
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(200)], delay=0.01))
    full = raw_request("POST", "/v1/chat/stream", chat_body(prompt))
    get = raw_request("GET", "/chat?q=" + prompt)
    requests = [[b"", full[:40], full, b"", full[:40], get, b"", full[:40]][i % 8] for i in range(2000)]
    t0 = time.monotonic()
    counts = asyncio.run(_burst(gw.port, requests, concurrency=100, deadline=t0 + 60))
    elapsed = time.monotonic() - t0
    assert counts["connected"] == 2000, counts
    t1 = time.monotonic()
    assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200
    health_s = time.monotonic() - t1
    after = inv.check(timeout=30)
    started = after.started - before.started
    record_property("observed", f"{started:g} streams started in {elapsed:.1f} s; "
                                f"/healthz after {health_s * 1000:.0f} ms")
    assert started >= 250  # most of the 500 full requests got as far as a generation
    assert len(up.records(prompt)) <= started


def _streaming(gw: GatewayProcess, prompt: str) -> RawStream:
    """A client of a native stream that has received its first delta."""
    c = RawStream(gw.port)
    c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
    for ev in c.iter_events():
        if ev.event == "message":
            break
    return c


@matrix(LOAD, "200 streams mid-answer, all clients killed at once",
        "all 200 generations cancelled and their upstream requests closed")
def test_many_tabs_closed_at_once(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    before = inv.snapshot().ended_by_cause
    prompts = [up.script(Script(deltas=[f"t{i} " for i in range(500)], delay=0.02)) for _ in range(200)]

    with ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(lambda p: _streaming(gw, p), prompts))
    assert all(c.status == 200 for c in clients)
    for c in clients:
        c.close(rst=True)
    for p in prompts:
        assert up.wait_closed(p, timeout=10).finished is False
    inv.check()
    assert ended_by(inv, "cancelled:disconnect", before) == 200


def test_regression_a_storm_of_disconnects_closes_each_upstream_once_and_ends_each_stream_cancelled(
        gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    """200 clients mid-answer hang up at once (FIN). A disconnect tears its upstream down at once and leaves the
    unwinding of its generation for its turn (``StreamHub.turn``), while the request's socket is already cut: this
    guards that nothing runs in between, that is, no upstream is sent the request again (a retry), no stream ends
    with the cut's error instead of the cancel, each upstream connection is closed by the gateway, and so is each
    client's (its close waits for a turn too)."""
    before = inv.snapshot().ended_by_cause
    prompts = [up.script(Script(deltas=[f"t{i} " for i in range(500)], delay=0.02)) for _ in range(200)]

    with ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(lambda p: _streaming(gw, p), prompts))
    assert all(c.status == 200 for c in clients)
    ports = {c.sock.getsockname()[1] for c in clients}
    t0 = time.monotonic()
    for c in clients:
        c.close()
    records = [up.wait_closed(p, timeout=10) for p in prompts]
    assert all(r.closed_by == "client" and not r.finished for r in records)  # the gateway closed each, mid-answer
    assert all(len(up.records(p)) == 1 for p in prompts)  # none was sent again
    assert max(r.closed_at or 0.0 for r in records) - t0 < 5.0  # generous: it catches a hang, not a slow machine
    # and the gateway closed its side of each client's connection too (after a client's EOF that close waits
    # for its turn, core/turns.py): none is left open, half-closed
    assert gw.proc is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [c for c in psutil.Process(gw.proc.pid).net_connections("tcp") if c.raddr and c.raddr.port in ports]
        if not left:
            break
        time.sleep(0.05)  # polling the gateway's sockets: no event tells this process when it closes one
    assert not left, f"{len(left)} client connections still open in the gateway"
    inv.check()
    assert ended_by(inv, "cancelled:disconnect", before) == 200


def test_stream_violations_helper_rejects_bad_streams() -> None:
    """The checker itself: a stream with two terminal events, a gap or no terminal is caught."""
    def ev(sid: str, seq: int, event: str, data: Any) -> ServerSentEvent:
        return ServerSentEvent(event, orjson.dumps(data).decode(), f"{sid}:{seq}")

    good = [ev("s", 1, "start", {"stream_id": "s"}), ev("s", 2, "message", {"delta": "x"}),
            ev("s", 3, "done", {"finish_reason": "stop"})]
    assert stream_violations(good) == []
    assert stream_violations([*good, ev("s", 4, "error", {})])
    assert stream_violations(good[:2])
    assert stream_violations(good[:2], client_left=True) == []
    assert stream_violations([good[0], good[2]])


# --- regressions --------------------------------------------------------------------------------------------------

def gateway_side(gw: GatewayProcess, client: RawStream) -> list[Any]:
    """The gateway's end of ``client``'s connection, if it still has one (read from the process's sockets)."""
    assert gw.proc is not None
    port = client.sock.getsockname()[1]
    return [c for c in psutil.Process(gw.proc.pid).net_connections("tcp") if c.raddr and c.raddr.port == port]


def test_regression_unread_answer_is_held_forever(gw: GatewayProcess, up: FakeUpstream, inv: Invariants) -> None:
    """A client that stopped reading a whole answer that uvicorn had already queued (``stream: false``: one
    write of the whole body) kept its connection, and the queued bytes in the gateway's memory, for as long as it
    stayed connected: uvicorn's send returns once bytes are queued, so no send ever blocked and SEND_TIMEOUT_S
    never fired. Now a response's unread tail is dropped after SEND_TIMEOUT_S without progress
    (``response.drop_if_unread``)."""
    prompt = up.script(Script(deltas=["x" * 1_000_000] * 8))
    before = inv.snapshot()
    with RawStream(gw.port, rcvbuf=4096) as c:
        c.send(raw_request("POST", "/v1/chat/completions", chat_body(prompt, stream=False)))
        inv.wait_started(before, 1)  # (else the wait below may end before the gateway read the request)
        inv.wait_no_generation()
        assert gateway_side(gw, c)
        deadline = time.monotonic() + SETTINGS["send_timeout_s"] * 2 + 5
        while gateway_side(gw, c) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the gateway's sockets: no event tells this process when it drops one
        assert not gateway_side(gw, c), "the gateway still holds the connection of a client that reads nothing"
    inv.check()


@pytest.mark.parametrize(("status", "expected"), [(429, 429), (503, 502)])
def test_regression_infinite_retry_after_is_500(gw: GatewayProcess, up: FakeUpstream, inv: Invariants,
                                                status: int, expected: int) -> None:
    """An upstream answering ``Retry-After: inf`` (or ``1e400``) made ``errors.parse_retry_after`` return
    infinity, and building the client's ``Retry-After`` header (``round(inf)``) raised OverflowError: the client
    got a 500 instead of the upstream's error. Non-finite values are ignored now, and huge ones capped at a day."""
    for value in ("inf", "1e400", "1e18"):
        prompt = up.script(Script(status=status, headers={"Retry-After": value}))
        for path, extra in (("/v1/chat/stream", {}), ("/v1/chat/completions", {"stream": False})):
            resp = httpx.post(gw.url + path, content=chat_body(prompt, **extra), timeout=30)
            assert resp.status_code == expected, (value, path, resp.text)
            assert resp.headers["content-type"] == "application/json"
            after = resp.headers.get("retry-after")
            assert after is None or 1 <= int(after) <= 86400, after
    inv.check()


def test_regression_cancelled_before_the_generation_first_ran(gw: GatewayProcess, up: FakeUpstream,
                                                              inv: Invariants) -> None:
    """A client that sends its request and closes its side at once can be seen gone (at its EOF) before the new
    generation's task has run a single step. Cancelling such a task skipped every handler of ``Generation._run``:
    the stream never ended, stayed active, and held its concurrency slot. Now a generation stopped before its first
    step ends ``cancelled`` without asking the upstream anything."""
    before = inv.snapshot()
    prompt = up.script(Script(deltas=[f"t{i} " for i in range(200)], delay=0.01))
    request = raw_request("POST", "/v1/chat/stream", chat_body(prompt))
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)  # the request and the EOF arrive together
            socks.append(s)
        inv.wait_started(before, 20)  # the gateway may not have read every request yet
        after = inv.check()  # every generation started has ended, none still running
    finally:
        for s in socks:
            s.close()
    assert after.started - before.started == 20
    key = "cancelled:disconnect"
    assert after.ended_by_cause.get(key, 0) - before.ended_by_cause.get(key, 0) == 20
