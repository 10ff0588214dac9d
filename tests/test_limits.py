"""Admission control (CONTRACT §4): per-key concurrent streams and requests per minute → 429 ``rate_limited``,
the global cap → 503 ``overloaded``, both with ``Retry-After``; slots come back when a stream ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ssegate.core.limits import TokenBucket
from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.support.gateway import GatewayProcess, chat_body, sse_events
from tests.support.parallel import start_all
from tests.support.resume import script

K1 = "sk-limits-one-0123456789"
K2 = "sk-limits-two-0123456789"
STALL = script(["held"], stall=True)  # commits on its first delta, then never ends by itself
QUICK = {**FAST, "demo_ttft_s": 0.0, "demo_tokens_per_s": 2000, "api_keys": f"{K1},{K2}"}


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    capped = GatewayProcess({**QUICK, "max_streams_per_key": 2, "max_streams": 3})
    per_minute = GatewayProcess({**QUICK, "requests_per_minute": 3})
    start_all(capped, per_minute)
    yield capped, per_minute
    capped.stop()
    per_minute.stop()


@pytest.fixture
def gateways(started: tuple[GatewayProcess, GatewayProcess]) -> tuple[GatewayProcess, GatewayProcess]:
    """The module's gateways, once the streams of the previous test have ended (its clients just left)."""
    for gw in started:
        wait_idle(gw)
    return started


def active_streams(gw: GatewayProcess) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    return next(s.value for f in text_string_to_metric_families(text) if f.name == "ssegate_active_streams"
                for s in f.samples)


def wait_idle(gw: GatewayProcess, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while active_streams(gw) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the gateway's own count; bounded
    assert active_streams(gw) == 0


class Held:
    """A stream held open after its first delta, read on demand."""

    def __init__(self, stack: contextlib.ExitStack, gw: GatewayProcess, key: str, prompt: str = STALL) -> None:
        self.gw = gw
        self.key = key
        self.resp = stack.enter_context(httpx.stream(
            "POST", gw.url + "/v1/chat/stream", content=chat_body(prompt), timeout=15,
            headers={"content-type": "application/json", "Authorization": f"Bearer {key}"}))
        self.status = self.resp.status_code
        self.events: Iterator[ServerSentEvent] = iter(())
        if self.status == 200:
            self.events = sse_events(self.resp.iter_text())
            assert next(self.events).event == "start"
            assert next(self.events).json() == {"delta": "held"}
        else:
            self.resp.read()

    @property
    def stream_id(self) -> str:
        return self.resp.headers["x-stream-id"]

    def cancel_and_finish(self) -> ServerSentEvent:
        """Cancel it and read up to its terminal event: by then the gateway has released its slot."""
        resp = httpx.post(f"{self.gw.url}/v1/streams/{self.stream_id}/cancel",
                          headers={"Authorization": f"Bearer {self.key}"}, timeout=10)
        assert resp.status_code == 202
        last = list(self.events)[-1]
        assert last.event == "done" and last.json()["finish_reason"] == "cancelled"
        return last


def assert_refused(held: Held, status: int, code: str) -> None:
    assert held.status == status, held.resp.text
    body = held.resp.json()
    assert body["error"]["code"] == code and body["error"]["retryable"] is True
    assert 1 <= int(held.resp.headers["retry-after"]) <= 60


def test_the_next_concurrent_stream_of_a_key_gets_429_and_the_global_cap_503(
    gateways: tuple[GatewayProcess, GatewayProcess],
) -> None:
    gw, _ = gateways
    with contextlib.ExitStack() as stack:
        a1, a2 = Held(stack, gw, K1), Held(stack, gw, K1)
        assert (a1.status, a2.status) == (200, 200)
        assert_refused(Held(stack, gw, K1), 429, "rate_limited")  # K1's third
        b1 = Held(stack, gw, K2)
        assert b1.status == 200  # another key is not affected by K1's limit
        assert_refused(Held(stack, gw, K2), 503, "overloaded")  # the fourth stream of the gateway
        assert_refused(Held(stack, gw, K1), 503, "overloaded")  # the global cap comes first

        # a stream that ends gives its slot back, to its key and to the gateway
        a1.cancel_and_finish()
        a3 = Held(stack, gw, K1)
        assert a3.status == 200
        assert_refused(Held(stack, gw, K1), 503, "overloaded")
        b1.cancel_and_finish()
        assert_refused(Held(stack, gw, K1), 429, "rate_limited")
        assert Held(stack, gw, K2).status == 200


def test_a_disconnected_stream_gives_its_slot_back(gateways: tuple[GatewayProcess, GatewayProcess]) -> None:
    gw, _ = gateways
    with contextlib.ExitStack() as stack:
        held = [Held(stack, gw, K2), Held(stack, gw, K2)]
        assert [h.status for h in held] == [200, 200]
        with contextlib.ExitStack() as inner:
            assert_refused(Held(inner, gw, K2), 429, "rate_limited")
        held[0].resp.close()  # the client goes away
        # the gateway notices the disconnect on its own time: poll (bounded) until K2 may stream again
        deadline = time.monotonic() + 5
        while True:
            with contextlib.ExitStack() as inner:
                again = Held(inner, gw, K2, script(["held"]))
            if again.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.01)  # polling; bounded by the deadline
        assert again.status == 200


def test_requests_per_minute(gateways: tuple[GatewayProcess, GatewayProcess]) -> None:
    _, gw = gateways
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            assert Held(stack, gw, K1, script(["held"])).status == 200
        refused = Held(stack, gw, K1, script(["held"]))
        assert_refused(refused, 429, "rate_limited")
        # 3 a minute: the next one is there ~20 s after the first was taken
        assert 15 <= int(refused.resp.headers["retry-after"]) <= 20
        assert Held(stack, gw, K2, script(["held"])).status == 200  # each key has its own minute


def test_token_bucket_refills_at_the_rate_per_minute() -> None:
    bucket = TokenBucket(3, 60.0, now=100.0)
    for _ in range(3):
        assert bucket.wait_time(100.0) == 0
        bucket.take(100.0)
    assert bucket.wait_time(100.0) == pytest.approx(20.0)
    assert bucket.wait_time(110.0) == pytest.approx(10.0)
    assert bucket.wait_time(120.0) == 0
    assert not bucket.full(120.0)
    assert bucket.full(160.0)
    assert bucket.tokens == 3  # never more than the capacity, however long it waited
