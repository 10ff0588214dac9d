"""The reference deployment (CONTRACT §6, deploy/nginx.conf) with real nginx in front of two real replicas.

nginx runs the reference file with only its addresses changed, and ``proxy_read_timeout`` cut from 60 s to 1 s
so that a slow first token (2.5 s) outlasts it: only the gateway's heartbeats (every 0.3 s) keep that stream
alive, as the 15 s heartbeats do under the 60 s of the reference. The replicas relay a fake upstream whose
connection records show when the generation really stopped.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from ssegate.settings import Settings
from ssegate.sse import SSEDecoder
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, chat_body, sse_events
from tests.support.nginx import REFERENCE, Nginx
from tests.support.parallel import start_all

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.3
READ_TIMEOUT = "proxy_read_timeout 1s;"


@dataclass
class Edge:
    nginx: Nginx
    replicas: tuple[GatewayProcess, GatewayProcess]
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def edge(upstream: FakeUpstream) -> Iterator[Edge]:
    settings = {**FAST, "provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                "heartbeat_s": HEARTBEAT_S, "commit_timeout_s": 0.2, "idle_timeout_s": 30.0, "send_timeout_s": 10.0}
    replicas = start_all(GatewayProcess(settings), GatewayProcess(settings))
    try:
        with Nginx([r.port for r in replicas], {"proxy_read_timeout 60s;": READ_TIMEOUT}) as nginx:
            yield Edge(nginx, replicas, upstream)
    finally:
        for r in replicas:
            r.stop()


@dataclass
class Arrivals:
    """What a client saw, with the time (monotonic) each event or ping arrived."""

    status: int = 0
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (at, event, data)
    pings: list[float] = field(default_factory=list)

    @property
    def deltas(self) -> list[float]:
        return [at for at, kind, _ in self.events if kind == "message"]

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.events]


def watch(base: str, prompt: str, out: Arrivals, *, stop_after: int | None = None) -> None:
    """Stream ``prompt`` from ``base``, time-stamping what arrives; close after ``stop_after`` deltas."""
    with httpx.stream("POST", base + "/v1/chat/stream", content=chat_body(prompt), timeout=30,
                      headers={"content-type": "application/json"}) as resp:
        out.status = resp.status_code
        decoder = SSEDecoder()
        for chunk in resp.iter_text():
            now = time.monotonic()
            seen = decoder.comments
            for ev in decoder.feed(chunk):
                out.events.append((now, ev.event, ev.data))
            out.pings += [now] * (decoder.comments - seen)
            if stop_after is not None and len(out.deltas) >= stop_after:
                return


def test_nginx_passes_each_event_on_while_the_upstream_is_still_generating(edge: Edge) -> None:
    """No buffering anywhere: the first deltas arrive although the upstream has not finished (it never does)."""
    prompt = edge.upstream.script(Script(deltas=["one ", "two "], fault=Fault.STALL, fault_after=2))
    out = Arrivals()
    watch(edge.nginx.url, prompt, out, stop_after=2)
    assert out.status == 200
    assert out.kinds()[:3] == ["start", "message", "message"]
    rec = edge.upstream.records(prompt)[0]
    assert rec.deltas_sent == 2 and not rec.finished  # the upstream is still "generating" ...
    assert rec.closed_at is None or rec.closed_at > out.deltas[1]  # ... and was still connected then


def test_arrival_times_through_nginx_track_the_direct_ones(edge: Edge) -> None:
    gap = 0.15
    deltas = [f"d{i} " for i in range(8)]
    direct, proxied = Arrivals(), Arrivals()
    threads = [
        threading.Thread(target=watch, args=(edge.replicas[0].url, edge.upstream.script(Script(deltas, delay=gap)),
                                             direct)),
        threading.Thread(target=watch, args=(edge.nginx.url, edge.upstream.script(Script(deltas, delay=gap)),
                                             proxied)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert direct.status == proxied.status == 200
    assert len(direct.deltas) == len(proxied.deltas) == len(deltas)
    offsets_direct = [t - direct.deltas[0] for t in direct.deltas]
    offsets_proxied = [t - proxied.deltas[0] for t in proxied.deltas]
    # the upstream spaces the deltas 0.15 s apart: through nginx they keep that spacing (a buffering proxy
    # would hand them over in one lump at the end); the tolerance only absorbs scheduling noise
    assert offsets_proxied[-1] >= 0.5 * gap * (len(deltas) - 1)
    for d, p in zip(offsets_direct, offsets_proxied, strict=True):
        assert abs(d - p) < 0.4, (offsets_direct, offsets_proxied)


def test_heartbeats_keep_a_slow_first_token_alive_past_proxy_read_timeout(edge: Edge) -> None:
    prompt = edge.upstream.script(Script(deltas=["late ", "but ", "here"], ttft=2.5))
    out = Arrivals()
    started = time.monotonic()
    watch(edge.nginx.url, prompt, out)
    assert out.status == 200
    assert out.kinds() == ["start", "message", "message", "message", "done"]
    assert out.deltas[0] - started >= 2.0  # the first token came after nginx's 1 s read timeout ...
    assert len(out.pings) >= 3  # ... and pings filled the silence before it
    assert "upstream timed out" not in edge.nginx.error_log()


def test_a_client_disconnect_through_nginx_closes_the_upstream_promptly(edge: Edge) -> None:
    prompt = edge.upstream.script(Script(deltas=["a ", "b "], fault=Fault.STALL, fault_after=2))
    out = Arrivals()
    watch(edge.nginx.url, prompt, out, stop_after=2)  # returns by closing the connection to nginx
    left = time.monotonic()
    rec = edge.upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_by == "client"  # the gateway hung up, not the fake
    assert rec.closed_at is not None and rec.closed_at - left < 1.0
    assert not rec.finished


def test_streams_are_spread_over_both_replicas(edge: Edge) -> None:
    """least_conn: while one stream is open, the next one goes to the other replica."""
    prompts = [edge.upstream.script(Script(deltas=["x "], fault=Fault.STALL, fault_after=1)) for _ in range(2)]
    with httpx.Client(base_url=edge.nginx.url, timeout=15) as client:
        opened = []
        readers = []  # kept referenced: a reader that is collected closes its stream
        for prompt in prompts:
            resp = client.send(client.build_request("POST", "/v1/chat/stream", content=chat_body(prompt),
                                                    headers={"content-type": "application/json"}), stream=True)
            opened.append(resp)
            readers.append(sse_events(resp.iter_text()))
            assert [next(readers[-1]).event for _ in range(2)] == ["start", "message"]
        try:
            active = [active_streams(r) for r in edge.replicas]
        finally:
            for resp in opened:
                resp.close()
    assert active == [1, 1]


def active_streams(gw: GatewayProcess) -> float:
    for line in httpx.get(gw.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("ssegate_active_streams "):
            return float(line.split()[1])
    raise AssertionError("no ssegate_active_streams")


def test_the_access_log_keeps_stream_tokens_out(edge: Edge) -> None:
    """deploy/nginx.conf logs $uri, not the query string, so a ?token= never reaches the log."""
    resp = httpx.get(edge.nginx.url + "/chat", params={"q": "hi", "token": "v1.secret-token-value.sig"}, timeout=15)
    assert resp.status_code == 200
    deadline = time.monotonic() + 5
    while "GET /chat " not in edge.nginx.access_log() and time.monotonic() < deadline:
        time.sleep(0.02)  # nginx writes its access log when the request ends; bounded polling
    log = edge.nginx.access_log()
    assert "GET /chat " in log
    assert "secret-token-value" not in log


def test_the_reference_timeouts_agree_with_the_gateway_defaults() -> None:
    """deploy/nginx.conf and the settings' defaults must not drift apart (docs/deploying.md, "Timeouts")."""
    conf = REFERENCE.read_text()
    block = re.search(r"location ~ \^/\(chat[^{]*\{(.*?)\n    \}", conf, re.S)
    assert block is not None, "the event-stream location is gone from deploy/nginx.conf"
    streams = block.group(1)

    def seconds(directive: str, text: str) -> float:
        found = re.search(rf"^\s*{directive} (\d+)s;", text, re.M)
        assert found is not None, f"no {directive} in {text[:200]}"
        return float(found.group(1))

    default = {name: field.default for name, field in Settings.model_fields.items()}
    assert "proxy_buffering off;" in streams
    assert seconds("proxy_read_timeout", streams) >= 2 * default["heartbeat_s"]
    assert seconds("proxy_read_timeout", streams) > default["commit_timeout_s"]
    assert seconds("proxy_send_timeout", streams) > default["send_timeout_s"]
    assert seconds("send_timeout", streams) > default["send_timeout_s"]
    assert seconds("keepalive_timeout", conf) < 75  # uvicorn's timeout_keep_alive in ssegate.serve
    body = re.search(r"client_max_body_size (\d+)m;", conf)
    assert body is not None and int(body.group(1)) * 1024 * 1024 == default["max_body_bytes"]


def test_a_body_over_the_limit_gets_ssegate_s_json_error_from_nginx(edge: Edge) -> None:
    """nginx refuses a body over client_max_body_size itself: with the JSON error ssegate would send (its clients
    and the OpenAI SDK read ``error.message``), not nginx's HTML page; nothing reaches a replica's upstream."""
    before = len(edge.upstream.records())
    resp = httpx.post(edge.nginx.url + "/v1/chat/completions", content=b"x" * (20 * 1024 * 1024 + 1),
                      headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 413
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == "payload_too_large" and "20 MiB" in err["message"]
    assert len(edge.upstream.records()) == before


@pytest.mark.parametrize("path", ["/v1/responses", "/api/chat"])
def test_the_other_event_streams_take_the_stream_location(path: str) -> None:
    """The Responses API and the AI SDK stream events too: the reference config gives them the unbuffered
    location, not the short-request one."""
    conf = REFERENCE.read_text()
    pattern = re.search(r"location ~ (\^/\([^ ]*) \{", conf)
    assert pattern is not None
    assert re.match(pattern.group(1), path), (pattern.group(1), path)
