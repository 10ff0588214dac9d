"""The upstream HTTP clients of the benchmark's A/B (``bench/clients``) against the bench's real fake upstream, and
``ssegate serve`` started through ``bench/launch_ssegate.py`` with each of them: a variant is only worth measuring
if it relays every token, keeps its connections, and closes the socket on abort, as ssegate's own client does."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from bench.clients import CLIENTS

from ssegate.errors import UpstreamError
from tests.support.bench_upstream import BenchUpstream
from tests.support.gateway import ROOT, free_port

pytest.importorskip("pycurl")

VARIANTS = sorted(CLIENTS)


@pytest.fixture(scope="module")
def bench_upstream() -> Iterator[BenchUpstream]:
    up = BenchUpstream().start()
    yield up
    up.stop()


def _pool(client: str) -> Any:
    return importlib.import_module(CLIENTS[client]).Pool()


def _body(prompt: str) -> bytes:
    return orjson.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": prompt}]})


async def _stream(pool: Any, url: str, prompt: str) -> bytes:
    """One streaming request read as the OpenAI provider reads it: ``stop()`` at ``[DONE]``, then ``close()``."""
    resp = await pool.request("POST", url, {"Content-Type": "application/json"}, _body(prompt))
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    got: list[bytes] = []

    def on_body(data: bytes) -> None:
        got.append(data)
        if b"data: [DONE]" in b"".join(got[-2:]):
            resp.stop()

    try:
        resp.stream(on_body)
        await asyncio.wait_for(resp.finished(), 10)
    finally:
        resp.close()
    return b"".join(got)


@pytest.mark.parametrize("shape", ["", "parts=1", "split=0.01", "parts=1 split=0.01"])
@pytest.mark.parametrize("client", VARIANTS)
async def test_every_token_arrives(bench_upstream: BenchUpstream, client: str, shape: str) -> None:
    pool = _pool(client)
    try:
        body = await _stream(pool, bench_upstream.completions, f"tokens=40 interval=0.001 {shape}")
    finally:
        await pool.aclose()
    assert body.count(b"~") == 40
    assert body.rstrip().endswith(b"data: [DONE]")
    if "parts" in shape:
        assert b'"reasoning_content"' in body and b'"finish_reason":"tool_calls"' in body


@pytest.mark.parametrize("client", VARIANTS)
async def test_a_short_body_is_read_whole(bench_upstream: BenchUpstream, client: str) -> None:
    pool = _pool(client)
    try:
        resp = await pool.request("GET", bench_upstream.url + "/v1/models", {})
        try:
            assert resp.status == 200
            assert orjson.loads(await resp.read())["data"][0]["id"] == "bench"
        finally:
            resp.close()
        resp = await pool.request("GET", bench_upstream.url + "/nowhere", {})
        try:
            assert resp.status == 404
            assert orjson.loads(await resp.read())["error"]["type"] == "not_found"
        finally:
            resp.close()
    finally:
        await pool.aclose()


@pytest.mark.parametrize("client", VARIANTS)
async def test_connection_kept_when_the_chunked_end_follows_done(bench_upstream: BenchUpstream, client: str) -> None:
    """Upstreams that end their generator and then their response write ``data: [DONE]`` and the chunked body's
    terminator apart. A client that stops reading at ``[DONE]`` must still read the terminator before it puts the
    connection back: five streams in a row then go over one connection, not five."""
    pool = _pool(client)
    try:
        await bench_upstream.reset()
        for _ in range(5):
            body = await _stream(pool, bench_upstream.completions, "tokens=3 interval=0.001 split=0.05")
            assert body.count(b"~") == 3
            await asyncio.sleep(0.1)  # the terminator arrives 50 ms after [DONE]
        st = await bench_upstream.stats()
    finally:
        await pool.aclose()
    assert st["chat_requests"] == 5
    assert st["chat_connections"] == 1


@pytest.mark.parametrize("client", VARIANTS)
async def test_abort_closes_the_upstream_connection(bench_upstream: BenchUpstream, client: str) -> None:
    pool = _pool(client)
    try:
        await bench_upstream.reset()
        resp = await pool.request("POST", bench_upstream.completions, {}, _body("tokens=100000 interval=0.01"))
        first = asyncio.get_running_loop().create_future()
        resp.stream(lambda data: first.done() or first.set_result(None))
        await asyncio.wait_for(first, 10)
        t0 = await bench_upstream.mark()
        resp.abort()
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(resp.finished(), 5)
        st = await bench_upstream.wait_idle(10)
    finally:
        await pool.aclose()
    assert st["streams_active"] == 0
    assert st["streams_closed_by_peer"] == 1
    assert st["peer_closed_after_mark"] and st["peer_closed_after_mark"][0] - t0 < 5  # a hang, not a speed bound


class LaunchedGateway:
    """``python -m bench.launch_ssegate --client NAME serve`` in front of the bench upstream."""

    def __init__(self, client: str, upstream: BenchUpstream) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="ssegate-ab-", suffix=".log")[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
        env.update(SSEGATE_UPSTREAM_API_KEY="bench", SSEGATE_MODEL="bench", SSEGATE_LOG_LEVEL="warning")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.launch_ssegate", "--client", client, "serve", "--provider", "openai",
                 "--upstream-url", upstream.url + "/v1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the launcher exited:\n{self.log_path.read_text(errors='replace')}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a starting process; not a synchronisation stand-in
        raise RuntimeError("the launcher did not start in 20 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log_path.unlink(missing_ok=True)


@pytest.mark.parametrize("client", VARIANTS)
async def test_launcher_serves_with_the_client(bench_upstream: BenchUpstream, client: str) -> None:
    gate = await asyncio.to_thread(LaunchedGateway, client, bench_upstream)
    try:
        await bench_upstream.reset()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gate.port}", timeout=30) as http:
            for _ in range(3):
                r = await http.post("/v1/chat/stream", json={
                    "model": "bench", "messages": [{"role": "user", "content": "tokens=20 interval=0.001 split=0.05"}]})
                assert r.status_code == 200
                answer, _, done = r.text.partition("event: done")
                assert answer.count("~") == 20 and done
                await asyncio.sleep(0.1)  # the terminator arrives 50 ms after [DONE]
        st = await bench_upstream.stats()
    finally:
        await asyncio.to_thread(gate.stop)
    assert st["chat_requests"] == 3
    if client != "httpclient":  # the swap took effect: these keep the connection (ssegate's own pool does not)
        assert st["chat_connections"] == 1
