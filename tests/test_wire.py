"""The upstream HTTP client (``upstream/httpclient.py``) against a real loopback server that scripts each answer."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator

import pytest
import trustme

from ssegate.core.request import ChatRequest
from ssegate.errors import UpstreamError, UpstreamProtocolError, UpstreamRateLimited
from ssegate.upstream.httpclient import Pool
from ssegate.upstream.openai import OpenAIProvider
from tests.fakes import FakeUpstream, Script
from tests.support.scripted import Serve, fixed, raw, servers


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with servers() as start:
        yield start

async def test_a_response_read_to_its_end_leaves_its_connection_for_the_next_request(serve: Serve) -> None:
    srv = await serve(fixed(b"hello"))
    pool = Pool()
    for _ in range(3):
        resp = await pool.request("GET", srv.url("/models"), {})
        assert (resp.status, await resp.read()) == (200, b"hello")
        resp.close()
    assert srv.connections == 1
    assert srv.requests[0].startswith(b"GET /models HTTP/1.1\r\nHost: 127.0.0.1:")
    assert pool.active == 0 and pool.idle == 1
    await pool.aclose()


async def test_a_kept_connection_that_the_server_closed_is_retried_on_a_new_one(serve: Serve) -> None:
    # says keep-alive, closes anyway (as servers do when their idle timer fires)
    once = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", keep=False)

    srv = await serve(once)
    pool = Pool()
    first = await pool.request("GET", srv.url(), {})
    assert await first.read() == b"ok"
    first.close()
    assert pool.idle == 1
    await srv.closed.wait()
    second = await pool.request("POST", srv.url(), {}, b"{}")
    assert await second.read() == b"ok"
    second.close()
    assert srv.connections == 2
    assert srv.requests[-1].endswith(b"Content-Length: 2\r\n\r\n{}")
    await pool.aclose()


async def test_a_chunked_body_is_pushed_to_the_consumer_as_each_piece_arrives(serve: Serve) -> None:
    step = asyncio.Event()

    async def chunked(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"one", b"two", b"three"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await step.wait()
            step.clear()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    srv = await serve(chunked)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    got: list[bytes] = []
    arrived = asyncio.Event()

    def on_body(piece: bytes) -> None:
        got.append(piece)
        arrived.set()

    resp.stream(on_body)
    for n in (1, 2, 3):
        await asyncio.wait_for(arrived.wait(), 5)
        arrived.clear()
        assert b"".join(got) == b"onetwothree"[: (3, 6, 11)[n - 1]]  # each piece before the next was sent
        step.set()
    await asyncio.wait_for(resp.finished(), 5)
    assert resp.complete
    resp.close()
    assert pool.idle == 1
    await pool.aclose()


async def test_the_chunks_one_read_brings_reach_the_consumer_in_one_call(serve: Serve) -> None:
    """A read that carries several chunks of a chunked body (a stream's last token, its finish and ``[DONE]``, as
    a rule) is handed over in one call, their bytes joined, once the read is parsed; a read of one chunk is one
    call of that chunk. The body's end comes after it."""
    step = asyncio.Event()

    async def chunked(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await step.wait()
        writer.write(b"3\r\ntwo\r\n5\r\nthree\r\n4\r\nfour\r\n0\r\n\r\n")  # one write: one read
        await writer.drain()
        return True

    srv = await serve(chunked)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    got: list[tuple[bytes, bool]] = []
    arrived = asyncio.Event()

    def on_body(piece: bytes) -> None:
        got.append((piece, resp.complete))
        arrived.set()

    resp.stream(on_body)
    await asyncio.wait_for(arrived.wait(), 5)
    step.set()
    await asyncio.wait_for(resp.finished(), 5)
    assert got == [(b"one", False), (b"twothreefour", False)]
    assert resp.complete
    resp.close()
    assert pool.idle == 1
    await pool.aclose()


async def test_the_body_that_came_before_the_consumer_reaches_it_at_once_a_piece_at_a_time(serve: Serve) -> None:
    """Chunks that arrived with the head, before ``stream`` was called (a short answer, as a rule, all of it), are
    handed over at once, a chunk at a time (joined, they cost a short stream ~5k instructions in the event splitter
    and saved no write: the stream's commit writes them together); what comes later, a read at a time."""
    step = asyncio.Event()

    async def early(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n")
        await writer.drain()
        await step.wait()
        writer.write(b"5\r\nthree\r\n0\r\n\r\n")
        await writer.drain()
        return True

    srv = await serve(early)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    await asyncio.sleep(0.1)  # the two chunks are in before the consumer comes
    got: list[bytes] = []
    resp.stream(got.append)
    assert got == [b"one", b"two"]
    step.set()
    await asyncio.wait_for(resp.finished(), 5)
    assert got == [b"one", b"two", b"three"]
    resp.close()
    await pool.aclose()


async def test_what_the_consumer_raises_fails_the_response_and_closes_its_connection(serve: Serve) -> None:
    async def endless(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # until the client closes
        return False

    srv = await serve(endless)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})

    def on_body(piece: bytes) -> None:
        raise UpstreamProtocolError("bad chunk")

    resp.stream(on_body)
    with pytest.raises(UpstreamProtocolError, match="bad chunk"):
        await asyncio.wait_for(resp.finished(), 5)
    resp.close()
    await asyncio.wait_for(srv.closed.wait(), 5)  # the server saw the connection end
    assert pool.active == 0 and pool.idle == 0
    await pool.aclose()


async def test_abort_ends_the_connection_while_the_body_is_still_coming(serve: Serve) -> None:
    async def endless(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()
        return False

    srv = await serve(endless)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    waiting = asyncio.ensure_future(resp.finished())
    resp.abort()
    await asyncio.wait_for(srv.closed.wait(), 5)
    with pytest.raises(UpstreamError, match="aborted"):
        await asyncio.wait_for(waiting, 5)
    await pool.aclose()


async def test_gzip_and_read_until_close_bodies_are_decoded(serve: Serve) -> None:
    payload = b"data: zipped\n\n" * 50

    zipped = raw(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n" + gzip.compress(payload),
                 keep=False)

    srv = await serve(zipped)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    assert await asyncio.wait_for(resp.read(), 5) == payload
    assert resp.complete
    resp.close()
    assert pool.idle == 0  # "Connection: close" is not kept
    await pool.aclose()


async def test_a_body_cut_short_is_an_upstream_error(serve: Serve) -> None:
    cut = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", keep=False)

    srv = await serve(cut)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})
    got: list[bytes] = []
    resp.stream(got.append)
    with pytest.raises(UpstreamError, match="before the answer was complete"):
        await asyncio.wait_for(resp.finished(), 5)
    assert got == [b"only this"]
    resp.close()
    await pool.aclose()


