"""When each timeout fires (CONTRACT §2), with settings far apart so that the wrong timer cannot pass for the right one.

Each test sets the timeout under test short and the others long (first-token 30 s vs idle 0.5 s, heartbeat 60 s vs
send 1 s), then asserts the failure came near the short one. The upper bounds are generous (a loaded 2-core CI
machine) but far below the long timer, so a timer that fires on the wrong deadline fails the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from ssegate.sse import ServerSentEvent
from tests.fakes import FakeUpstream, Script
from tests.support.gateway import GatewayProcess, chat_body, sse_events
from tests.support.rawclient import RawStream, raw_request

LATE = 10.0
"""Any timeout that fires this long after it was due fired on the wrong deadline (the long ones are 30-60 s)."""


def script(**spec: Any) -> str:
    return "/script " + json.dumps(spec)


def timed_events(url: str, prompt: str) -> list[tuple[float, ServerSentEvent]]:
    out: list[tuple[float, ServerSentEvent]] = []
    with httpx.stream("POST", url + "/v1/chat/stream", content=chat_body(prompt), timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        for event in sse_events(resp.iter_text()):
            out.append((time.monotonic(), event))
    return out


def test_regression_a_stall_after_the_first_output_is_reported_at_the_idle_timeout(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    """One timer armed at the first-token deadline and re-armed only when it fired reported a stall after the
    first output at FIRST_TOKEN_TIMEOUT_S (30 s here) instead of IDLE_TIMEOUT_S after the last part."""
    gw = make_gateway({"first_token_timeout_s": 30.0, "idle_timeout_s": 0.5, "commit_timeout_s": 0.1})
    events = timed_events(gw.url, script(deltas=["a", "b"], delay=0.05, stall=True))
    kinds = [e.event for _, e in events]
    assert kinds == ["start", "message", "message", "error"]
    assert events[-1][1].json()["error"]["code"] == "upstream_timeout"
    waited = events[-1][0] - events[-2][0]
    assert 0.45 <= waited < LATE, f"the stall was reported {waited:.2f}s after the last part (idle 0.5 s)"


def test_the_first_token_timeout_fires_at_its_own_deadline(make_gateway: Callable[..., GatewayProcess]) -> None:
    gw = make_gateway({"first_token_timeout_s": 1.0, "idle_timeout_s": 30.0, "commit_timeout_s": 0.1})
    t0 = time.monotonic()
    events = timed_events(gw.url, script(deltas=["never"], ttft=60))
    assert [e.event for _, e in events] == ["start", "error"]
    assert events[-1][1].json()["error"]["code"] == "upstream_timeout"
    waited = events[-1][0] - t0
    assert 0.95 <= waited < LATE, f"first-token timeout after {waited:.2f}s (1 s)"


def test_the_status_goes_out_at_the_commit_deadline_then_heartbeats_at_theirs(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    """One timer serves the commit deadline and then the heartbeats: the status of a stream whose first token
    is late goes out at COMMIT_TIMEOUT_S (0.3 s), not at the token (4 s), and the first ``: ping`` HEARTBEAT_S
    (1 s) after it, then one a second until the token."""
    gw = make_gateway({"commit_timeout_s": 0.3, "heartbeat_s": 1.0, "first_token_timeout_s": 30.0,
                       "idle_timeout_s": 30.0})
    t0 = time.monotonic()
    pings: list[float] = []
    with httpx.stream("POST", gw.url + "/v1/chat/stream", content=chat_body(script(deltas=["late"], ttft=4.0)),
                      timeout=60) as resp:
        head = time.monotonic() - t0
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            pings += [time.monotonic() - t0] * chunk.count(b": ping")
            if b"late" in chunk:
                break
    assert 0.25 <= head < 3.0, f"the status went out {head:.2f}s after the request (commit 0.3 s, token 4 s)"
    assert len(pings) >= 2, f"pings at {pings}"
    assert head + 0.9 <= pings[0] < head + 3.0, f"first ping {pings[0] - head:.2f}s after the status (1 s)"


def test_parts_keep_a_slow_stream_alive_past_the_first_token_timeout(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    """A reasoning phase longer than FIRST_TOKEN_TIMEOUT_S is not cut: its first part satisfied the first-token
    timeout, and each part restarts the idle timeout (which is longer than the gap between parts)."""
    gw = make_gateway({"first_token_timeout_s": 1.0, "idle_timeout_s": 2.0, "commit_timeout_s": 0.1})
    parts = [{"reasoning": f"step {i}. "} for i in range(10)] + ["The answer."]
    t0 = time.monotonic()
    events = timed_events(gw.url, script(parts=parts, delay=0.3))
    assert time.monotonic() - t0 > 3.0  # longer than the first-token timeout, by far
    assert [e.event for _, e in events] == ["start"] + ["reasoning"] * 10 + ["message", "done"]
    assert events[-1][1].json()["finish_reason"] == "stop"


def test_regression_a_blocked_send_is_noticed_at_the_send_timeout(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeUpstream
) -> None:
    """The response's one timer was re-armed at the next heartbeat when it found no send in progress, so a send
    that blocked right after was noticed up to HEARTBEAT_S (60 s here) late instead of SEND_TIMEOUT_S (1 s)."""
    gw = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "m", "heartbeat_s": 60.0,
                       "send_timeout_s": 1.0})
    # the first bytes come after the timer's first look (at 1 s), when no send is in progress yet
    prompt = upstream.script(Script(deltas=["x" * 4000] * 20000, delay=0.001, ttft=1.5))
    with RawStream(gw.port, rcvbuf=4096) as c:
        c.send(raw_request("POST", "/v1/chat/stream", chat_body(prompt)))
        rec = upstream.wait_request(prompt, timeout=10)
        closed = upstream.wait_closed(prompt, timeout=30)
    assert closed.closed_at is not None and not closed.finished
    assert closed.closed_at - rec.request_at < 1.5 + 1.0 + LATE
