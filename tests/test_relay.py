"""Relaying a real upstream (the fake OpenAI-compatible server) end to end: text, disconnects, faults."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ssegate.http.uvicorn_glue import BoundedRequestProtocol, _Cycle, _Flow, header_bytes_ok
from ssegate.sse import ServerSentEvent, SSEDecoder
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, chat_body, free_port, post_events, text_of


def run_stream(gw: GatewayProcess, prompt: str, **extra: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    return post_events(gw.url, prompt, **extra)


def check_frame(events: list[ServerSentEvent]) -> None:
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    assert events[0].event == "start"
    terminals = [e for e in events if e.event in ("done", "error")]
    assert terminals == [events[-1]]


TRICKY = ["Hel", "lo\n", "\r", "\n\nevent: error\ndata: {}", "data: x", " wor\r\nld", "é✓", "\n\n", "!"]


def test_exact_text_relay_with_tokens_that_look_like_framing(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=TRICKY, delay=0.002))
    resp, events = run_stream(gateway, prompt)
    assert resp.status_code == 200
    check_frame(events)
    assert text_of(events) == "".join(TRICKY)
    assert [e.event for e in events].count("error") == 0  # nothing forged
    assert events[-1].json()["finish_reason"] == "stop"
    assert events[-1].json()["usage"] == {"prompt_tokens": 7, "completion_tokens": len(TRICKY), "estimated": False}
    sent = upstream.records(prompt)[0].request_json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "fake-model"


CLOSE_S = 1.0
"""Generous (a loaded CI machine): the upstreams here would go on for seconds longer if nothing closed them."""


def read_until_deltas(resp: httpx.Response, n: int) -> list[ServerSentEvent]:
    dec = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in resp.iter_text():
        events += dec.feed(chunk)
        if sum(e.event == "message" for e in events) >= n:
            return events
    raise AssertionError(f"stream ended before {n} deltas: {events}")


def test_disconnect_mid_stream_closes_the_upstream(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """The upstream would stream for 10 s; only the disconnect can close it sooner (bench/ measures how soon)."""
    prompt = upstream.script(Script(deltas=[f"t{i} " for i in range(500)], delay=0.02))
    with httpx.stream("POST", gateway.url + "/v1/chat/stream", content=chat_body(prompt), timeout=30) as resp:
        read_until_deltas(resp, 3)
        closed_at_client = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None
    assert rec.closed_at - closed_at_client < CLOSE_S, f"upstream closed {rec.closed_at - closed_at_client:.3f}s later"
    assert rec.deltas_sent < 500 and not rec.finished


def test_disconnect_before_the_first_token_closes_the_upstream(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["never"], ttft=30))
    with httpx.stream("POST", gateway.url + "/v1/chat/stream", content=chat_body(prompt), timeout=30) as resp:
        upstream.wait_request(prompt, timeout=5)
        assert resp.status_code == 200  # committed after COMMIT_TIMEOUT_S (1 s) with start + heartbeats
        closed_at_client = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - closed_at_client < CLOSE_S


def test_disconnect_while_the_status_is_held_closes_the_upstream(upstream: FakeUpstream, make_gateway: Any) -> None:
    """A client that leaves before the commit (no byte received yet) also stops the generation."""
    gw = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "m", "commit_timeout_s": 30})
    prompt = upstream.script(Script(deltas=["never"], ttft=30))
    sock = socket.create_connection(("127.0.0.1", gw.port))
    body = chat_body(prompt)
    sock.sendall(b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    upstream.wait_request(prompt, timeout=5)
    sock.close()
    closed_at_client = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None and rec.closed_at - closed_at_client < CLOSE_S


def test_regression_a_grace_keeps_a_stream_nobody_can_resume(upstream: FakeUpstream, make_gateway: Any) -> None:
    """A client that asked for a resume grace and left before the commit never learned the stream's id, so nobody
    could resume or cancel it: the generation ran on for the whole grace (a page reloaded before its first token
    left an orphan generating for 30 s). Before the commit a drop cancels at once, grace or not."""
    gw = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "m", "commit_timeout_s": 30})
    prompt = upstream.script(Script(deltas=["never"], ttft=30))
    sock = socket.create_connection(("127.0.0.1", gw.port))
    body = chat_body(prompt, resume_grace_s=60)
    sock.sendall(b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    upstream.wait_request(prompt, timeout=5)
    sock.close()
    closed_at_client = time.monotonic()
    rec = upstream.wait_closed(prompt, timeout=10)
    assert rec.closed_at is not None and rec.closed_at - closed_at_client < CLOSE_S


def test_eight_streams_run_side_by_side(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompts = [upstream.script(Script(deltas=[f"s{i}-{j} " for j in range(20)], delay=0.05)) for i in range(8)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: run_stream(gateway, p)[1], prompts))
    elapsed = time.monotonic() - t0
    for i, events in enumerate(results):
        assert text_of(events) == "".join(f"s{i}-{j} " for j in range(20))
    starts = [upstream.records(p)[0].request_at for p in prompts]
    assert max(starts) - min(starts) < 0.5  # none waited for another
    assert elapsed < 8 * 20 * 0.05  # far less than one after the other


@pytest.mark.parametrize(
    ("status", "expected", "code"),
    [(500, 502, "upstream_error"), (401, 502, "upstream_error"), (429, 429, "rate_limited"),
     (400, 400, "invalid_request"), (413, 400, "invalid_request"), (422, 400, "invalid_request")],
)
def test_upstream_error_status_before_the_first_token(gateway: GatewayProcess, upstream: FakeUpstream,
                                                      status: int, expected: int, code: str) -> None:
    prompt = upstream.script(Script(status=status, headers={"Retry-After": "7"} if status == 429 else {},
                                    error_body={"error": {"message": "nope", "type": "x", "code": None}}))
    resp, _ = run_stream(gateway, prompt)
    assert resp.status_code == expected
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["error"]["code"] == code
    if status == 429:
        assert resp.headers["retry-after"] == "7"
        assert body["error"]["retryable"] is True
    if expected == 400 or status == 401:  # deterministic: the SDKs must not resend it
        assert resp.headers["x-should-retry"] == "false" and body["error"]["retryable"] is False
        assert len(upstream.records(prompt)) == 1


def test_connection_refused_is_502(make_gateway: Any) -> None:
    gw = make_gateway({"provider": "openai", "upstream_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"})
    resp, _ = run_stream(gw, "hello")
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_error"
    assert httpx.get(gw.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("fault", "code"),
    [(Fault.RESET, "upstream_error"), (Fault.MALFORMED_JSON, "upstream_error"), (Fault.STALL, "upstream_timeout"),
     (Fault.EARLY_EOF, "upstream_error"), (Fault.INVALID_UTF8, "upstream_error")],
)
def test_mid_stream_failure_gives_tokens_then_one_error_event(gateway: GatewayProcess, upstream: FakeUpstream,
                                                              fault: Fault, code: str) -> None:
    prompt = upstream.script(Script(deltas=["a", "b", "c", "d", "e"], delay=0.01, fault=fault, fault_after=3))
    resp, events = run_stream(gateway, prompt)
    assert resp.status_code == 200
    check_frame(events)
    assert text_of(events) == "abc"
    assert events[-1].event == "error"
    assert events[-1].json()["error"]["code"] == code
    rec = upstream.wait_closed(prompt, timeout=5)
    assert rec.closed_at is not None


def test_missing_done_after_a_finish_is_still_a_clean_end(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["x", "y"], fault=Fault.NO_DONE, fault_after=2))
    _, events = run_stream(gateway, prompt)
    assert text_of(events) == "xy"
    assert events[-1].event in ("done", "error")  # one terminal event either way


def test_slow_client_is_dropped_and_its_upstream_closed(upstream: FakeUpstream, make_gateway: Any) -> None:
    gw = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "m", "send_timeout_s": 1.0})
    prompt = upstream.script(Script(deltas=["x" * 20000] * 5000, delay=0.002))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    body = chat_body(prompt)
    sock.sendall(b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    # the client reads nothing: the gateway's send blocks, and after SEND_TIMEOUT_S it gives up
    try:
        rec = upstream.wait_closed(prompt, timeout=15)
    except TimeoutError:
        sock.close()
        raise
    assert rec.closed_at is not None and not rec.finished
    assert rec.deltas_sent < 5000
    # the gateway cut the client off: reading now ends in EOF or a reset, not an endless stream
    sock.settimeout(10)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    sock.close()
    assert total < 20000 * 5000
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_idle_timeout_between_tokens(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["a", "b"], fault=Fault.HEADERS_THEN_SILENCE, fault_after=0))
    t0 = time.monotonic()
    resp, events = run_stream(gateway, prompt)
    # headers then silence: no first token within FIRST_TOKEN_TIMEOUT_S (5 s) -> committed, then error event
    assert resp.status_code == 200
    assert events[-1].event == "error" and events[-1].json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - t0 < 15


def test_request_body_sent_upstream_carries_the_options(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["ok"]))
    run_stream(gateway, prompt, max_tokens=12, temperature=0.5, stop=["END"])
    sent = upstream.records(prompt)[0].request_json
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (12, 0.5, ["END"])
    assert json.dumps(sent["messages"]) == json.dumps([{"role": "user", "content": prompt}])




def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and the de-chunked body of one chunked response read from ``sock``."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536) or b""
    head, _, rest = buf.partition(b"\r\n\r\n")
    body = b""
    while True:
        while b"\r\n" not in rest:
            more = sock.recv(65536)
            assert more, "the connection closed inside the body"
            rest += more
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            more = sock.recv(65536)
            assert more, "the connection closed inside a chunk"
            rest += more
        body, rest = body + rest[:size], rest[size + 2:]
        if size == 0:
            return head, body


def test_the_compiled_copies_of_uvicorns_protocol_cycle_and_flow_set_what_uvicorns_set() -> None:
    """``uvicorn_glue`` writes uvicorn's protocol constructor, request cycle and flow control again (compiled): each
    gives an object every attribute uvicorn's gives (a uvicorn that adds one fails here, not in a stream), and
    the flow control, which makes its event only at a pause, still holds ``drain()`` until writing resumes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
        pass

    config = Config(app=app, http=BoundedRequestProtocol, log_config=None)
    config.load()
    state = ServerState()

    async def check() -> None:
        loop = asyncio.get_running_loop()
        ours = BoundedRequestProtocol(config, state, {}, loop)
        theirs = HttpToolsProtocol(config, state, {}, loop)
        missing = [name for name in vars(theirs) if not hasattr(ours, name)]
        assert not missing, missing
        assert not [m for m in dir(theirs) if callable(getattr(theirs, m)) and not m.startswith("__")
                    and not hasattr(ours, m)]  # each method uvicorn's server or its own code may call
        transport: Any = object()
        cycle_args: Any = ({"type": "http", "method": "POST"}, transport, _Flow(transport),
                           theirs.logger, theirs.access_logger, False, [], False, True, lambda: None)
        their_cycle = RequestResponseCycle(*cycle_args[:7], asyncio.Event(), *cycle_args[7:])
        our_cycle = _Cycle(*cycle_args, loop)
        assert {k: v for k, v in vars(their_cycle).items() if k != "message_event"} == \
            {k: getattr(our_cycle, k) for k in vars(their_cycle) if k != "message_event"}
        assert [m for m in dir(their_cycle) if not m.startswith("__") and not hasattr(our_cycle, m)] == []
        flow = _Flow(transport)
        assert [k for k in vars(FlowControl(transport)) if k != "_is_writable_event" and not hasattr(flow, k)] == []
        await asyncio.wait_for(flow.drain(), 1)  # never paused: no wait
        flow.pause_writing()
        waiter = asyncio.ensure_future(flow.drain())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        flow.resume_writing()
        await asyncio.wait_for(waiter, 1)
        flow.pause_writing()  # a second pause holds it again
        again = asyncio.ensure_future(flow.drain())
        await asyncio.sleep(0.05)
        assert not again.done()
        flow.resume_writing()
        await asyncio.wait_for(again, 1)

    asyncio.run(check())