async def test_not_http_and_refused_connections_are_clear_upstream_errors(serve: Serve) -> None:
    garbage = raw(b"SSH-2.0-OpenSSH\r\n\r\n")

    srv = await serve(garbage)
    pool = Pool()
    with pytest.raises(UpstreamProtocolError, match="malformed HTTP"):
        await pool.request("GET", srv.url(), {})
    port = (await serve(fixed(b""))).port
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.request("GET", "http://127.0.0.1:1/", {})
    with pytest.raises(UpstreamError, match="line break"):
        await pool.request("GET", f"http://127.0.0.1:{port}/", {"Authorization": "Bearer a\r\nX-Evil: 1"})
    assert pool.active == 0
    await pool.aclose()


async def test_limit_holds_a_request_until_another_is_closed(serve: Serve) -> None:
    srv = await serve(fixed(b"x"))
    pool = Pool(limit=1)
    first = await pool.request("GET", srv.url(), {})
    second = asyncio.ensure_future(pool.request("GET", srv.url(), {}))
    await asyncio.sleep(0)  # one loop pass: the second request runs until it has to wait
    assert pool.waiting == 1 and not second.done()
    await first.read()
    first.close()
    resp = await asyncio.wait_for(second, 5)
    assert await resp.read() == b"x"
    resp.close()
    await pool.aclose()


