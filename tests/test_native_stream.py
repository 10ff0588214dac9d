"""The native stream end to end (CONTRACT §3, §4) against a real server on the embedded demo model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.support.gateway import GatewayProcess, chat_body, post_events

BODY_LIMIT = 1 << 20
"""The body limit of ``small_body_gw``: set explicitly, so the 413 tests do not depend on the default (20 MiB)."""


@pytest.fixture(scope="module")
def small_body_gw() -> Iterator[GatewayProcess]:
    with GatewayProcess({"demo_ttft_s": 0.05, "demo_tokens_per_s": 400, **FAST, "max_body_bytes": BODY_LIMIT}) as gw:
        yield gw


def stream(gw: GatewayProcess, content: str, **extra: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return post_events(gw.url, content, **extra)


def script(**spec: Any) -> str:
    return "/script " + json.dumps(spec)


def assert_well_formed(events: list[ServerSentEvent]) -> str:
    """Ids contiguous from 1, start first, exactly one terminal event last; returns the text."""
    assert events, "no events"
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    assert events[0].event == "start"
    assert [e.event for e in events].count("done") + [e.event for e in events].count("error") == 1
    assert events[-1].event in ("done", "error")
    assert all(e.event == "message" for e in events[1:-1])
    return "".join(e.json()["delta"] for e in events[1:-1])


def test_get_chat_streams_a_demo_answer_token_by_token(demo_gateway: GatewayProcess) -> None:
    with httpx.stream("GET", demo_gateway.url + "/chat", params={"q": "What is SSE"}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        raw = "".join(resp.iter_text())
    assert raw.startswith("retry: 2000\n")
    from tests.support.gateway import sse_events

    events = list(sse_events(iter([raw])))
    assert resp.headers["x-stream-id"] == events[0].json()["stream_id"]
    text = assert_well_formed(events)
    assert len(events) > 20  # many deltas, not one blob
    assert "SSE" in text and len(text.split(". ")) >= 4
    done = events[-1].json()
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == len(events) - 2
    assert done["usage"]["estimated"] is False


def test_demo_answer_is_stable_per_prompt_and_differs_between_prompts(demo_gateway: GatewayProcess) -> None:
    a1 = assert_well_formed(stream(demo_gateway, "Tell me about proxies")[1])
    a2 = assert_well_formed(stream(demo_gateway, "Tell me about proxies")[1])
    b = assert_well_formed(stream(demo_gateway, "How do language models work?")[1])
    assert a1 == a2
    assert a1 != b


def test_max_tokens_is_respected(demo_gateway: GatewayProcess) -> None:
    _, events = stream(demo_gateway, "hello", max_tokens=5)
    assert_well_formed(events)
    assert len(events) == 7
    assert events[-1].json()["finish_reason"] == "length"
    assert events[-1].json()["usage"]["completion_tokens"] == 5


def test_stream_ids_are_unguessable(demo_gateway: GatewayProcess) -> None:
    ids = {stream(demo_gateway, script(deltas=["x"]))[1][0].json()["stream_id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) >= 22 for i in ids)  # 128 bits, URL-safe base64


def test_error_before_first_token_is_a_real_status(demo_gateway: GatewayProcess) -> None:
    resp, _ = stream(demo_gateway, script(deltas=["a"], fail_at=0, error="upstream_timeout"))
    assert resp.status_code == 504
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "upstream_timeout"
    assert resp.json()["error"]["retryable"] is True


def test_error_after_tokens_is_an_error_event(demo_gateway: GatewayProcess) -> None:
    resp, events = stream(demo_gateway, script(deltas=["a", "b", "c"], fail_at=2, error="upstream_error"))
    assert resp.status_code == 200
    assert assert_well_formed(events) == "ab"
    assert events[-1].event == "error"
    assert events[-1].json()["error"]["code"] == "upstream_error"


def test_the_script_hook_is_off_unless_demo_scripts_enables_it(
    demo_gateway: GatewayProcess, make_gateway: Callable[..., GatewayProcess]
) -> None:
    """Regression: any client could make the demo model play ``/script {...}`` (exact text, a chosen error code,
    a stall that holds a stream open). A gateway started without ``SSEGATE_DEMO_SCRIPTS`` (as deployed) answers
    such a message as an ordinary prompt; the suite's gateways (``demo_scripts`` on) play the script."""
    plain = make_gateway({"demo_scripts": None, "demo_ttft_s": 0.01, "demo_tokens_per_s": 1000})
    assert "SSEGATE_DEMO_SCRIPTS" not in plain.env()
    played = script(deltas=["scripted-only"])
    failing = script(deltas=["a"], fail_at=0, error="upstream_timeout")
    broken = "/script {not json"

    # the suite's gateway plays them: the prompts below would show if the hook were on
    assert assert_well_formed(stream(demo_gateway, played)[1]) == "scripted-only"
    assert stream(demo_gateway, failing)[0].status_code == 504
    assert stream(demo_gateway, broken)[0].status_code == 400

    for prompt in (played, failing, broken):
        resp, events = stream(plain, prompt)
        assert resp.status_code == 200, resp.text
        text = assert_well_formed(events)
        assert text != "scripted-only" and len(events) > 5  # the demo's own answer, many parts
        assert events[-1].event == "done" and events[-1].json()["finish_reason"] == "stop"


