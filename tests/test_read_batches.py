"""The events that one upstream read brings reach the client in one write. ``Response`` hands a read's body to the
provider in one call (``upstream/httpclient.py``), ``read_events`` brackets a read of several events for the
generation (``Sink.begin_read``, ``end_read``), and its log wakes the client's response once for them
(``StreamLog.hold``, ``release``); a read that ends the answer (``[DONE]``) has its events written with the
terminal event that follows. Here on a gateway in this process, on asyncio's loop, whose transports write at once
and can be counted; uvloop's gather the writes of one pass of its loop, which the push path (one write per event,
unless the transport still holds bytes) used to split in two."""

from __future__ import annotations

import asyncio
from asyncio.selector_events import _SelectorSocketTransport  # type: ignore[attr-defined]
from typing import Any

import pytest

import ssegate
from ssegate.core.log import StreamLog
from ssegate.http.uvicorn_glue import BoundedRequestProtocol
from tests.support.inproc import ServerThread
from tests.support.scripted import Serve, servers

CHUNK = (b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733400000,"model":"m",'
         b'"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}')


def _event(delta: bytes, finish: bytes = b"null") -> bytes:
    data = b"data: " + CHUNK % (delta, finish) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
READS = [  # each in one write, 0.1 s apart: one read each
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + _event(b'{"role":"assistant","content":""}'),
    _event(b'{"content":"x"}'),
    _event(b'{"content":"a"}') + _event(b'{"content":"b"}') + _event(b'{"content":"c"}'),
    _event(b'{"content":"e"}') + _event(b"{}", b'"stop"') + DONE,
]


@pytest.fixture
async def serve() -> Any:
    async with servers() as start:
        yield start


async def test_the_events_of_one_upstream_read_reach_the_client_in_one_write(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def in_reads(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        for data in READS:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.1)
        return True

    srv = await serve(in_reads)
    client: list[Any] = []
    writes: list[bytes] = []
    write = _SelectorSocketTransport.write

    def counted(self: _SelectorSocketTransport, data: Any) -> None:
        if client and self.get_extra_info("peername") == client[0]:
            writes.append(bytes(data))
        write(self, data)

    monkeypatch.setattr(_SelectorSocketTransport, "write", counted)
    settings = ssegate.Settings(provider="openai", upstream_url=srv.url("/v1"), upstream_api_key="k", model="m")
    with ServerThread(ssegate.create_app(settings), http=BoundedRequestProtocol, loop="asyncio") as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        client.append(writer.get_extra_info("sockname"))
        body = b'{"messages":[{"role":"user","content":"hi"}]}'
        writer.write(b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        got = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
        writer.close()
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    deltas = [w for w in writes if b'"delta"' in w]
    assert [[d for d in (b"x", b"a", b"b", b"c", b"e") if b'"delta":"%s"' % d in w] for w in deltas] == [
        [b"x"], [b"a", b"b", b"c"], [b"e"]], writes
    assert b"event: done" in deltas[-1], writes  # the last token and the end, in one write
    assert sum(b"event: done" in w for w in writes) == 1


def test_a_held_log_wakes_its_followers_once_at_release_or_leaves_them_to_the_next_append() -> None:
    log = StreamLog("s", "o", "m")
    woken: list[int] = []
    log.listen(lambda: woken.append(log.last_seq))
    log.append(1, "a")
    assert woken == [1]
    log.hold()
    log.append(1, "b")
    log.append(1, "c")
    assert woken == [1]
    log.release(wake=True)
    assert woken == [1, 3]
    log.hold()
    log.release(wake=True)  # nothing appended meanwhile: nobody woken
    assert woken == [1, 3]
    log.hold()
    log.append(1, "d")
    log.release(wake=False)  # the read ended the answer: its terminal entry comes next and wakes them
    assert woken == [1, 3]
    log.append(1, "e")
    assert woken == [1, 3, 5]
