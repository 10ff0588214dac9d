"""The Python client (``ssegate.client``), sync and async, against real gateways over loopback.

Connection drops are real: a loopback TCP proxy (``tests/support/proxy.py``) closes the connection after
a number of response bytes, in the middle of the body, and the client must resume with
``GET /v1/streams/{id}?after=<seq>`` and deliver every delta exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ssegate.client import AsyncClient, Client, Delta, Done, GatewayUnreachable, Start, StreamEvent
from ssegate.errors import (
    GatewayError,
    GenerationLost,
    InvalidRequest,
    NotFound,
    Overloaded,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, free_port
from tests.support.proxy import CuttingProxy
from tests.support.resume import assert_a_drop_cancels, ended

# The connection is dropped mid-answer, so the generation must outlive its client for a while (§5).
GRACE = {**FAST, "detach_grace_s": 30, "shutdown_grace_s": 1}


def script(**spec: Any) -> str:
    return "/script " + json.dumps(spec)


# Word pieces with multi-byte characters, so that a cut can also fall inside a UTF-8 sequence.
DELTAS = [f" w{i}-é日本🙂" for i in range(120)]
ANSWER = "".join(DELTAS)


@pytest.fixture(scope="module")
def demo_grace() -> Iterator[GatewayProcess]:
    """The demo model, with a resume grace: a dropped client's generation keeps going."""
    with GatewayProcess({**GRACE, "demo_ttft_s": 0.05}) as gw:
        yield gw


@pytest.fixture(scope="module")
def demo_no_grace() -> Iterator[GatewayProcess]:
    """The demo model behind a gateway with no grace of its own (DETACH_GRACE_S=0, the default): a dropped
    connection cancels the generation unless the request asked for a resume grace."""
    with GatewayProcess({**FAST, "detach_grace_s": 0, "shutdown_grace_s": 1, "demo_ttft_s": 0.05}) as gw:
        assert_a_drop_cancels(gw.url)  # the control: a request without a grace of its own loses its generation
        yield gw


