"""The upstream client's reading of response framing: interim answers, the head limit, and a differential fuzz
of bodies and message ends against ``h11`` as the oracle, over a real loopback socket."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from ssegate.errors import UpstreamProtocolError
from ssegate.providers.wire import Pool
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
