"""``GET /metrics`` (Prometheus) against a real process: the values move as streams run, end, cancel and fail."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FAST
from tests.support.gateway import GatewayProcess, chat_body, collect_events, sse_events
from tests.support.resume import script


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    with GatewayProcess({**FAST, "demo_ttft_s": 0.0, "max_streams": 1}) as gw:
        yield gw


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(gw: GatewayProcess) -> Samples:
    resp = httpx.get(gw.url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def post(gw: GatewayProcess, prompt: str, **extra: object) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/stream", content=chat_body(prompt, **extra), timeout=15,
                      headers={"content-type": "application/json"})


def wait_until(gw: GatewayProcess, check: object, timeout: float = 5.0) -> Samples:
    """Scrape until ``check(samples)`` holds (the gateway ends a disconnected stream on its own time)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(gw)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.01)  # polling the gateway's own counters; bounded


def test_a_finished_stream_is_counted(gw: GatewayProcess) -> None:
    before = scrape(gw)
    resp = post(gw, script(["a", "b", "c"], ttft=0.05))
    assert resp.status_code == 200
    after = scrape(gw)
    assert delta(before, after, "ssegate_streams_started_total") == 1
    assert delta(before, after, "ssegate_streams_ended_total", cause="done") == 1
    assert delta(before, after, "ssegate_tokens_relayed_total") == 3
    assert delta(before, after, "ssegate_time_to_first_token_seconds_count") == 1
    assert delta(before, after, "ssegate_time_to_first_token_seconds_sum") >= 0.049
    assert delta(before, after, "ssegate_time_to_first_token_seconds_bucket", le="0.025") == 0
    assert delta(before, after, "ssegate_upstream_request_seconds_count") == 1
    assert delta(before, after, "ssegate_upstream_attempts_total") == 1
    assert value(after, "ssegate_active_streams") == 0


def test_a_running_stream_is_active_and_a_cancel_is_counted_with_tokens_saved(gw: GatewayProcess) -> None:
    before = scrape(gw)
    with httpx.stream("POST", gw.url + "/v1/chat/stream", timeout=15, headers={"content-type": "application/json"},
                      content=chat_body(script(["x", "y"], stall=True), max_tokens=100)) as resp:
        events = sse_events(resp.iter_text())
        assert [next(events).event for _ in range(3)] == ["start", "message", "message"]
        running = scrape(gw)
        assert value(running, "ssegate_active_streams") == 1
        assert delta(before, running, "ssegate_streams_started_total") == 1

        # the global cap (max_streams=1) is reached: the next stream is refused, and counted
        refused = post(gw, script(["z"]))
        assert refused.status_code == 503
        assert delta(before, scrape(gw), "ssegate_requests_rejected_total", code="overloaded") == 1

        sid = resp.headers["x-stream-id"]
        assert httpx.post(f"{gw.url}/v1/streams/{sid}/cancel", timeout=10).status_code == 202
        assert list(events)[-1].json()["finish_reason"] == "cancelled"
    after = scrape(gw)
    assert value(after, "ssegate_active_streams") == 0
    assert delta(before, after, "ssegate_streams_ended_total", cause="cancelled:request") == 1
    assert delta(before, after, "ssegate_tokens_saved_by_cancel_total") == 98  # max_tokens 100, 2 relayed
    assert delta(before, after, "ssegate_tokens_relayed_total") == 2


def test_a_disconnect_is_counted(gw: GatewayProcess) -> None:
    before = scrape(gw)
    with httpx.stream("POST", gw.url + "/v1/chat/stream", timeout=15, headers={"content-type": "application/json"},
                      content=chat_body(script(["x"], stall=True))) as resp:
        events = sse_events(resp.iter_text())
        assert [next(events).event for _ in range(2)] == ["start", "message"]
    after = wait_until(gw, lambda s: delta(before, s, "ssegate_streams_ended_total", cause="cancelled:disconnect"))
    assert delta(before, after, "ssegate_streams_ended_total", cause="cancelled:disconnect") == 1
    assert value(after, "ssegate_active_streams") == 0
    assert delta(before, after, "ssegate_tokens_saved_by_cancel_total") == 512 - 1  # no max_tokens: 512 assumed


def test_failures_are_counted_by_code(gw: GatewayProcess) -> None:
    before = scrape(gw)
    # after the commit: an error event
    with httpx.stream("POST", gw.url + "/v1/chat/stream", timeout=15, headers={"content-type": "application/json"},
                      content=chat_body(script(["a", "b"], fail_at=1, error="upstream_error"))) as resp:
        assert collect_events(resp)[-1].event == "error"
    # before the commit: a real HTTP status, after the retries
    assert post(gw, script(["a"], fail_at=0, error="upstream_timeout")).status_code == 504
    after = scrape(gw)
    assert delta(before, after, "ssegate_streams_ended_total", cause="error:upstream_error") == 1
    assert delta(before, after, "ssegate_streams_ended_total", cause="error:upstream_timeout") == 1
    assert delta(before, after, "ssegate_streams_ended_total", cause="done") == 0
    assert delta(before, after, "ssegate_upstream_attempts_total") >= 2
    assert value(after, "ssegate_active_streams") == 0