def test_heartbeats_flow_before_a_slow_first_token(demo_gateway: GatewayProcess) -> None:
    """Commit after COMMIT_TIMEOUT_S (1 s here), then `: ping` every HEARTBEAT_S (1 s) until the token."""
    from ssegate.sse import SSEDecoder

    dec = SSEDecoder()
    events: list[ServerSentEvent] = []
    with httpx.stream("POST", demo_gateway.url + "/v1/chat/stream", timeout=30,
                      content=chat_body(script(deltas=["late"], ttft=3.2))) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_text():
            events += dec.feed(chunk)
    assert assert_well_formed(events) == "late"
    assert dec.comments >= 1


BAD_INPUTS = [
    ("not json", b"{not json", 400),
    ("missing messages", b'{"model": "x"}', 422),
    ("empty messages", b'{"messages": []}', 422),
    ("wrong types", b'{"messages": [{"role": "user", "content": 5}]}', 422),
    ("bad role", b'{"messages": [{"role": "wizard", "content": "hi"}]}', 422),
    ("bad max_tokens", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', 422),
    ("array body", b"[1, 2]", 422),
]


@pytest.mark.parametrize(("name", "body", "status"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_json_error(demo_gateway: GatewayProcess, name: str, body: bytes, status: int) -> None:
    resp = httpx.post(demo_gateway.url + "/v1/chat/stream", content=body,
                      headers={"content-type": "application/json"}, timeout=10)
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert err["code"] == "invalid_request" and err["message"] and err["retryable"] is False


def test_oversized_body_is_413_and_the_server_stays_healthy(small_body_gw: GatewayProcess) -> None:
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (5 * BODY_LIMIT) + b'"}]}'
    resp = httpx.post(small_body_gw.url + "/v1/chat/stream", content=big, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert httpx.get(small_body_gw.url + "/healthz", timeout=5).status_code == 200


def test_oversized_chunked_body_is_413(small_body_gw: GatewayProcess) -> None:
    def body() -> Any:
        for _ in range(40):  # 2.5 MiB, no Content-Length
            yield b"x" * 65536

    resp = httpx.post(small_body_gw.url + "/v1/chat/stream", content=body(), timeout=30,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_missing_q_and_unknown_paths(demo_gateway: GatewayProcess) -> None:
    resp = httpx.get(demo_gateway.url + "/chat", timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request"
    resp = httpx.get(demo_gateway.url + "/nope", timeout=5)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = httpx.delete(demo_gateway.url + "/chat", timeout=5)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "invalid_request"
    assert httpx.get(demo_gateway.url + "/healthz", timeout=5).json() == {"status": "ok"}


def test_readyz_reports_the_upstream(demo_gateway: GatewayProcess) -> None:
    resp = httpx.get(demo_gateway.url + "/readyz", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
