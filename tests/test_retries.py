"""Retries and fallbacks before the first token (``Generation._relay``), end to end against fake upstreams.

Retried: connection errors, 5xx and 429 (``Retry-After`` honoured), with jittered backoff. Never once a delta
went out. Before the commit only retries that fit before the commit deadline (so the final failure is a real
HTTP status); after it, until the first-token deadline (the final failure is an ``error`` event)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import ConnRecord, FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, free_port, post_events
from tests.support.resume import assert_whole

DELTAS = ["one", " two", " three", " four", " five"]
MakeGateway = Callable[..., GatewayProcess]


def stream(gw: GatewayProcess, prompt: str) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return post_events(gw.url, f"Count. {prompt}")


@pytest.fixture
def failing() -> Iterator[FakeUpstream]:
    """An OpenAI-compatible upstream that answers every request with 500."""
    with FakeUpstream(default=Script(status=500)) as up:
        yield up


def test_two_503s_then_one_clean_stream(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, fail_attempts=2, fail_status=503))
    resp, events = stream(gateway, prompt)
    assert resp.status_code == 200
    assert_whole(events, DELTAS)
    assert [r.status for r in upstream.records(prompt)] == [503, 503, 200]


def test_failure_after_three_tokens_is_not_retried(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=DELTAS, fault=Fault.RESET, fault_after=3))
    resp, events = stream(gateway, prompt)
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "message", "message", "message", "error"]
    assert "".join(e.json()["delta"] for e in events[1:-1]) == "".join(DELTAS[:3])  # no duplicated text
    assert events[-1].json()["error"]["code"] == "upstream_error"
    assert len(upstream.records(prompt)) == 1


def test_upstream_failing_at_once_every_time_gives_a_real_502(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(status=500))
    resp, _ = stream(gateway, prompt)
    assert resp.status_code == 502
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "upstream_error"
    assert [r.status for r in upstream.records(prompt)] == [500, 500, 500]  # SSEGATE_RETRY_ATTEMPTS=3, all in time


def test_client_errors_are_not_retried(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(status=404))
    resp, _ = stream(gateway, prompt)
    assert resp.status_code == 502
    assert resp.json()["error"]["retryable"] is False
    assert len(upstream.records(prompt)) == 1


def test_429_retry_after_is_honoured(make_gateway: MakeGateway, upstream: FakeUpstream) -> None:
    gw = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                       "commit_timeout_s": 4.0})
    prompt = upstream.script(Script(deltas=DELTAS, fail_attempts=1, fail_status=429, headers={"Retry-After": "1"}))
    resp, events = stream(gw, prompt)
    assert resp.status_code == 200
    assert_whole(events, DELTAS)
    first, second = upstream.records(prompt)
    assert first.status == 429 and second.status == 200
    assert second.request_at - first.request_at >= 1.0


def test_retry_after_beyond_the_commit_deadline_gives_the_429(gateway: GatewayProcess,
                                                               upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(status=429, headers={"Retry-After": "30"}))
    resp, _ = stream(gateway, prompt)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "30"
    assert resp.json()["error"]["code"] == "rate_limited"
    assert len(upstream.records(prompt)) == 1


def test_fallback_used_when_primary_refuses_connections(make_gateway: MakeGateway, upstream: FakeUpstream) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    gw = make_gateway({"provider": "openai", "upstream_url": refused, "fallback_urls": upstream.url,
                       "model": "fake-model"})
    prompt = upstream.script(Script(deltas=DELTAS))
    resp, events = stream(gw, prompt)
    assert resp.status_code == 200
    assert_whole(events, DELTAS)
    assert len(upstream.records(prompt)) == 1


def test_fallbacks_tried_in_order(make_gateway: MakeGateway, failing: FakeUpstream, upstream: FakeUpstream) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"
    gw = make_gateway({"provider": "openai", "upstream_url": failing.url,
                       "fallback_urls": f"{refused},{upstream.url}", "model": "fake-model", "retry_attempts": 2})
    prompt = upstream.script(Script(deltas=DELTAS))
    resp, events = stream(gw, prompt)
    assert resp.status_code == 200
    assert_whole(events, DELTAS)
    assert [r.status for r in failing.records()] == [500, 500]
    assert len(upstream.records(prompt)) == 1
    assert upstream.records(prompt)[0].request_at > failing.records()[-1].request_at


@pytest.fixture(scope="module")
def slow_primary(upstream: FakeUpstream) -> Iterator[tuple[GatewayProcess, FakeUpstream]]:
    """A gateway that commits after 0.1 s, on a primary whose every answer is a 503 after 0.6 s (so each failure
    comes after the commit), with the shared fake upstream as its fallback; 2 attempts per upstream. (The primary
    never cools down here: each test counts its attempts; cooldowns are tested in test_routing.py.)"""
    with FakeUpstream(default=Script(status=503, ttft=0.6)) as slow:
        settings = {**FAST, "provider": "openai", "upstream_url": slow.url, "fallback_urls": upstream.url,
                    "model": "fake-model", "retry_attempts": 2, "commit_timeout_s": 0.1, "cooldown_failures": 100}
        with GatewayProcess(settings) as gw:
            yield gw, slow


def sent(up: FakeUpstream, prompt: str) -> list[ConnRecord]:
    """The attempts that carried ``prompt``, on a fake where no script was registered for it."""
    return [r for r in up.records() if prompt in r.request_body.decode()]


def test_after_the_commit_retries_go_on_until_the_first_token(
    slow_primary: tuple[GatewayProcess, FakeUpstream], upstream: FakeUpstream
) -> None:
    gw, slow = slow_primary
    prompt = upstream.script(Script(deltas=DELTAS))
    resp, events = stream(gw, prompt)
    assert resp.status_code == 200
    assert_whole(events, DELTAS)
    assert [r.status for r in sent(slow, prompt)] == [503, 503]  # retried after the commit, then the fallback
    assert len(upstream.records(prompt)) == 1


def test_after_the_commit_the_final_failure_is_an_error_event(
    slow_primary: tuple[GatewayProcess, FakeUpstream], upstream: FakeUpstream
) -> None:
    gw, slow = slow_primary
    prompt = upstream.script(Script(status=503, ttft=0.6))
    resp, events = stream(gw, prompt)
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "error"]
    assert events[-1].json()["error"]["code"] == "upstream_error"
    assert [r.status for r in sent(slow, prompt)] == [503, 503]
    assert [r.status for r in upstream.records(prompt)] == [503, 503]
