"""What a routing file's operator reads (CONTRACT §9, ``obs/metrics.py``, ``obs/stream_log.py``), end to end: a
real ``ssegate serve`` with a routing file in front of real fake upstreams on loopback, scraped over HTTP.

- ``ssegate_model_time_to_first_token_seconds{model,deployment}`` and ``ssegate_model_tokens_relayed_total``
  count each stream once, under the entry that answered (a wildcard as written, never the name asked for), with
  the time the upstream really took and the parts the client really received; a stream with no output adds no
  time to first token.
- The ``stream ended`` log line names the entry (``model_entry``) and deployment beside the model asked for;
  without a routing file the entry is ``*``.
- A real upstream ``429`` with ``Retry-After`` opens that deployment's cooldown at once, for that long (not
  ``COOLDOWN_S``), counted in ``ssegate_deployment_cooldowns_total``; no client sees the 429, and the deployment
  gets traffic again once it is over.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Reasoning, Script, Text, ToolCall
from tests.support.gateway import GatewayProcess, collect_events

MakeGateway = Callable[..., GatewayProcess]
HANG = 20.0  # seconds: only catches a hang
PART_EVENTS = ("message", "reasoning", "tool_call", "tool_call_delta")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def label(up: FakeUpstream) -> str:
    return f"openai:127.0.0.1:{up.port}/v1"


def stream(gw: GatewayProcess, model: str, content: str) -> tuple[httpx.Response, list[ServerSentEvent]]:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
    with httpx.stream("POST", gw.url + "/v1/chat/stream", content=body, timeout=HANG,
                      headers={"content-type": "application/json"}) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, collect_events(resp)


def scrape(gw: GatewayProcess) -> Samples:
    resp = httpx.get(gw.url + "/metrics", timeout=HANG)
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    return value(scrape(gw), name, **labels)


def stream_ended_line(gw: GatewayProcess, stream_id: str) -> dict[str, Any]:
    """The JSON ``stream ended`` line of ``stream_id`` in the gateway's log (written as the stream ends)."""
    deadline = time.monotonic() + HANG
    while True:
        for line in gw.log().splitlines():
            if line.startswith("{"):
                record: dict[str, Any] = json.loads(line)
                if record.get("msg") == "stream ended" and record.get("stream_id") == stream_id:
                    return record
        assert time.monotonic() < deadline, f"no 'stream ended' line for {stream_id}"
        time.sleep(0.05)  # polling another process's log file; bounded


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as a, FakeUpstream() as b:
        yield a, b


