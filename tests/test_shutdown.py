"""Graceful shutdown (CONTRACT §8) of a real ``ssegate serve`` on SIGTERM, with streams running: it stops
accepting, lets streams finish for ``SHUTDOWN_GRACE_S``, ends the rest with a retryable ``shutting_down`` error
event, closes their upstream connections, and exits within grace + 2 s."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, chat_body, sse_events

GRACE = 1.5


@dataclass
class Client:
    """One client in a thread: reads its stream to the end, says when it has ``ready_after`` deltas."""

    method: str
    url: str
    body: bytes | None = None
    ready_after: int = 1
    events: list[ServerSentEvent] = field(default_factory=list)
    ended_at: float | None = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with httpx.stream(self.method, self.url, content=self.body, timeout=30,
                              headers={"content-type": "application/json"}) as resp:
                assert resp.status_code == 200, resp.read()
                for event in sse_events(resp.iter_text()):
                    self.events.append(event)
                    if sum(e.event == "message" for e in self.events) >= self.ready_after:
                        self.ready.set()
            self.ended_at = time.monotonic()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ready.set()

    def terminal(self) -> ServerSentEvent:
        assert self.error is None, self.error
        assert self.events and self.events[-1].event in ("done", "error"), [e.event for e in self.events]
        assert sum(e.event in ("done", "error") for e in self.events) == 1
        return self.events[-1]


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:  # its own: its open-connection count is this test's alone
        yield up


def test_sigterm_lets_streams_finish_then_ends_the_rest_and_exits(fake: FakeUpstream) -> None:
    gw = GatewayProcess({**FAST, "provider": "openai", "upstream_url": fake.url, "model": "fake-model",
                         "shutdown_grace_s": GRACE, "idle_timeout_s": 30.0, "heartbeat_s": 0.5}).start()
    try:
        stalled = [fake.script(Script(deltas=["a ", "b "], fault=Fault.STALL, fault_after=2)) for _ in range(3)]
        short = fake.script(Script(deltas=[f"s{i} " for i in range(6)], delay=0.08))  # ends ~0.4 s into the grace
        clients = [Client("POST", gw.url + "/v1/chat/stream", chat_body(p), ready_after=2) for p in stalled]
        clients.append(Client("POST", gw.url + "/v1/chat/stream", chat_body(short), ready_after=1))
        threads = [threading.Thread(target=c.run) for c in clients]
        for t in threads:
            t.start()
        for c in clients:
            assert c.ready.wait(15)
        # a second client follows the first stalled stream (a resume): it must get the terminal event too
        sid = clients[0].events[0].json()["stream_id"]
        follower = Client("GET", f"{gw.url}/v1/streams/{sid}?after=0", ready_after=2)
        threads.append(threading.Thread(target=follower.run))
        threads[-1].start()
        assert follower.ready.wait(15)

        sent = time.monotonic()
        gw.signal(signal.SIGTERM)

        # it stops accepting at once (the listener closes), while the streams go on
        deadline = sent + 1.0
        while True:
            try:
                httpx.get(gw.url + "/healthz", timeout=1)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # refused, or reset: a connection still in the backlog when the listener closed is reset
                break
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.01)  # polling for the listener to close; bounded
        assert all(c.ended_at is None for c in [*clients[:3], follower])

        for t in threads:
            t.join(GRACE + 10)
        code = gw.wait(GRACE + 10)
        exited = time.monotonic()
    finally:
        output = gw.log()
        gw.kill()
        gw.stop()

    # the short stream finished normally within the grace
    done = clients[3].terminal()
    assert done.event == "done" and done.json()["finish_reason"] == "stop"
    assert "".join(e.json()["delta"] for e in clients[3].events if e.event == "message") == "s0 s1 s2 s3 s4 s5 "

    # the others ran for the grace, then got a retryable shutting_down error event
    for c in [*clients[:3], follower]:
        err = c.terminal()
        assert err.event == "error", err.data
        assert err.json()["error"]["code"] == "shutting_down"
        assert err.json()["error"]["retryable"] is True
        assert c.ended_at is not None and c.ended_at - sent >= GRACE - 0.2

    # the gateway closed their upstream connections itself, and left none open
    for prompt in stalled:
        rec = fake.wait_closed(prompt, timeout=1)
        assert rec.closed_by == "client" and not rec.finished
        assert rec.closed_at is not None and rec.closed_at - sent <= GRACE + 2
    assert fake.open_connections() == 0

    # and the process was gone within grace + 2 s (uvicorn re-raises the SIGTERM it handled)
    assert code in (0, -signal.SIGTERM), output
    assert exited - sent <= GRACE + 2, output