async def test_a_gzip_body_that_arrived_before_the_consumer_is_handed_over_decoded_once(serve: Serve) -> None:
    """Regression: pieces buffered before ``stream()`` were decompressed a second time when handed over."""
    z = zlib.compressobj(wbits=31)  # gzip
    first = z.compress(b"data: early\n\n" * 20) + z.flush(zlib.Z_SYNC_FLUSH)
    rest = z.compress(b"data: late\n\n") + z.flush()
    step = asyncio.Event()

    async def zipped(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await step.wait()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await writer.drain()
        return True

    srv = await serve(zipped)
    pool = Pool()
    resp = await pool.request("GET", srv.url(), {})

    async def buffered() -> None:
        while not resp._body:  # the first piece arrived and nobody took it yet
            await asyncio.sleep(0.001)

    await asyncio.wait_for(buffered(), 5)
    got: list[bytes] = []
    resp.stream(got.append)
    step.set()
    await asyncio.wait_for(resp.finished(), 5)
    assert b"".join(got) == b"data: early\n\n" * 20 + b"data: late\n\n"
    resp.close()
    await pool.aclose()


async def test_https_verifies_the_upstream_certificate_and_keeps_the_connection(serve: Serve) -> None:
    """TLS with the server name checked against the certificate; a certificate nobody trusts is refused."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    srv = await serve(fixed(b"secret"), server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    pool = Pool(ssl_context=trusting)
    for _ in range(2):
        resp = await pool.request("GET", f"https://localhost:{srv.port}/v1/models", {})
        assert await resp.read() == b"secret"
        resp.close()
    assert srv.connections == 1
    assert srv.requests[0].startswith(b"GET /v1/models HTTP/1.1\r\nHost: localhost:")
    await pool.aclose()
    default = Pool()  # the system's trust store: this test CA is not in it
    with pytest.raises(UpstreamError, match="cannot connect") as info:
        await default.request("GET", f"https://localhost:{srv.port}/", {})
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    await default.aclose()


class RecordingSink:
    """A ``Sink`` that keeps what a provider gives it (the gateway's is a ``Generation``)."""

    def __init__(self) -> None:
        self.parts: list[object] = []
        self.reads = 0
        self.aborts: list[object] = []
        self.batches: list[int] = []
        """The number of parts emitted before each read of several events began ..."""
        self.batch_ends: list[tuple[int, bool]] = []
        """... and after it ended, with whether it ended the answer."""

    def emit(self, part: object) -> None:
        self.parts.append(part)

    def alive(self) -> None:
        self.reads += 1

    def holding(self, abort: object) -> None:
        self.aborts.append(abort)

    def begin_read(self) -> None:
        self.batches.append(len(self.parts))

    def end_read(self, ending: bool) -> None:
        self.batch_ends.append((len(self.parts), ending))


async def test_a_provider_streams_into_any_sink(upstream: FakeUpstream) -> None:
    """The provider protocol has one path: parts go to the caller's sink as they arrive, the ``Finish`` is
    returned, the abort handle is held while the request is open and let go at the end."""
    deltas = ["Hel", "lo\n", " wor", "ld"]
    prompt = upstream.script(Script(deltas=deltas, delay=0.005))
    pool = Pool()
    provider = OpenAIProvider(upstream.url, "key", pool)
    sink = RecordingSink()
    try:
        finish = await provider.stream(ChatRequest([{"role": "user", "content": prompt}], "fake-model"), sink)
    finally:
        await pool.aclose()
    assert sink.parts == deltas
    assert finish.reason == "stop" and finish.usage is not None
    assert sink.reads >= len(deltas)
    assert callable(sink.aborts[0]) and sink.aborts[-1] is None


async def test_a_read_of_several_events_is_bracketed_for_the_sink_and_says_whether_it_ended_the_answer(
    serve: Serve
) -> None:
    """``read_events`` tells the sink where a read of several events begins and ends (so that the gateway's client
    gets them in one write), and whether it ended the answer (``[DONE]``: their write then waits for the terminal
    event); a read of one event goes to the sink alone, unbracketed."""
    def chunk(content: bytes, finish: bytes = b"null") -> bytes:
        return _chunked(_sse_body(CHUNK % (content, finish)))

    role = _chunked(_sse_body(CHUNK.replace(b'"content":%s', b'"role":"assistant","content":""') % b"null"))
    reads = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + role,
        chunk(b'"a"') + chunk(b'"b"') + chunk(b'"c"'),
        chunk(b'"d"'),
        _chunked(_sse_body(CHUNK % (b'"e"', b"null"), CHUNK % (b'""', b'"stop"'), b"[DONE]")) + b"0\r\n\r\n",
    ]

    async def in_reads(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        for data in reads:  # each in one write, apart in time: one read each
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.05)
        return True

    srv = await serve(in_reads)
    pool = Pool()
    provider = OpenAIProvider(srv.url("/v1"), "key", pool)
    sink = RecordingSink()
    try:
        finish = await asyncio.wait_for(
            provider.stream(ChatRequest([{"role": "user", "content": "hi"}], "m"), sink), 10)
    finally:
        await pool.aclose()
    assert sink.parts == ["a", "b", "c", "d", "e"]
    assert finish.reason == "stop"
    assert sink.batches == [0, 4]  # the parts emitted before each bracketed read began ...
    assert sink.batch_ends == [(3, False), (5, True)]  # ... and after it ended; the last one ended the answer


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_body(*datas: bytes) -> bytes:
    return b"".join(b"data: " + d + b"\n\n" for d in datas)


CHUNK = (b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733400000,"model":"m",'
         b'"system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":%s},"logprobs":null,'
         b'"finish_reason":%s}]}')


@pytest.mark.parametrize(("data", "error", "message"), [
    (b"[1, 2]", UpstreamProtocolError, "the upstream sent data of an unexpected shape"),
    (b'{"choices": 5}', UpstreamProtocolError, "the upstream sent data of an unexpected shape"),
    (b'{"choices": [{"delta": {"content": "x"', UpstreamProtocolError,
     "the upstream sent malformed data (not the expected JSON)"),
    (b'{"error": null}', UpstreamError, "upstream answered 502: {}"),  # (as before: the key, not its value)
    (b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}', UpstreamRateLimited,
     "upstream rate limit: slow down"),
    (b'{"choices": [{"delta": {"tool_calls": [7]}}]}', UpstreamProtocolError,
     "the upstream sent data of an unexpected shape"),
    (b'{"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}', UpstreamProtocolError,
     "the upstream sent data of an unexpected shape"),
], ids=["array", "wrong-shape", "truncated", "error-null", "error-rate-limited", "tool-call-not-an-object",
        "function-not-an-object"])