@pytest.fixture(scope="module")
def routed(pair: tuple[FakeUpstream, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[GatewayProcess]:
    a, b = pair
    path = tmp_path_factory.mktemp("routing-metrics") / "models.toml"
    path.write_text(f"""
[[models]]
name = "paced"
provider = "openai"
url = "{a.url}"
upstream_model = "paced-upstream"

[[models]]
name = "local/*"
provider = "openai"
url = "{b.url}"
""")
    # the failing stream below must not open a cooldown that would change what the other tests see
    with GatewayProcess({**FAST, "config": str(path), "log_level": "info", "cooldown_failures": 1000}) as gw:
        yield gw


# --- per model: time to first token, parts relayed ----------------------------------------------------------------
def test_per_model_time_to_first_token_and_tokens_count_what_the_client_got(
    routed: GatewayProcess, pair: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = pair
    paced, wild = {"model": "paced", "deployment": label(a)}, {"model": "local/*", "deployment": label(b)}
    ttft = "ssegate_model_time_to_first_token_seconds"
    tokens = "ssegate_model_tokens_relayed_total"
    before = scrape(routed)

    # reasoning, text and a tool call whose arguments come in two pieces, after 0.3 s of silence
    parts = [Reasoning("Thinking it over."), Text("Let me check."), ToolCall("lookup", ['{"q": ', '"x"}'])]
    resp, events = stream(routed, "paced", a.script(Script(parts=parts, ttft=0.3)))
    assert resp.status_code == 200 and resp.headers["x-ssegate-deployment"] == label(a)
    relayed = [e.event for e in events if e.event in PART_EVENTS]
    assert relayed == ["reasoning", "message", "tool_call", "tool_call_delta", "tool_call_delta"]
    resp, events = stream(routed, "local/llama3.2", b.script(Script(deltas=["x", "y"])))
    assert resp.status_code == 200
    assert [e.event for e in events if e.event in PART_EVENTS] == ["message", "message"]
    # a stream that fails before any output: counted as a stream, with no time to first token and no tokens
    resp, _ = stream(routed, "paced", a.script(Script(status=500)))
    assert resp.status_code == 502
    after = scrape(routed)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(f"{ttft}_count", **paced) == 1
    assert 0.3 <= delta(f"{ttft}_sum", **paced) < HANG  # the upstream's own wait, measured by the gateway
    assert delta(f"{ttft}_bucket", **paced, le="0.25") == 0 and delta(f"{ttft}_bucket", **paced, le="+Inf") == 1
    assert delta(tokens, **paced) == len(relayed)
    assert delta(f"{ttft}_count", **wild) == 1 and delta(tokens, **wild) == 2
    assert not any(dict(lbls).get("model") == "local/llama3.2" for _, lbls in after)  # bounded by the file
    assert delta("ssegate_model_streams_total", **paced, cause="done") == 1
    assert delta("ssegate_model_streams_total", **paced, cause="error:upstream_error") == 1
    assert delta("ssegate_tokens_relayed_total") == len(relayed) + 2  # the same parts, counted once overall
    assert delta("ssegate_time_to_first_token_seconds_count") == 2


# --- the log line -----------------------------------------------------------------------------------------------
def test_the_stream_log_names_the_entry_and_deployment_that_answered(
    routed: GatewayProcess, pair: tuple[FakeUpstream, FakeUpstream], make_gateway: MakeGateway
) -> None:
    a, b = pair
    resp, _ = stream(routed, "local/qwen2.5:7b", b.script(Script(deltas=["ok"])))
    assert resp.status_code == 200
    line = stream_ended_line(routed, resp.headers["x-stream-id"])
    assert (line["model"], line["model_entry"], line["deployment"]) == ("local/qwen2.5:7b", "local/*", label(b))
    assert line["outcome"] == "done" and line["tokens"] == 1
    resp, _ = stream(routed, "paced", a.script(Script(deltas=["ok"])))
    line = stream_ended_line(routed, resp.headers["x-stream-id"])
    assert (line["model"], line["model_entry"], line["deployment"]) == ("paced", "paced", label(a))

    # without a routing file: the settings' implicit entry, "*"
    plain = make_gateway({"provider": "openai", "upstream_url": a.url, "model": "plain-model", "log_level": "info"})
    resp, _ = stream(plain, "plain-model", a.script(Script(deltas=["ok"])))
    assert resp.status_code == 200
    line = stream_ended_line(plain, resp.headers["x-stream-id"])
    assert (line["model"], line["model_entry"], line["deployment"]) == ("plain-model", "*", label(a))


# --- a cooldown from a real 429 -----------------------------------------------------------------------------------
def test_an_upstream_429_with_retry_after_cools_the_deployment_down_for_that_long(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """COOLDOWN_FAILURES is out of reach and COOLDOWN_S is a minute: only the 429's ``Retry-After: 3`` can open
    the cooldown, and only it can make it end within seconds."""
    retry_after = 3.0
    limited = Script(status=429, headers={"Retry-After": str(int(retry_after))})
    ok = Script(deltas=["ok"])
    with FakeUpstream(default=limited) as a, FakeUpstream(default=ok) as b:
        path = tmp_path / "models.toml"
        path.write_text(f"""
[[models]]
name = "pair"
provider = "openai"
url = "{a.url}"

[[models]]
name = "pair"
provider = "openai"
url = "{b.url}"
""")
        gw = make_gateway({"config": str(path), "cooldown_failures": 1000, "cooldown_window_s": 60,
                           "cooldown_s": 60, "commit_timeout_s": 5.0})
        dep_a = {"model": "pair", "deployment": label(a)}
        marker = uuid.uuid4().hex

        # streams until one was sent to A (least busy, ties round-robin: one of the first two): it answers 429,
        # and the stream goes on to B at once; the client sees a normal answer
        for i in range(4):
            resp, events = stream(gw, "pair", f"{marker} {i}")
            assert resp.status_code == 200, resp.text
            assert [e.event for e in events] == ["start", "message", "done"]
            assert resp.headers["x-ssegate-deployment"] == label(b)
            if a.records():
                break
        else:
            raise AssertionError("no stream was sent to the first deployment")
        opened = time.monotonic()
        [refused] = a.records()
        assert refused.status == 429
        samples = scrape(gw)
        assert value(samples, "ssegate_deployment_cooldowns_total", **dep_a) == 1
        assert value(samples, "ssegate_deployment_cooling_down", **dep_a) == 1
        assert value(samples, "ssegate_deployment_errors_total", **dep_a, code="rate_limited") == 1
        assert value(samples, "ssegate_deployment_cooldowns_total", model="pair", deployment=label(b)) == 0

        # while it cools down, A is not even tried
        for i in range(4):
            resp, _ = stream(gw, "pair", f"{marker} cooling {i}")
            assert resp.status_code == 200 and resp.headers["x-ssegate-deployment"] == label(b)
        assert len(a.records()) == 1
        assert metric(gw, "ssegate_deployment_attempts_total", **dep_a) == 1

        # once Retry-After is over (well before COOLDOWN_S), a trial stream goes to A, which now answers
        a.default = ok
        deadline = opened + HANG
        while len(a.records()) == 1:
            assert time.monotonic() < deadline, "no traffic again: the cooldown was not Retry-After long"
            resp, _ = stream(gw, "pair", f"{marker} probe")
            assert resp.status_code == 200
            time.sleep(0.1)  # a stream now and then, as traffic would come; bounded by the deadline
        assert time.monotonic() - opened >= retry_after * 0.9
        assert a.records()[-1].status == 200
        samples = scrape(gw)
        assert value(samples, "ssegate_deployment_cooling_down", **dep_a) == 0
        assert value(samples, "ssegate_deployment_cooldowns_total", **dep_a) == 1  # the trial closed it
        assert value(samples, "ssegate_model_streams_total", **dep_a, cause="done") >= 1