@pytest.fixture(scope="module")
def relay_grace(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """The fake OpenAI-compatible upstream behind a gateway with a resume grace."""
    with GatewayProcess({**GRACE, "provider": "openai", "upstream_url": upstream.url, "model": "fake-model"}) as gw:
        yield gw


@pytest.fixture
def proxy() -> Iterator[Callable[[GatewayProcess], CuttingProxy]]:
    made: list[CuttingProxy] = []

    def make(gw: GatewayProcess) -> CuttingProxy:
        p = CuttingProxy(gw.port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def assert_sequence(events: list[StreamEvent], text: str) -> None:
    """Start, the deltas, one Done; seqs 1, 2, 3, ... with no gap and no duplicate."""
    assert isinstance(events[0], Start)
    assert isinstance(events[-1], Done)
    assert all(isinstance(e, Delta) for e in events[1:-1])
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert "".join(e.text for e in events if isinstance(e, Delta)) == text


# --- streaming -------------------------------------------------------------------------------------------
def test_sync_stream_yields_typed_events(demo_gateway: GatewayProcess) -> None:
    with Client(demo_gateway.url) as client:
        stream = client.stream(script(deltas=["Hel", "lo", " wörld"], prompt_tokens=7), model="m1")
        events = list(stream)
    assert_sequence(events, "Hello wörld")
    start, done = events[0], events[-1]
    assert isinstance(start, Start) and isinstance(done, Done)
    assert start.model == "m1" and start.stream_id == stream.stream_id
    assert done.finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (7, 3)
    assert stream.text == "Hello wörld" and stream.usage == done.usage and stream.resumes == 0
    assert done.raw.id == f"{stream.stream_id}:5" and done.raw.event == "done"


async def test_async_stream_yields_typed_events(demo_gateway: GatewayProcess) -> None:
    async with AsyncClient(demo_gateway.url) as client:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": script(deltas=["a", "b"])}]
        async with client.stream(messages) as stream:
            events = [ev async for ev in stream]
    assert_sequence(events, "ab")
    assert stream.finish_reason == "stop"


def test_read_text_and_explicit_resume(demo_gateway: GatewayProcess) -> None:
    with Client(demo_gateway.url) as client:
        stream = client.stream(script(deltas=list("abcdef")))
        assert stream.read_text() == "abcdef"
        sid = stream.stream_id
        assert sid is not None
        rest = list(client.resume(sid, after=3))  # after start, "a", "b"
        assert [e.seq for e in rest] == [4, 5, 6, 7, 8]
        assert "".join(e.text for e in rest if isinstance(e, Delta)) == "cdef"
        assert list(client.resume(sid, after=8)) == []  # 204: nothing left


# --- resume across real connection drops ----------------------------------------------------------------
@pytest.mark.parametrize("cuts", [(700,), (400, 900, 1500)], ids=["one-drop", "three-drops"])
def test_sync_resume_across_dropped_connections_gives_the_exact_text(
    demo_grace: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy], cuts: tuple[int, ...]
) -> None:
    px = proxy(demo_grace)
    px.cut_next(*cuts)
    with Client(px.url, backoff_s=0.01) as client:
        stream = client.stream(script(deltas=DELTAS, delay=0.005))
        events = list(stream)
    assert_sequence(events, ANSWER)
    assert stream.text == ANSWER
    assert stream.resumes == len(cuts)
    # the drops were real: every cut connection ended mid-body, and the client came back each time
    assert [c.cut for c in px.conns] == [True] * len(cuts) + [False]
    done = events[-1]
    assert isinstance(done, Done) and done.usage.completion_tokens == len(DELTAS)


async def test_async_resume_across_dropped_connections_gives_the_exact_text(
    demo_grace: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy]
) -> None:
    px = proxy(demo_grace)
    px.cut_next(600, 1300)
    async with AsyncClient(px.url, backoff_s=0.01) as client:
        stream = client.stream(script(deltas=DELTAS, delay=0.005))
        events = [ev async for ev in stream]
    assert_sequence(events, ANSWER)
    assert stream.resumes == 2
    assert [c.cut for c in px.conns] == [True, True, False]


def test_regression_sync_resume_relied_on_the_servers_grace(
    demo_no_grace: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy]
) -> None:
    """Every resume test above runs against a gateway whose own grace is 30 s, so they would pass even if the
    client asked for none. Here the gateway's grace is 0: the generation outlives the drop only because the
    client asks for ``DEFAULT_GRACE_S`` itself."""
    cancelled = ended(demo_no_grace.url, "cancelled:disconnect")
    px = proxy(demo_no_grace)
    px.cut_next(700)
    with Client(px.url, backoff_s=0.01) as client:
        stream = client.stream(script(deltas=DELTAS, delay=0.005))
        events = list(stream)
    assert_sequence(events, ANSWER)
    assert stream.resumes == 1 and [c.cut for c in px.conns] == [True, False]
    assert ended(demo_no_grace.url, "cancelled:disconnect") == cancelled  # the drop cancelled nothing


async def test_regression_async_resume_relied_on_the_servers_grace(
    demo_no_grace: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy]
) -> None:
    """The same for ``AsyncClient``, with two drops."""
    cancelled = ended(demo_no_grace.url, "cancelled:disconnect")
    px = proxy(demo_no_grace)
    px.cut_next(600, 1300)
    async with AsyncClient(px.url, backoff_s=0.01) as client:
        stream = client.stream(script(deltas=DELTAS, delay=0.005))
        events = [ev async for ev in stream]
    assert_sequence(events, ANSWER)
    assert stream.resumes == 2 and [c.cut for c in px.conns] == [True, True, False]
    assert ended(demo_no_grace.url, "cancelled:disconnect") == cancelled


def test_resume_through_a_relayed_upstream(
    upstream: FakeUpstream, relay_grace: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy]
) -> None:
    """The same with a real (fake) OpenAI-compatible upstream behind the gateway."""
    prompt = upstream.script(Script(deltas=DELTAS, delay=0.005))
    px = proxy(relay_grace)
    px.cut_next(800)
    with Client(px.url, backoff_s=0.01) as client:
        stream = client.stream(prompt)
        events = list(stream)
    assert_sequence(events, ANSWER)
    assert stream.resumes == 1 and px.conns[0].cut


