"""Client-side helpers for the resume tests: read part of a stream then drop the connection, resume, check."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ssegate.sse import ServerSentEvent
from tests.support.gateway import chat_body, sse_events

__all__ = ["assert_a_drop_cancels", "assert_whole", "auth", "ended", "read", "resume", "script", "start"]


def auth(key: str = "k1") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def script(deltas: list[str], **spec: Any) -> str:
    """A prompt that the embedded demo model plays exactly (``/script``)."""
    return "/script " + json.dumps({"deltas": deltas, **spec})


def read(method: str, url: str, *, n: int | None = None, key: str = "k1", timeout: float = 15.0,
         **kw: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    """Read ``n`` events (all when ``None``), then close the connection (a client disconnect)."""
    headers = {**auth(key), **kw.pop("headers", {})}
    events: list[ServerSentEvent] = []
    with httpx.stream(method, url, headers=headers, timeout=timeout, **kw) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, events
        for event in sse_events(resp.iter_text()):
            events.append(event)
            if n is not None and len(events) >= n:
                break
    return resp, events


def start(base: str, prompt: str, *, n: int | None = None, key: str = "k1",
          **fields: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return read("POST", base + "/v1/chat/stream", n=n, key=key, content=chat_body(prompt, **fields),
                headers={"content-type": "application/json"})


def resume(base: str, last_id: str, *, style: str = "header", n: int | None = None,
           key: str = "k1") -> tuple[httpx.Response, list[ServerSentEvent]]:
    """Resume after ``last_id`` (``<stream_id>:<seq>``): ``header`` (Last-Event-ID on /v1/streams), ``after``
    (``?after=``) or ``chat`` (Last-Event-ID on ``GET /chat``, as a browser EventSource reconnects)."""
    sid, _, seq = last_id.rpartition(":")
    if style == "header":
        return read("GET", f"{base}/v1/streams/{sid}", n=n, key=key, headers={"Last-Event-ID": last_id})
    if style == "after":
        return read("GET", f"{base}/v1/streams/{sid}", n=n, key=key, params={"after": seq})
    assert style == "chat"
    return read("GET", f"{base}/chat", n=n, key=key, params={"q": "ignored"}, headers={"Last-Event-ID": last_id})


def assert_whole(events: list[ServerSentEvent], deltas: list[str], finish_reason: str = "stop") -> None:
    """Ids ``<sid>:1..N`` without gap or duplicate, ``start`` first, one terminal last, the full text."""
    assert events, "no events"
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    assert events[0].event == "start"
    assert all(e.event == "message" for e in events[1:-1]), [e.event for e in events]
    assert events[-1].event == "done", events[-1].data
    assert events[-1].json()["finish_reason"] == finish_reason
    assert "".join(e.json()["delta"] for e in events[1:-1]) == "".join(deltas)


def ended(base: str, cause: str) -> float:
    """How many streams the gateway at ``base`` ended with ``cause`` (``ssegate_streams_ended_total``)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "ssegate_streams_ended_total" and sample.labels.get("cause") == cause)


def assert_a_drop_cancels(base: str, timeout: float = 15.0) -> None:
    """The control for tests of a client's own resume grace: on the gateway at ``base``, a request that asks for
    none loses its generation when its connection drops (the server's own grace is 0), so a client that resumes
    there owes it to the grace it asked for."""
    before = ended(base, "cancelled:disconnect")
    _, events = read("POST", base + "/v1/chat/stream", n=3, headers={"content-type": "application/json"},
                     content=chat_body(script([f"c{i} " for i in range(200)], delay=0.02)))
    assert [e.event for e in events] == ["start", "message", "message"]
    deadline = time.monotonic() + timeout
    while ended(base, "cancelled:disconnect") < before + 1:
        assert time.monotonic() < deadline, "a dropped stream without a grace was not cancelled"
        time.sleep(0.05)  # polling another process's counters; bounded
