"""The upstream client against servers other people wrote: uvicorn (its h11 and its httptools protocol),
``aiohttp.web``, and nginx as a reverse proxy in front of one of them (the reference ``deploy/nginx.conf``).
Streamed chunked bodies, ``Content-Length`` bodies, keep-alive reuse, gzip, and a connection dropped mid-body.
The app is ``tests/support/conformance_app.py``; each server runs in its own process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ssegate.errors import UpstreamError
from ssegate.upstream.httpclient import Pool
from tests.support.conformance_app import event, fixed_body
from tests.support.gateway import ROOT, free_port
from tests.support.nginx import Nginx

pytestmark = pytest.mark.slow

SERVERS = ["uvicorn-h11", "uvicorn-httptools", "aiohttp", "nginx"]
# nginx tells its own client connections apart: X-Conn is its connection serial number, not the backend's view
CONN_HEADER = "proxy_hide_header X-Conn;\n        add_header X-Conn $connection always;"


class AppProcess:
    def __init__(self, kind: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.conformance_app", kind, str(self.port)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{kind} did not start") from None
                time.sleep(0.02)  # polling a starting process; not a synchronisation stand-in

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module", params=SERVERS)
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    """The base URL of a running server of each kind."""
    kind = request.param
    app = AppProcess("uvicorn-httptools" if kind == "nginx" else kind)
    try:
        if kind != "nginx":
            yield f"http://127.0.0.1:{app.port}"
            return
        overrides = {"proxy_buffering off;": f"proxy_buffering off;\n        {CONN_HEADER}",
                     "proxy_read_timeout 30s;": f"proxy_read_timeout 30s;\n        {CONN_HEADER}"}
        with Nginx([app.port], overrides) as nginx:
            yield nginx.url
    finally:
        app.stop()


async def streamed(pool: Pool, url: str) -> tuple[list[bytes], str]:
    resp = await pool.request("GET", url, {})
    assert resp.status == 200
    got: list[bytes] = []
    resp.stream(got.append)
    try:
        await resp.finished()
        assert resp.complete
    finally:
        resp.close()
    return got, resp.headers["x-conn"]


async def read(pool: Pool, url: str) -> tuple[bytes, str]:
    resp = await pool.request("GET", url, {})
    try:
        assert resp.status == 200
        body = await resp.read(4 << 20)
        assert resp.complete
    finally:
        resp.close()
    return body, resp.headers["x-conn"]


async def test_a_chunked_stream_arrives_piece_by_piece_and_whole(base: str) -> None:
    pool = Pool()
    got, _ = await streamed(pool, base + "/v1/chat/stream?n=20")
    assert b"".join(got) == b"".join(event(i) for i in range(20))
    assert len(got) > 1  # pushed as it came, not gathered at the end
    assert pool.idle == 1
    await pool.aclose()


async def test_a_content_length_body_is_read_whole(base: str) -> None:
    pool = Pool()
    body, _ = await read(pool, base + "/fixed?size=300000")
    assert body == fixed_body(300000)
    assert pool.idle == 1
    await pool.aclose()


async def test_gzip_bodies_whole_and_streamed_are_decoded(base: str) -> None:
    pool = Pool()
    body, first = await read(pool, base + "/gzip?size=50000")
    assert body == fixed_body(50000)
    got, second = await streamed(pool, base + "/v1/chat/gzip-stream?n=10")
    assert b"".join(got) == b"".join(event(i) for i in range(10))
    assert first == second  # and the connection was kept between them
    await pool.aclose()


async def test_one_connection_carries_request_after_request(base: str) -> None:
    pool = Pool()
    conns = set()
    for n in range(6):
        if n % 2:
            got, conn = await streamed(pool, base + f"/v1/chat/stream?n={n}")
            assert b"".join(got) == b"".join(event(i) for i in range(n))
        else:
            body, conn = await read(pool, base + f"/fixed?size={1000 * n}")
            assert body == fixed_body(1000 * n)
        conns.add(conn)
    assert len(conns) == 1 and pool.idle == 1
    await pool.aclose()


@pytest.mark.parametrize(("path", "before"), [("/v1/chat/early", b"".join(event(i) for i in range(3))),
                                              ("/early-fixed", b"0123456789")])
async def test_a_connection_dropped_mid_body_is_an_upstream_error_after_what_arrived(
    base: str, path: str, before: bytes
) -> None:
    pool = Pool()
    resp = await pool.request("GET", base + path, {})
    got: list[bytes] = []
    resp.stream(got.append)
    with pytest.raises(UpstreamError, match="closed the connection before the answer was complete"):
        await resp.finished()
    resp.close()
    assert b"".join(got) == before and not resp.complete
    assert pool.idle == 0
    await pool.aclose()