async def test_a_chunk_is_read_for_its_fields_and_bad_ones_are_typed_errors(
    serve: Serve, data: bytes, error: type[Exception], message: str,
) -> None:
    """``chat.completion.chunk`` events are decoded into the fields read (``upstream/chunks.py``): a full chunk's
    text, finish reason and usage come through with its other fields skipped; JSON that is not an object, a wrong
    shape, malformed JSON and an ``error`` key (even ``null``) after a token are the typed errors they were."""
    first = CHUNK % (b'"Hel"', b"null")
    good = _sse_body(first, CHUNK % (b'"lo"', b'"stop"'),
                     b'{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}', b"[DONE]")
    srv = await serve(fixed(good, "Content-Type: text/event-stream"))
    pool = Pool()
    try:
        sink = RecordingSink()
        finish = await OpenAIProvider(srv.url(""), "key", pool).stream(ChatRequest([], "m"), sink)
        assert sink.parts == ["Hel", "lo"]
        assert finish.reason == "stop" and finish.usage is not None
        assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (3, 2)

        bad = await serve(fixed(_sse_body(first, data), "Content-Type: text/event-stream"))
        sink = RecordingSink()
        with pytest.raises(error) as raised:
            await OpenAIProvider(bad.url(""), "key", pool).stream(ChatRequest([], "m"), sink)
        assert str(raised.value) == message
        assert sink.parts == ["Hel"]
    finally:
        await pool.aclose()


def test_the_reader_takes_each_field_of_a_chunk_at_its_place_in_chunks_py() -> None:
    """``openai._ChunkReader`` reads a decoded chunk's parts as tuples (``msgspec.structs.astuple``), by position:
    its positions are those of the fields ``chunks.py`` declares."""
    from ssegate.upstream import chunks, openai

    places = {
        chunks.ChatChunk: {"choices": openai._CHOICES, "usage": openai._USAGE, "error": openai._ERROR},
        chunks.ChunkChoice: {"delta": openai._DELTA, "finish_reason": openai._FINISH_REASON},
        chunks.ChunkDelta: {"content": openai._CONTENT, "reasoning_content": openai._REASONING_CONTENT,
                            "reasoning": openai._REASONING, "reasoning_details": openai._REASONING_DETAILS,
                            "tool_calls": openai._TOOL_CALLS},
        chunks.ToolCallFragment: {"index": openai._INDEX, "id": openai._ID, "function": openai._FUNCTION},
        chunks.ChunkFunction: {"name": openai._NAME, "arguments": openai._ARGUMENTS},
    }
    for struct, fields in places.items():
        assert struct.__struct_fields__ == tuple(sorted(fields, key=fields.__getitem__)), struct
