"""The upstream client's reading of response framing: interim answers, the head limit, and a differential fuzz
of bodies and message ends against ``h11`` as the oracle, over a real loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssegate.errors import UpstreamError, UpstreamProtocolError
from ssegate.upstream.httpclient import Pool
from tests.support.scripted import Serve, servers


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with servers() as start:
        yield start


INTERIM = (b"HTTP/1.1 100 Continue\r\n\r\n",
           b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"


@pytest.mark.parametrize("split", ["each_in_its_own_read", "all_in_one_read"])
async def test_interim_1xx_answers_are_skipped_not_taken_as_the_answer(serve: Serve, split: str) -> None:
    """Regression: a ``100 Continue`` or ``103 Early Hints`` before the answer was returned as the response
    (status 100, no body), whether it came in its own read or in the same read as the final head."""

    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if split == "all_in_one_read":
            writer.write(b"".join(INTERIM) + FINAL)
        else:
            for piece in (*INTERIM, FINAL):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.02)  # separate TCP segments, read one at a time
        await writer.drain()
        return True

    srv = await serve(answer)
    pool = Pool()
    for _ in range(2):  # and the connection is kept: the interim answers left nothing behind
        resp = await asyncio.wait_for(pool.request("POST", srv.url(), {}, b"{}"), 5)
        assert (resp.status, resp.headers.get("x-final"), "link" in resp.headers) == (200, "yes", False)
        assert await asyncio.wait_for(resp.read(), 5) == b"ok"
        resp.close()
    assert srv.connections == 1
    await pool.aclose()


async def test_headers_are_the_final_heads_joined_by_name_without_trailers(serve: Serve) -> None:
    """``Response.headers`` is made when first asked for, from the final head alone: names in lower case, a repeated
    name's values joined with ", ", an interim answer's headers and the chunked body's trailers left out, whether
    it is asked for before the body is read or after; the head's own framing (chunked, gzip) still applies."""
    body = gzip.compress(b"hello")
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\nX-Trailer: late\r\n\r\n"

    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(INTERIM[1] + b"HTTP/1.1 200 OK\r\nX-Multi: a\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\nx-multi: b\r\n\r\n" + chunked)
        await writer.drain()
        return True

    srv = await serve(answer)
    pool = Pool()
    want = {"x-multi": "a, b", "content-type": "text/plain", "transfer-encoding": "chunked",
            "content-encoding": "gzip"}
    for ask_first in (True, False):
        resp = await asyncio.wait_for(pool.request("GET", srv.url(), {}), 5)
        first = dict(resp.headers) if ask_first else None
        assert await asyncio.wait_for(resp.read(), 5) == b"hello"
        assert resp.headers == want and (first is None or first == want)
        resp.close()
    assert srv.connections == 1  # the chunked end and its trailer were read: the connection was kept
    await pool.aclose()