def test_resume_gives_up_after_bounded_retries(
    demo_grace: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy]
) -> None:
    px = proxy(demo_grace)
    px.cut_next(700)
    with Client(px.url, backoff_s=0.01, max_retries=3) as client:
        stream = client.stream(script(deltas=DELTAS, delay=0.01))
        it = iter(stream)
        assert isinstance(next(it), Start)
        px.refuse()  # the gateway is now unreachable: every resume is refused
        with pytest.raises(GatewayUnreachable, match="could not resume") as info:
            for _ in it:
                pass
    assert info.value.retryable
    assert stream.resumes == 3
    assert len(px.conns) == 1


def test_a_stream_the_gateway_no_longer_has_is_generation_lost(
    demo_grace: GatewayProcess, demo_gateway: GatewayProcess, proxy: Callable[[GatewayProcess], CuttingProxy]
) -> None:
    """After a drop, the resume reaches a gateway that never saw the stream (404): GenerationLost."""
    px = proxy(demo_grace)
    px.cut_next(700)
    with Client(px.url, backoff_s=0.01) as client:
        stream = client.stream(script(deltas=DELTAS, delay=0.01))
        it = iter(stream)
        assert isinstance(next(it), Start)
        px.target_port = demo_gateway.port  # the next connections go to another gateway
        with pytest.raises(GenerationLost, match="can no longer be resumed"):
            for _ in it:
                pass


# --- typed errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("upstream_error", UpstreamError),
        ("upstream_timeout", UpstreamTimeout),
        ("rate_limited", RateLimited),
        ("overloaded", Overloaded),
        ("generation_lost", GenerationLost),
    ],
)
def test_an_error_event_raises_its_typed_exception(
    demo_gateway: GatewayProcess, code: str, cls: type[GatewayError]
) -> None:
    seen: list[StreamEvent] = []
    with Client(demo_gateway.url) as client:
        stream = client.stream(script(deltas=["a", "b", "c"], fail_at=2, error=code, message="boom"))
        with pytest.raises(cls) as info:
            for ev in stream:
                seen.append(ev)
    assert type(info.value) is cls and info.value.code == code
    assert info.value.message == "boom"
    assert stream.text == "ab" and [e.seq for e in seen] == [1, 2, 3]  # what came before the error
    assert stream.error_event is not None and stream.error_event.event == "error"


def test_an_error_before_the_commit_raises_with_the_http_status(demo_gateway: GatewayProcess) -> None:
    with Client(demo_gateway.url) as client:
        with pytest.raises(UpstreamTimeout) as info:
            list(client.stream(script(deltas=["a"], fail_at=0, error="upstream_timeout")))
        assert info.value.status == 504
        with pytest.raises(InvalidRequest) as bad:
            list(client.stream([{"role": "wizard", "content": "hi"}]))
        assert bad.value.status == 422 and "role" in bad.value.message
        with pytest.raises(NotFound):
            list(client.resume("no-such-stream"))


def test_an_upstream_reset_mid_answer_raises_upstream_error(upstream: FakeUpstream, gateway: GatewayProcess) -> None:
    prompt = upstream.script(Script(deltas=["one ", "two ", "three ", "four "], fault=Fault.RESET, fault_after=3))
    with Client(gateway.url) as client:
        stream = client.stream(prompt)
        with pytest.raises(UpstreamError) as info:
            list(stream)
    assert info.value.code == "upstream_error" and info.value.retryable
    assert stream.text == "one two three "


def test_unreachable_gateway_raises_gateway_unreachable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(GatewayUnreachable, match="cannot reach"):
            list(client.stream("hello"))


