"""The upstream client's pool and connections (``upstream/httpclient.py``, ``upstream/dial.py``) against real loopback
servers: places under ``limit``, the retry of a stale kept connection, keep-alive expiry, the drain after an end
marker, happy eyeballs, the TLS context, and the head and read timeouts."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from ssegate.errors import UpstreamError, UpstreamTimeout
from ssegate.http.listener import new_event_loop
from ssegate.upstream import httpclient
from ssegate.upstream.events import read_events
from ssegate.upstream.httpclient import Pool, Response
from tests.support.scripted import Serve, fixed, servers


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with servers() as start:
        yield start


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


# --- places under limit ------------------------------------------------------------------------------
async def test_a_waiter_cancelled_right_after_it_was_woken_passes_its_place_on(serve: Serve) -> None:
    """Regression (lost wake-up): closing a response woke the first waiter; when that waiter was cancelled before
    it ran, the place was lost with it and the next waiter waited forever (nothing in flight to wake it)."""
    srv = await serve(fixed(b"x"))
    pool = Pool(limit=1)
    first = await pool.request("GET", srv.url(), {})
    woken = asyncio.ensure_future(pool.request("GET", srv.url(), {}))
    after = asyncio.ensure_future(pool.request("GET", srv.url(), {}))
    await until(lambda: pool.waiting == 2)
    await first.read()
    first.close()  # the place goes to `woken`...
    woken.cancel()  # ...which is cancelled before it runs
    resp = await asyncio.wait_for(after, 5)
    assert woken.cancelled()
    assert await resp.read() == b"x" and pool.active == 1 and pool.waiting == 0
    resp.close()
    assert pool.active == 0
    await pool.aclose()


async def test_a_request_waiting_longer_than_the_connect_timeout_for_a_place_is_an_upstream_timeout(
    serve: Serve,
) -> None:
    """Regression: a request waited for a place under ``limit`` without any bound."""
    srv = await serve(fixed(b"x"))
    pool = Pool(limit=1, connect_timeout=0.3)
    first = await pool.request("GET", srv.url(), {})
    with pytest.raises(UpstreamTimeout, match=r"no upstream connection came free within 0\.3 s"):
        await asyncio.wait_for(pool.request("GET", srv.url(), {}), 5)
    assert pool.waiting == 0 and pool.active == 1
    first.close()
    resp = await asyncio.wait_for(pool.request("GET", srv.url(), {}), 5)  # the place was not lost
    resp.close()
    await pool.aclose()


async def test_each_request_carries_the_headers_and_target_it_was_given(serve: Serve) -> None:
    """A request's head is made once per method, URL and headers and kept (a provider sends its own each time);
    the same headers dict changed between two requests, or another URL, is a new head: what each request carries
    is what it was given."""
    srv = await serve(fixed(b"x"))
    pool = Pool()
    headers = {"Authorization": "Bearer one", "Accept": "text/event-stream"}
    sent: list[tuple[str, dict[str, str]]] = []

    async def send(path: str) -> None:
        sent.append((path, dict(headers)))
        resp = await asyncio.wait_for(pool.request("POST", srv.url(path), headers, b"{}"), 5)
        assert await resp.read() == b"x"
        resp.close()

    await send("/a")
    await send("/a")
    headers["Authorization"] = "Bearer two"  # the same dict, changed
    await send("/a")
    headers["X-Extra"] = "1"
    await send("/a")
    await send("/b")
    del headers["X-Extra"]
    await send("/b")
    assert len(srv.requests) == len(sent)
    for request, (path, given) in zip(srv.requests, sent, strict=True):
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        assert head[0] == f"POST {path} HTTP/1.1"
        lines = {line.split(": ", 1)[0].lower(): line.split(": ", 1)[1] for line in head[1:]}
        for name, value in given.items():
            assert lines[name.lower()] == value
        assert ("x-extra" in lines) == ("X-Extra" in given)
    await pool.aclose()


# --- the retry of a stale kept connection ------------------------------------------------------------
def closes_on(*nth: int, answer: bytes = b"") -> Any:
    """Answer ``ok``, except the nth requests of the server: write ``answer`` (maybe nothing) and close."""
    seen = 0

    async def handler(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        nonlocal seen
        seen += 1
        if seen in nth:
            writer.write(answer)
            await writer.drain()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return True

    return handler


async def test_a_kept_connection_closed_before_any_byte_of_answer_is_retried_once_on_a_new_one(
    serve: Serve,
) -> None:
    """The close crossed the request on the wire (the server's idle timer): the request goes again, once."""
    srv = await serve(closes_on(2))
    pool = Pool()
    for _ in range(2):
        resp = await asyncio.wait_for(pool.request("POST", srv.url(), {}, b"{}"), 5)
        assert await resp.read() == b"ok"
        resp.close()
    assert (srv.connections, len(srv.requests)) == (2, 3)
    await pool.aclose()


@pytest.mark.parametrize("case", ["new_connection", "some_answer_arrived", "aborted"])
async def test_a_request_that_the_upstream_may_have_read_is_not_sent_twice(serve: Serve, case: str) -> None:
    """Only a kept connection that closed before any byte of an answer, with the request not aborted, is retried:
    not a new connection, not one that answered part of a head, not an aborted request."""
    if case == "new_connection":
        srv = await serve(closes_on(1))
    elif case == "some_answer_arrived":
        srv = await serve(closes_on(2, answer=b"HTTP/1.1 200 OK\r\n"))
    else:
        srv = await serve(closes_on(2))
    pool = Pool()
    if case != "new_connection":
        first = await pool.request("GET", srv.url(), {})
        await first.read()
        first.close()
    aborted: list[Response] = []

    def sent(resp: Response) -> None:
        if case == "aborted":
            resp.abort()  # a client's disconnect, as the request is written
            aborted.append(resp)

    with pytest.raises(UpstreamError) as info:
        await asyncio.wait_for(pool.request("POST", srv.url(), {}, b"{}", sent), 5)
    assert "aborted" in str(info.value) if case == "aborted" else "closed the connection" in str(info.value)
    assert srv.connections == 1 and pool.active == 0
    await pool.aclose()


async def test_a_head_timeout_is_an_upstream_timeout_and_the_request_is_not_sent_again(serve: Serve) -> None:
    """Regression: there was no bound on the wait for a response head; with one, a kept connection that times
    out is closed and its request not retried."""
    async def silent_second(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if len(srv.requests) == 2:
            await reader.read()  # never answers; returns when the client closes
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    srv = await serve(silent_second)
    pool = Pool()
    first = await pool.request("GET", srv.url(), {})
    first.close()
    with pytest.raises(UpstreamTimeout, match=r"no answer within 0\.3 s"):
        await asyncio.wait_for(pool.request("GET", srv.url(), {}, head_timeout=0.3), 5)
    await asyncio.wait_for(srv.closed.wait(), 5)
    assert srv.connections == 1 and len(srv.requests) == 2 and pool.active == 0
    await pool.aclose()


# --- keep-alive expiry ---------------------------------------------------------------------------------
async def test_a_server_keep_alive_timeout_expires_the_connection_a_second_before_it(serve: Serve) -> None:
    """Regression: ``Keep-Alive: timeout=2`` was ignored; the connection was kept 15 s, past the moment the server
    closes it, so a request could be written into a closing connection."""
    srv = await serve(fixed(b"ok", "Keep-Alive: timeout=2, max=100"))
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    await resp.read()
    resp.close()
    assert pool.idle == 1
    await asyncio.wait_for(srv.closed.wait(), 3)  # this server never closes by itself: the client did, in time
    assert pool.idle == 0
    resp = await pool.request("GET", srv.url(), {})
    resp.close()
    assert srv.connections == 2
    await pool.aclose()


async def test_a_connection_kept_after_another_with_a_shorter_life_expires_at_its_own_time(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle sweep is armed at the first connection's expiry (30 s here); a connection kept after it whose
    server says ``Keep-Alive: timeout=2`` must close a second before that, ~1 s after it was kept, not when the
    sweep already scheduled comes (a lazy timer that is never moved earlier). Then the first one is still kept:
    the sweep looks again for the next expiry."""
    monkeypatch.setattr(httpclient, "KEEPALIVE_S", 30.0)
    long_lived = await serve(fixed(b"ok"))
    short_lived = await serve(fixed(b"ok", "Keep-Alive: timeout=2"))
    pool = Pool()
    for srv in (long_lived, short_lived):
        resp = await pool.request("GET", srv.url(), {})
        await resp.read()
        resp.close()
    loop = asyncio.get_running_loop()
    kept = loop.time()
    assert pool.idle == 2
    await asyncio.wait_for(short_lived.closed.wait(), 10)  # the sweep scheduled before it: at 30 s
    took = loop.time() - kept
    assert 0.9 <= took < 10, took  # its own expiry: 1 s (timers never fire early; the upper bound: a hang)
    assert pool.idle == 1 and not long_lived.closed.is_set()
    resp = await pool.request("GET", long_lived.url(), {})  # the long-lived one is reused
    resp.close()
    assert long_lived.connections == 1 and short_lived.connections == 1
    await pool.aclose()


async def test_every_connection_of_a_burst_is_kept_for_the_next_one(serve: Serve) -> None:
    """A burst of streams finds the connections of the last one open (until they expire), however many there were:
    a pool that kept at most 256 opened the rest again, a TCP (and TLS) handshake each in the middle of the
    burst."""
    srv = await serve(fixed(b"ok"))
    pool = Pool()
    for burst in (1, 2):
        responses = await asyncio.wait_for(asyncio.gather(*(pool.request("GET", srv.url(), {}) for _ in range(300))),
                                           30)
        assert pool.active == 300
        for resp in responses:
            assert await resp.read() == b"ok"
            resp.close()
        assert pool.idle == 300 and srv.connections == 300, (burst, pool.idle, srv.connections)
    await pool.aclose()


async def test_a_keep_alive_timeout_of_a_second_or_less_is_not_kept_at_all(serve: Serve) -> None:
    srv = await serve(fixed(b"ok", "Keep-Alive: timeout=1"))
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    await resp.read()
    resp.close()
    assert pool.idle == 0
    await asyncio.wait_for(srv.closed.wait(), 5)
    await pool.aclose()


async def test_an_idle_connection_expires_before_the_five_seconds_of_uvicorn_and_node(serve: Serve) -> None:
    """Regression: idle connections were kept 15 s; uvicorn and Node close theirs after 5 s, so a request sent
    after 5 s of quiet could meet the server's FIN and fail (or be retried) instead of going on a new connection."""
    srv = await serve(fixed(b"ok"))
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    await resp.read()
    resp.close()
    assert pool.idle == 1
    await asyncio.wait_for(srv.closed.wait(), 4.9)
    assert pool.idle == 0
    await pool.aclose()


# --- the drain after an end marker ---------------------------------------------------------------------
def sse_then_terminator(gate: asyncio.Event, after_done: bytes = b"0\r\n\r\n") -> Any:
    """An SSE answer whose ``[DONE]`` and chunked terminator go out in separate writes, ``gate`` between them."""

    async def handler(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in (b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await gate.wait()
        gate.clear()
        writer.write(after_done)
        await writer.drain()
        return True

    return handler


class _Sink:
    """A provider's sink that only the read itself concerns (no parts here)."""

    def emit(self, part: object) -> None: ...

    def alive(self) -> None: ...

    def holding(self, abort: object) -> None: ...

    def begin_read(self) -> None: ...

    def end_read(self, ending: bool) -> None: ...


async def read_to_done(pool: Pool, url: str) -> list[bytes]:
    """What a provider does: relay the events, ``stop()`` at ``[DONE]``, then ``close()``."""
    resp = await pool.request("POST", url, {}, b"{}")
    events: list[bytes] = []

    def on_event(event: bytes, data: bytes) -> None:
        events.append(data)
        if data == b"[DONE]":
            resp.stop()

    try:
        await asyncio.wait_for(read_events(resp, _Sink(), on_event), 5)
    finally:
        resp.close()
    return events


async def test_a_stream_stopped_at_done_returns_its_connection_when_the_terminator_comes_later(
    serve: Serve,
) -> None:
    """Regression: after ``stop()`` at ``[DONE]`` and ``close()``, the connection was kept only when the chunked
    terminator had come in the same read as ``[DONE]``; here it comes 100 ms later, after ``close()``."""
    gate = asyncio.Event()
    srv = await serve(sse_then_terminator(gate))
    pool = Pool()
    assert await read_to_done(pool, srv.url()) == [b'{"x": 1}', b"[DONE]"]
    assert pool.active == 0 and pool.idle == 0  # closed, still draining
    await asyncio.sleep(0.1)
    gate.set()
    await until(lambda: pool.idle == 1)
    assert await read_to_done(pool, srv.url()) == [b'{"x": 1}', b"[DONE]"]
    assert srv.connections == 1
    await pool.aclose()


@pytest.mark.parametrize("after_done", [b"", b"4000\r\n" + b"x" * 0x4000 + b"\r\n" + b"10\r\n" + b"y" * 16 + b"\r\n"],
                         ids=["terminator_never_comes", "body_goes_on"])
async def test_a_stream_that_does_not_end_after_done_has_its_connection_closed(serve: Serve, after_done: bytes) -> None:
    gate = asyncio.Event()
    srv = await serve(sse_then_terminator(gate, after_done))
    pool = Pool()
    await read_to_done(pool, srv.url())
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    gate.set()
    await asyncio.wait_for(srv.closed.wait(), 5)  # within DRAIN_S (1 s), or at once when too much came
    if not after_done:  # the drain ran to its end: DRAIN_S after close() (the sweep may end it 10 ms early)
        assert 0.95 <= loop.time() - closed_at < 5
    assert pool.idle == 0
    await pool.aclose()


async def test_a_drain_ends_at_its_own_time_while_the_sweep_waits_for_a_later_expiry(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drains share the pool's sweep with the idle connections: one kept first (expiring at 30 s here) armed it,
    and a drain that starts after it must still end DRAIN_S (1 s) after its ``close()``, not at 30 s. Then the
    idle one is still kept, and a drain that ends in time returns its connection."""
    monkeypatch.setattr(httpclient, "KEEPALIVE_S", 30.0)
    kept = await serve(fixed(b"ok"))
    pool = Pool()
    resp = await pool.request("GET", kept.url(), {})
    await resp.read()
    resp.close()
    assert pool.idle == 1
    gate = asyncio.Event()
    hangs = await serve(sse_then_terminator(gate, b""))  # the terminator never comes
    await read_to_done(pool, hangs.url())
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    gate.set()
    await asyncio.wait_for(hangs.closed.wait(), 10)
    assert 0.95 <= loop.time() - closed_at < 10
    assert pool.idle == 1 and not kept.closed.is_set()
    late = await serve(sse_then_terminator(gate))  # the terminator 100 ms after close(): in time
    await read_to_done(pool, late.url())
    await asyncio.sleep(0.1)
    gate.set()
    await until(lambda: pool.idle == 2)
    await asyncio.sleep(1.2)  # past that drain's DRAIN_S: the sweep finds nothing to end
    assert pool.idle == 2 and not late.closed.is_set()
    await pool.aclose()


# --- connecting ------------------------------------------------------------------------------------------
async def test_happy_eyeballs_reaches_the_second_address_while_the_first_hangs(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the addresses of a host were tried one after the other, so a first address that swallows SYNs
    (here ``::1`` with a full accept queue) made the request wait for the whole connect timeout."""
    srv = await serve(fixed(b"v4"))
    with socket.socket(socket.AF_INET6) as hole, socket.socket(socket.AF_INET6) as filler:
        hole.bind(("::1", srv.port))
        hole.listen(0)
        filler.connect(("::1", srv.port))  # fills the accept queue: the next SYNs are dropped
        loop = asyncio.get_running_loop()
        resolve = loop.getaddrinfo

        async def both_families(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
            if host == "dual.test":  # IPv6 first, as resolvers sort a host with both
                return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            return await resolve(host, port, *args, **kw)

        monkeypatch.setattr(loop, "getaddrinfo", both_families)
        pool = Pool(connect_timeout=5)
        resp = await asyncio.wait_for(pool.request("GET", f"http://dual.test:{srv.port}/", {}), 10)
        assert await resp.read() == b"v4"
        resp.close()
        await pool.aclose()


async def _connect_to_a_full_queue(host: str) -> tuple[BaseException | None, float, int]:
    """A request to ``host`` at a port whose listener (on 127.0.0.1) has a full accept queue, so that its SYNs get no
    answer, with a connect timeout of 0.5 s: what it raised, after how long, and the port."""
    loop = asyncio.get_running_loop()
    with socket.socket() as hole, socket.socket() as filler:
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        port = hole.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # fills the accept queue: the next SYNs are dropped
        pool = Pool(connect_timeout=0.5)
        t0 = loop.time()
        raised: BaseException | None = None
        try:
            await asyncio.wait_for(pool.request("GET", f"http://{host}:{port}/", {}), 10)
        except BaseException as exc:  # what it raised is the result
            raised = exc
        elapsed = loop.time() - t0
        await asyncio.sleep(0.01)  # the connect's timer was taken back: no cancel is pending for this task
        await pool.aclose()
    return raised, elapsed, port


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, new_event_loop], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["ip-address", "name-resolved"])
def test_a_connect_that_gets_no_answer_is_an_upstream_timeout_at_the_connect_timeout(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], host: str
) -> None:
    """An IP address is connected by the loop without resolving, a name after it (and a race of its addresses when
    it has several: ``localhost``'s ``::1`` refuses at once here); either way the connect timeout bounds it and ends
    it as an ``UpstreamTimeout`` that names the upstream."""
    loop = loop_factory()
    try:
        raised, elapsed, port = loop.run_until_complete(_connect_to_a_full_queue(host))
    finally:
        loop.close()
    assert isinstance(raised, UpstreamTimeout), repr(raised)
    assert str(raised) == f"connecting to the upstream at {host}:{port} timed out"
    assert isinstance(raised.__cause__, TimeoutError)
    assert 0.49 <= elapsed < 5.0, elapsed


_CONNECT_ON_UVLOOP = textwrap.dedent("""
    import asyncio, os, socket, uvloop
    from ssegate.upstream.dial import dial
    from ssegate.upstream.httpclient import Pool

    def threads():
        return len(os.listdir("/proc/self/task"))

    async def answer(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        await writer.drain()

    async def main():
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        server = await asyncio.start_server(answer, sock=listening)
        before = threads()
        pool = Pool(connect_timeout=5)
        for _ in range(3):  # three connections: the server closes none, but each request takes a new one
            resp = await pool.request("GET", f"http://127.0.0.1:{listening.getsockname()[1]}/", {})
            assert await resp.read() == b"ok"
            resp.cut()
        await pool.aclose()
        sock = await dial("127.0.0.1", listening.getsockname()[1])  # (as a proxy is reached: a socket of ours)
        sock.close()
        server.close()
        print(before, threads())

    uvloop.run(main())
""")


def test_a_connection_to_an_ip_address_is_made_without_a_thread_of_the_loops_resolver() -> None:
    """Regression: each new upstream connection went through ``loop.sock_connect``, whose uvloop version resolves
    the address again without a socket type; that misses uvloop's shortcut for an IP address, so every connection
    waited on libuv's resolver thread pool (its four threads started at the first one). On uvloop, as the gateway
    runs, connecting to ``127.0.0.1`` starts no thread: neither the pool's connections (the loop's own connect) nor
    ``dial``'s socket (how a proxy, or a host of several addresses, is reached)."""
    out = subprocess.run([sys.executable, "-c", _CONNECT_ON_UVLOOP], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after == before == 1, out.stdout


async def _abort_mid_answer() -> bytes:
    """A response aborted mid-answer, then, before the loop runs again, what the upstream's side reads."""
    loop = asyncio.get_running_loop()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        listening.setblocking(False)
        pool = Pool(connect_timeout=5)
        asked = loop.create_task(pool.request("GET", f"http://127.0.0.1:{listening.getsockname()[1]}/", {}))
        peer, _ = await loop.sock_accept(listening)
        with peer:
            await loop.sock_recv(peer, 65536)
            await loop.sock_sendall(peer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
            resp = await asyncio.wait_for(asked, 10)
            resp.abort()
            peer.settimeout(3)  # blocking, in the loop's own thread: nothing else runs until it returns
            try:
                seen = peer.recv(100)
            except TimeoutError:
                seen = b"(nothing within 3 s)"
        await pool.aclose()
    return seen


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, new_event_loop], ids=["asyncio", "uvloop"])
def test_an_aborted_response_shuts_its_connection_down_before_the_loop_runs_again(
        loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """``Response.abort`` (a client's disconnect) shuts the socket down itself, so the upstream reads the end of
    its connection before the loop runs anything else, as on the loop the pool connected on its own (uvloop's
    socket object refuses ``shutdown``: one is made on the transport's fd)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(_abort_mid_answer()) == b""


async def test_the_tls_context_is_made_with_the_pool_not_at_the_first_https_request(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Regression: the default TLS context (loading the trust store, tens of ms) was made inside the event loop at
    the first ``https`` request, stalling every stream of the process meanwhile."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    srv = await serve(fixed(b"tls"), server_tls)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the system trust store, pointed at this CA
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kw: Any) -> ssl.SSLContext:
        made.append(real(*args, **kw))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    pool = Pool()
    assert made == [pool.ssl_context]
    for _ in range(2):
        resp = await pool.request("GET", srv.url(host="localhost", scheme="https"), {})
        assert await resp.read() == b"tls"
        resp.close()
    assert made == [pool.ssl_context]
    await pool.aclose()


# --- timeouts ----------------------------------------------------------------------------------------------
async def test_read_of_a_stalled_short_body_is_an_upstream_timeout_but_a_stream_has_no_read_timer(
    serve: Serve,
) -> None:
    """``read()`` (error details, ``/models``) is bounded by ``read_timeout``; a stream is not (its silences are
    the generation's to judge): a 0.5 s gap in a stream passes under a 0.2 s read timeout."""
    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.startswith(b"GET /short"):
            writer.write(b"HTTP/1.1 500 X\r\nContent-Length: 10\r\n\r\n")
            await writer.drain()
            await reader.read()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")
        return True

    srv = await serve(answer)
    pool = Pool(read_timeout=0.2)
    resp = await pool.request("GET", srv.url("/short"), {})
    with pytest.raises(UpstreamTimeout, match=r"no more of its answer for 0\.2 s"):
        await asyncio.wait_for(resp.read(), 5)
    resp.close()
    resp = await pool.request("GET", srv.url("/stream"), {})
    got: list[bytes] = []
    resp.stream(got.append)
    await asyncio.wait_for(resp.finished(), 5)
    assert b"".join(got) == b"onetwo"
    resp.close()
    await pool.aclose()