async def test_a_48_mib_header_line_is_refused_after_64_kib_without_buffering_it(serve: Serve) -> None:
    """Regression: the head limit was checked on complete header lines, after the parser had gathered them, so a
    header line that never ends was buffered whole (here 48 MiB) before being refused, if ever."""
    total = 48 << 20
    piece = b"a" * (64 << 10)
    sent = 0

    async def endless_header(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        nonlocal sent
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        while sent < total:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        writer.write(b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return False

    srv = await serve(endless_header)
    pool = Pool()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(UpstreamProtocolError, match="head over 64 KiB"):
            await asyncio.wait_for(pool.request("GET", srv.url(), {}), 60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    await asyncio.wait_for(srv.closed.wait(), 10)  # the client hung up: the server's writes stopped
    assert peak < 8 << 20, f"{peak >> 20} MiB traced while a header line was refused"
    assert sent < 16 << 20, f"the server got {sent >> 20} MiB of the header line out before the client hung up"
    await pool.aclose()


# --- differential fuzz: the client vs h11 on the same bytes -------------------------------------------------
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(lambda s: s[0] != "-")
VALUE = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ;=/,.:_-", max_size=30).map(str.strip)
RESERVED = {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive", "upgrade",
            "trailer", "te"}


NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
"""For the fuzz's pools (plain http): the default context, made per pool, would cost more than a whole case."""


@dataclass
class Case:
    raw: bytes
    cuts: list[int]
    close_after: bool
    """The server closes the connection once all is written (the ``until-close`` framing, or a truncated answer)."""


@st.composite
def responses(draw: st.DrawFn) -> Case:
    status = draw(st.sampled_from([200, 201, 203, 204, 206, 304, 400, 404, 429, 500, 502, 503]))
    framing = draw(st.sampled_from(["length", "chunked", "until-close"]))
    body = draw(st.binary(max_size=3000)) if status not in (204, 304) else b""
    zipped = bool(body) and draw(st.booleans())
    wire_body = gzip.compress(body, mtime=0) if zipped else body
    head = [f"HTTP/1.1 {status} {draw(st.sampled_from(['OK', 'Whatever', '']))}".rstrip(" ")]
    interim = draw(st.sampled_from([[], ["100 Continue"], ["103 Early Hints"], ["100 Continue", "103 Early Hints"]]))
    headers = [(n, v) for n, v in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=6)) if n not in RESERVED]
    if zipped:
        headers.append(("Content-Encoding", "gzip"))
    if draw(st.booleans()):
        headers.append(("Connection", "close"))
    payload = b""
    if status in (204, 304):
        framing = "length"
    elif framing == "length":
        headers.append(("Content-Length", str(len(wire_body))))
        payload = wire_body
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        at = 0
        while at < len(wire_body):
            size = draw(st.integers(1, max(1, len(wire_body) - at)))
            ext = draw(st.sampled_from(["", ";x", ";name=value", ";a=1;b"]))
            payload += b"%x%s\r\n%s\r\n" % (size, ext.encode(), wire_body[at:at + size])
            at += size
        trailers = [(n, v) for n, v in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=3)) if n not in RESERVED]
        payload += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"
    else:
        payload = wire_body
    raw = b"".join(f"HTTP/1.1 {line}\r\n\r\n".encode() for line in interim)
    raw += ("\r\n".join([head[-1], *(f"{n}: {v}" for n, v in headers)]) + "\r\n\r\n").encode() + payload
    truncate = draw(st.booleans()) and draw(st.booleans())  # a quarter of the answers are cut short
    if truncate:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=8))))
    return Case(raw, cuts, framing == "until-close" or truncate)


def h11_reading(case: Case) -> tuple[int | None, bytes, bool, bool]:
    """What h11 makes of the bytes: (final status, decoded body, message complete, connection reusable)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    status, body, complete, zipped = None, b"", False, False
    try:
        conn.receive_data(case.raw)
        if case.close_after:
            conn.receive_data(b"")
        while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Response):
                status = event.status_code
                zipped = any(n == b"content-encoding" and v == b"gzip" for n, v in event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                complete = True
            elif isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError:
        complete = False
    if complete and zipped:  # a gzip body cut short (an answer read until close) is no complete answer either
        decoder = zlib.decompressobj(wbits=47)
        body = decoder.decompress(body) + decoder.flush()
        complete = decoder.eof
    reusable = complete
    try:
        conn.start_next_cycle()  # only when both sides are done and nothing said close
    except h11.LocalProtocolError:
        reusable = False
    return status, body, complete, reusable


async def client_reading(case: Case) -> tuple[int | None, bytes, bool, bool]:
    """The same for ``httpclient.Pool`` with the bytes sent in pieces (``cuts``) from a loopback server."""

    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        start = 0
        for cut in [*case.cuts, len(case.raw)]:
            writer.write(case.raw[start:cut])
            await writer.drain()
            await asyncio.sleep(0)  # the client reads this piece before the next is written
            start = cut
        if case.close_after:
            return False
        await reader.read()  # until the client closes
        return False

    async with servers() as start:
        srv = await start(answer)
        pool = Pool(ssl_context=NO_TLS)
        got: list[bytes] = []
        status, complete = None, False
        try:
            resp = await asyncio.wait_for(pool.request("GET", srv.url(), {}), 5)
            status = resp.status
            resp.stream(got.append)
            with contextlib.suppress(UpstreamError):
                await asyncio.wait_for(resp.finished(), 5)
            complete = resp.complete
            resp.close()
        except UpstreamError:
            pass
        kept = pool.idle == 1
        await pool.aclose()
    return status, b"".join(got) if complete else b"", complete, kept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_response_framing_split_anywhere_reads_as_h11_reads_it(case: Case) -> None:
    """Status, body (gzip decoded), end of message and whether the connection may be reused agree with h11's
    reading of the same bytes, wherever the bytes are split across reads; answers cut short are incomplete for
    both (nothing partial is taken as a whole message)."""
    want = h11_reading(case)
    got = asyncio.run(client_reading(case))
    if not want[2]:  # h11 saw no complete message: neither may the client
        assert not got[2], (case, got)
        return
    assert got == want, case