def test_api_keys(make_gateway: Callable[..., GatewayProcess]) -> None:
    gw = make_gateway({"api_keys": "k1,k2", "demo_ttft_s": 0.01})
    with Client(gw.url, api_key="k1") as client:
        stream = client.stream(script(deltas=["ok"]))
        assert stream.read_text() == "ok"
    with Client(gw.url) as anonymous, pytest.raises(Unauthorized) as info:
        list(anonymous.stream("hello"))
    assert info.value.status == 401
    assert stream.stream_id is not None
    with Client(gw.url, api_key="k2") as other, pytest.raises(NotFound):
        list(other.resume(stream.stream_id))  # only the key that started a stream may resume it


# --- cancel ---------------------------------------------------------------------------------------------
def test_sync_cancel_closes_the_upstream(upstream: FakeUpstream, relay_grace: GatewayProcess) -> None:
    """With a resume grace, only the cancel request (not the closed connection) can end it this soon."""
    prompt = upstream.script(Script(deltas=[f"t{i} " for i in range(400)], delay=0.05))
    with Client(relay_grace.url) as client:
        stream = client.stream(prompt)
        first = [ev for _, ev in zip(range(3), stream, strict=False)]
        assert isinstance(first[-1], Delta)
        assert stream.cancel() is True
        record = upstream.wait_closed(prompt, 10)
        assert record.closed_at is not None
        assert stream.stream_id is not None
        rest = list(client.resume(stream.stream_id, after=stream.last_seq))
    done = rest[-1]
    assert isinstance(done, Done) and done.finish_reason == "cancelled"
    assert list(stream) == []  # a cancelled stream is over


async def test_async_cancel_closes_the_upstream(upstream: FakeUpstream, relay_grace: GatewayProcess) -> None:
    prompt = upstream.script(Script(deltas=[f"t{i} " for i in range(400)], delay=0.05))
    async with AsyncClient(relay_grace.url) as client:
        stream = client.stream(prompt)
        n = 0
        async for ev in stream:
            n += 1
            if n == 3:
                assert isinstance(ev, Delta)
                break
        assert await stream.cancel() is True
        record = upstream.wait_closed(prompt, 10)
        assert record.closed_at is not None
        assert stream.stream_id is not None
        rest = [ev async for ev in client.resume(stream.stream_id, after=stream.last_seq)]
    done = rest[-1]
    assert isinstance(done, Done) and done.finish_reason == "cancelled"


# --- the protocol state machine (no I/O) -------------------------------------------------------------------
def test_replayed_events_are_skipped_and_a_gap_is_refused() -> None:
    """What keeps a resume duplicate-free, and what a gateway breaking the no-gap promise gets."""
    from ssegate.client.protocol import Retry, StreamProtocol

    proto = StreamProtocol("test", b"{}", None, 0, Retry(3, 0.0))
    proto.request()
    chunk = 'id: s:1\nevent: start\ndata: {"stream_id":"s","model":"m"}\n\nid: s:2\ndata: {"delta":"a"}\n\nid: s:3\nda'
    assert [e.seq for e in proto.feed(chunk)] == [1, 2]
    assert proto.dropped(None) == 0.0  # the first resume goes at once
    assert proto.request() == ("GET", "/v1/streams/s", {"after": "2"}, None)
    replay = 'id: s:2\ndata: {"delta":"a"}\n\nid: s:3\ndata: {"delta":"b"}\n\n'
    assert [(e.seq, getattr(e, "text", None)) for e in proto.feed(replay)] == [(3, "b")]
    assert proto.dropped(None) == 0.0  # progress was made: the budget starts over
    proto.request()
    with pytest.raises(GenerationLost, match=r"events 4\.\.4 "):
        proto.feed('id: s:5\ndata: {"delta":"d"}\n\n')


def test_resume_backoff_grows_and_is_bounded() -> None:
    from ssegate.client.protocol import Retry, StreamProtocol

    proto = StreamProtocol("test", None, "s", 0, Retry(4, 0.5, max_backoff_s=1.0))
    assert [proto.dropped(None) for _ in range(4)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(GatewayUnreachable, match="after 4 attempts"):
        proto.dropped(None)