def test_uvicorns_own_code_runs_on_the_protocol_of_its_own() -> None:
    """``BoundedRequestProtocol`` is a compiled class of its own, not a subclass of uvicorn's: what uvicorn still
    runs on it works. A WebSocket upgrade goes to uvicorn's WebSocket protocol (an echo through the app, on a
    real socket, with the ``websockets`` client), plain HTTP on the same server still answers, and the server's
    graceful shutdown closes a kept-alive idle connection at once (``shutdown``; keep-alive 60 s, grace 30 s)."""
    import websockets.sync.client

    from tests.support.inproc import ServerThread

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "websocket":
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
            await send({"type": "websocket.close"})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    server = ServerThread(app, http=BoundedRequestProtocol, timeout_keep_alive=60, timeout_graceful_shutdown=30)
    with server:
        with websockets.sync.client.connect(server.url.replace("http", "ws") + "/ws", open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "echo: hi"
        sock = socket.create_connection(server.sock.getsockname(), timeout=15)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while not head.endswith(b"ok"):
            more = sock.recv(4096)
            assert more, head
            head += more
        assert head.startswith(b"HTTP/1.1 200 ")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 4  # (a connection left open would hold the server for its 30 s grace)
    assert sock.recv(4096) == b""  # closed by the server's shutdown, not by the keep-alive timeout (60 s)
    sock.close()


def _length_response(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length from ``sock`` (``buf``: bytes already read): head, body, rest."""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        assert more, buf
        buf += more
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        more = sock.recv(65536)
        assert more, rest
        rest += more
    return head, rest[:length], rest[length:]


def _answering(answer: Any) -> Any:
    """An ASGI app for the protocol's tests on real sockets: lifespan acknowledged, and each HTTP request
    answered 200 with the bytes of ``await answer(scope, receive)`` and their Content-Length."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        out = await answer(scope, receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


def test_the_protocols_request_paths_pipelining_100_continue_errors_and_the_access_log() -> None:
    """What ``BoundedRequestProtocol`` and its cycle do themselves, or hand to uvicorn's code, on real sockets:
    two pipelined requests in one write are answered in order; ``Expect: 100-continue`` gets its interim answer
    when the app reads the body, and the body arrives; an app that raises before answering gets uvicorn's 500;
    with the access log on, responses go through uvicorn's ``send`` (which writes the log line); and past
    ``limit_concurrency`` uvicorn's 503."""
    import logging

    from tests.support.inproc import ServerThread

    async def path_and_body(scope: Any, receive: Any) -> bytes:
        if scope["path"] == "/raise":
            raise RuntimeError("an app that fails before it answers")
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        return scope["path"].encode() + b" " + body

    app = _answering(path_and_body)

    def connect(server: ServerThread) -> socket.socket:
        return socket.create_connection(server.sock.getsockname(), timeout=15)

    with ServerThread(app, http=BoundedRequestProtocol) as server:
        sock = connect(server)
        sock.sendall(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA"
                     b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nB")
        head, body, rest = _length_response(sock, b"")
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"/one A"
        head, body, rest = _length_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"/two B" and rest == b""

        sock.sendall(b"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            more = sock.recv(65536)
            assert more
            interim += more
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        head, body, _ = _length_response(sock, interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"/wait hello"

        failing = connect(server)
        failing.sendall(b"GET /raise HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, _ = _length_response(failing, b"")
        assert head.startswith(b"HTTP/1.1 500 ") and body == b"Internal Server Error"
        failing.close()
        sock.close()

    access = logging.getLogger("uvicorn.access")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    access.addHandler(handler)
    level, access.level = access.level, logging.INFO
    try:
        with ServerThread(app, http=BoundedRequestProtocol, access_log=True, log_level="info",
                          limit_concurrency=2) as server:
            sock = connect(server)
            sock.sendall(b"GET /logged HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body, _ = _length_response(sock, b"")
            assert head.startswith(b"HTTP/1.1 200 ") and body == b"/logged "
            assert any("/logged" in line for line in lines), lines
            other = connect(server)  # a second connection while the first is open: past the limit of two
            other.sendall(b"GET /refused HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body, _ = _length_response(other, b"")
            assert head.startswith(b"HTTP/1.1 503 ")
            other.close()
            sock.close()
    finally:
        access.removeHandler(handler)
        access.level = level


def test_forwarded_headers_set_the_scope_as_uvicorns_middleware_does() -> None:
    """uvicorn's proxy-headers middleware (on by default) still decides what a request from a trusted proxy says:
    ``X-Forwarded-For`` and ``-Proto`` from 127.0.0.1 (trusted by default) set the scope's client and scheme; the
    next request on the same connection without them has the connection's own; from a client not trusted
    (``forwarded_allow_ips``) the headers change nothing. ``BoundedRequestProtocol`` sends a request the
    middleware would leave as it is to the app beneath it: each answer equals uvicorn's own protocol's."""
    from tests.support.inproc import ServerThread

    async def client_and_scheme(scope: Any, receive: Any) -> bytes:
        return f"{scope['client'][0]}:{scope['client'][1] != 0} {scope['scheme']}".encode()

    app = _answering(client_and_scheme)

    forwarded = b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    requests = [b"", forwarded, b"", b"x-forwarded-for: 198.51.100.2, 203.0.113.9\r\n", b"X-Forwarded-Proto: wss\r\n"]

    def answers(http: Any, **config: Any) -> list[bytes]:
        out = []
        with ServerThread(app, http=http, **config) as server:
            sock = socket.create_connection(server.sock.getsockname(), timeout=15)
            rest = b""
            for extra in requests:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
                head, body, rest = _length_response(sock, rest)
                assert head.startswith(b"HTTP/1.1 200 "), head
                out.append(body)
            sock.close()
        return out

    ours = answers(BoundedRequestProtocol)
    assert ours == [b"127.0.0.1:True http", b"203.0.113.7:False https", b"127.0.0.1:True http",
                    b"203.0.113.9:False http", b"127.0.0.1:True wss"], ours
    assert ours == answers("httptools")
    untrusted = answers(BoundedRequestProtocol, forwarded_allow_ips="10.1.2.3")
    assert untrusted == [b"127.0.0.1:True http"] * len(requests), untrusted
    assert untrusted == answers("httptools", forwarded_allow_ips="10.1.2.3")
    assert answers(BoundedRequestProtocol, proxy_headers=False) == untrusted


def test_the_scope_path_and_query_of_each_request_target_are_uvicorns() -> None:
    """``BoundedRequestProtocol`` reads a target that is a path alone (starts with "/", no "?" or "#") itself, and
    hands every other one to ``httptools.parse_url`` as uvicorn does: for each kind of target (a plain path,
    "//", percent escapes, a query, an empty query, a fragment, the absolute form, "*") the scope's ``path``,
    ``raw_path`` and ``query_string`` equal uvicorn's own protocol's."""
    from tests.support.inproc import ServerThread

    async def path_parts(scope: Any, receive: Any) -> bytes:
        return repr((scope["path"], scope["raw_path"], scope["query_string"])).encode()

    app = _answering(path_parts)
    targets = [b"/v1/chat/stream", b"/", b"//double/slash", b"/a%20b/%2F", b"/semi;colon", b"/q?x=1&y=%20",
               b"/q?", b"/frag#part", b"/both?x=1#part", b"http://example.com/abs?z=2", b"*"]

    def answers(http: Any) -> list[bytes]:
        out = []
        with ServerThread(app, http=http) as server:
            sock = socket.create_connection(server.sock.getsockname(), timeout=15)
            rest = b""
            for target in targets:
                sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                head, body, rest = _length_response(sock, rest)
                assert head.startswith(b"HTTP/1.1 200 "), (target, head)
                out.append(body)
            sock.close()
        return out

    ours = answers(BoundedRequestProtocol)
    assert ours[:3] == [b"('/v1/chat/stream', b'/v1/chat/stream', b'')", b"('/', b'/', b'')",
                        b"('//double/slash', b'//double/slash', b'')"]
    assert ours[3] == b"('/a b//', b'/a%20b/%2F', b'')" and ours[5] == b"('/q', b'/q', b'x=1&y=%20')"
    assert ours == answers("httptools")


def test_the_scheme_is_https_on_a_tls_server_and_http_without_as_uvicorns_protocol_says(tmp_path: Any) -> None:
    """``BoundedRequestProtocol`` asks a connection for its TLS context only on a server given TLS (uvicorn's
    ``ssl_certfile``): there the scope's scheme is ``https``, without it ``http``, as uvicorn's own protocol says."""
    import ssl

    import trustme

    from tests.support.inproc import ServerThread

    async def scheme(scope: Any, receive: Any) -> bytes:
        return scope["scheme"].encode()

    app = _answering(scheme)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    def answer(http: Any, tls: bool) -> bytes:
        config = {"ssl_keyfile": str(key_file), "ssl_certfile": str(cert_file)} if tls else {}
        with ServerThread(app, http=http, **config) as server:
            sock = socket.create_connection(server.sock.getsockname(), timeout=15)
            if tls:
                sock = trusting.wrap_socket(sock, server_hostname="127.0.0.1")
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body, _ = _length_response(sock, b"")
            sock.close()
        assert head.startswith(b"HTTP/1.1 200 "), head
        return body

    assert answer(BoundedRequestProtocol, True) == b"https" == answer("httptools", True)
    assert answer(BoundedRequestProtocol, False) == b"http" == answer("httptools", False)


def test_header_values_reach_the_app_without_trailing_whitespace() -> None:
    """llhttp keeps the spaces and tabs that end a header value, which RFC 9110 5.5 excludes from it: the app gets
    the value without them (leading ones llhttp drops itself), and a value without any unchanged."""
    from tests.support.inproc import ServerThread

    async def values(scope: Any, receive: Any) -> bytes:
        return repr([value for name, value in scope["headers"] if name.startswith(b"x-v")]).encode()

    app = _answering(values)

    with ServerThread(app, http=BoundedRequestProtocol) as server:
        sock = socket.create_connection(server.sock.getsockname(), timeout=15)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-V1: a b \t \r\nX-V2: plain\r\nX-V3:  \t\r\nX-V4: tab\t\r\n\r\n")
        head, body, _ = _length_response(sock, b"")
        sock.close()
    assert head.startswith(b"HTTP/1.1 200 ") and body == repr([b"a b", b"plain", b"", b"tab"]).encode(), body


def test_the_head_of_headers_checked_before_is_the_head_uvicorns_send_writes() -> None:
    """``start_head`` writes the server's default headers as a block kept for the last list of them it saw, and
    pairs registered with ``fixed_headers`` as lines kept by identity: the bytes equal uvicorn's own ``send``'s
    for the same start, across a new default list (uvicorn's date, each second), for a registered pair and an
    equal pair made anew; a registered list with a pair uvicorn refuses, or a framing header, registers neither,
    and the start is left to ``send``."""
    import logging

    from ssegate.http.response import STREAM_HEADERS
    from ssegate.http.uvicorn_glue import fixed_headers, send_start, start_head

    class Wire:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        def is_closing(self) -> bool:
            return False

    logger, access = logging.getLogger("uvicorn.error"), logging.getLogger("uvicorn.access")
    scope = {"type": "http", "method": "POST"}

    async def theirs(default: list[Any], headers: list[Any]) -> bytes:
        wire: Any = Wire()
        cycle = RequestResponseCycle(scope, wire, FlowControl(wire), logger, access, False, default, asyncio.Event(),
                                     False, True, lambda: None)
        await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        await cycle.send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        return wire.data

    def ours(default: list[Any], headers: list[Any], loop: asyncio.AbstractEventLoop) -> bytes | None:
        wire: Any = Wire()
        cycle = _Cycle(scope, wire, _Flow(wire), logger, access, False, default, False, True, lambda: None, loop)
        head = start_head(cycle.send, 200, headers)
        if head is None:
            return None
        send_start(head, b"data: x\n\n", True)
        return wire.data

    async def check() -> None:
        loop = asyncio.get_running_loop()
        fresh = [(name, bytes(value)) for name, value in STREAM_HEADERS]  # equal pairs, not the registered ones
        for date in (b"Sat, 05 Dec 2026 03:00:00 GMT", b"Sat, 05 Dec 2026 03:00:01 GMT"):
            default = [(b"date", date), (b"server", b"uvicorn")]
            for headers in ([*STREAM_HEADERS, (b"x-stream-id", b"abc")], [*fresh, (b"X-Stream-Id", b"abc")],
                            [(b"x-stream-id", b"abc"), *STREAM_HEADERS]):
                mine = ours(default, headers, loop)
                assert mine is not None and date in mine
                assert mine == await theirs(default, headers), (mine, headers)
        refused = fixed_headers([(b"x-ok", b"1"), (b"x-bad", b"a\x01b"), (b"content-length", b"5")])
        default = [(b"date", b"Sat, 05 Dec 2026 03:00:02 GMT")]
        assert ours(default, [refused[0]], loop) == await theirs(default, [refused[0]])
        assert ours(default, [refused[1]], loop) is None  # uvicorn's send raises for it
        assert ours(default, [refused[2]], loop) is None  # framing: uvicorn's send frames it
        assert ours([(b"bad name", b"1")], [refused[0]], loop) is None  # a default header uvicorn refuses
        from ssegate.http.uvicorn_glue import _LINES

        assert all(id(pair) in _LINES.fixed for pair in STREAM_HEADERS)
        probe = fixed_headers([(b"x-probe", b"checked")])[0]
        _LINES.fixed[id(probe)] = b"x-probe: kept\r\n"  # (a line only the kept one can be: the lookup is used)
        assert b"\r\nx-probe: kept\r\n" in (ours(default, [probe], loop) or b"")

    asyncio.run(check())


def test_the_one_write_start_refuses_the_header_bytes_uvicorn_refuses() -> None:
    """``write_start`` leaves a response to uvicorn's ``send`` (which raises) for any header byte uvicorn's own
    patterns find, and for no other: checked byte by byte against them, alone and inside a longer header."""
    for b in range(256):
        one = bytes([b])
        assert header_bytes_ok(one, b"") is (HEADER_RE.search(one) is None), b
        assert header_bytes_ok(b"", one) is (HEADER_VALUE_RE.search(one) is None), b
        assert header_bytes_ok(b"x-a" + one + b"b", b"v") is (HEADER_RE.search(b"x-a" + one + b"b") is None), b
        assert header_bytes_ok(b"x", b"a " + one + b"b") is (HEADER_VALUE_RE.search(b"a " + one + b"b") is None), b
    assert header_bytes_ok(b"content-type-cache-control", b"text/event-stream\tno-cache")


def test_the_start_sent_with_the_first_body_keeps_http_framing(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """``ssegate serve`` writes a stream's status, headers and first events in one write (``uvicorn_glue.send_start``,
    from the callback of the append that commits the stream, or from the response's task through ``write_start``):
    the bytes are the same HTTP as through the server's ``send``; a kept-alive connection carries the next request,
    and ``Connection: close`` gets its header and the connection closed after the last chunk."""
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.settimeout(15)
    try:
        # all at once (the task writes the start with every event), then spread out (the commit's callback does)
        for close, delay in ((False, 0.0), (False, 0.05), (True, 0.05)):
            prompt = upstream.script(Script(deltas=["one ", "two"], delay=delay))
            body = chat_body(prompt)
            extra = b"Connection: close\r\n" if close else b""
            sock.sendall(b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                         b"Content-Length: %d\r\n\r\n%s" % (extra, len(body), body))
            head, events = _read_response(sock)
            lines = head.split(b"\r\n")
            assert lines[0] == b"HTTP/1.1 200 OK"
            names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
            assert names.count(b"transfer-encoding") == 1 and b"transfer-encoding: chunked" in lines
            assert b"content-type: text/event-stream; charset=utf-8" in lines
            assert any(line.startswith(b"x-stream-id: ") for line in lines)
            assert (b"connection: close" in lines) is close
            assert b"event: start" in events and b'"delta":"one "' in events and events.rstrip().endswith(b"}")
            assert b"event: done" in events
        assert sock.recv(1) == b""  # closed by the server after the last chunk
    finally:
        sock.close()
