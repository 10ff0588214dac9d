"""The A/B of the gateway's upstream HTTP client (``python -m bench --ab``).

Three targets run the same gateway, started through ``bench/launch_ssegate.py`` with a different upstream
client and nothing else changed: ``ab-httpclient`` (ssegate's own, ``ssegate/upstream/httpclient.py``),
``ab-aiohttp`` (``bench/clients/aiohttp_pool.py``) and ``ab-pycurl`` (``bench/clients/curl_pool.py``). For each:

- ``cpu``: the ``cpu`` scenario at 50 and 500 streams, the upstream writing ``data: [DONE]`` and the chunked
  body's terminator in separate writes ``SPLIT_S`` apart (``split=``, bench/upstream.py), as servers that end a
  generator and then the response do;
- ``checks``, whether the variant is correct where it matters to the gateway:
  - every token: ``TOKEN_STREAMS`` streams of ``TOKEN_COUNT`` tokens each arrive whole, each ending cleanly;
  - keep-alive reuse: ``REUSE_STREAMS`` one-token streams, ``REUSE_IN_FLIGHT`` at once (split ends too): how
    many upstream connections the upstream saw opened per request (near 0 = reused), and the gateway's CPU
    per stream;
  - cancel: ``CANCEL_STREAMS`` flowing streams whose clients all disconnect at once: how long until the
    upstream saw each of its connections closed (p99), and how many stayed open.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import scenarios as sc
from .loadgen import build_request, closed_loop
from .targets import Running

__all__ = ["SPLIT_S", "TARGETS", "run"]

TARGETS = ("ab-httpclient", "ab-aiohttp", "ab-pycurl")
SPLIT_S = 0.001
TOKEN_STREAMS, TOKEN_COUNT, TOKEN_INTERVAL = 100, 100, 0.005
REUSE_STREAMS, REUSE_IN_FLIGHT = 300, 10
CANCEL_STREAMS = 200
CANCEL_WAIT_S = 3.0


async def run(rt: Running, up: sc.Upstream, cfg: sc.Config) -> dict[str, Any]:
    cpu = await sc.cpu(rt, up, cfg, {"split": SPLIT_S})
    checks = {
        "tokens": await _tokens(rt, up),
        "reuse": await _reuse(rt, up),
        "cancel": await _cancel(rt, up),
    }
    return {"cpu": cpu, "checks": checks, "split_s": SPLIT_S}


async def _tokens(rt: Running, up: sc.Upstream) -> dict[str, Any]:
    await up.reset()
    fleet = sc._fleet(rt, TOKEN_STREAMS, TOKEN_COUNT, TOKEN_INTERVAL, 0.0, spread=TOKEN_STREAMS,
                      shape={"split": SPLIT_S})
    fleet.open()
    ended = await fleet.wait(TOKEN_COUNT * TOKEN_INTERVAL * 4 + 10)
    whole = sum(1 for s in fleet.streams if s.ok and s.tokens == TOKEN_COUNT and not s.closed_by_us)
    got = sum(s.tokens for s in fleet.streams)
    await fleet.aclose()
    await up.reset()
    return {"streams": TOKEN_STREAMS, "whole": whole, "tokens": got, "expected": TOKEN_STREAMS * TOKEN_COUNT,
            "ended": ended, "ok": ended and whole == TOKEN_STREAMS}


async def _reuse(rt: Running, up: sc.Upstream) -> dict[str, Any]:
    await up.reset()
    host, port, req = build_request(rt.url, native=rt.target.native, tokens=1, interval=0.0, ttft=0.0,
                                    shape={"split": SPLIT_S})
    g0 = rt.cpu()
    streams, finished = await closed_loop(host, port, req, REUSE_STREAMS, REUSE_IN_FLIGHT, 30.0)
    await asyncio.sleep(0.3)
    g1 = rt.cpu()
    st = await up.stats()
    good = sum(1 for s in streams if s.ok and s.tokens == 1)
    requests = st["chat_requests"]
    conns = st["chat_connections"]
    await up.reset()
    return {"streams": REUSE_STREAMS, "ok_streams": good, "upstream_connections": conns,
            "upstream_requests": requests, "connections_per_request": round(conns / max(1, requests), 3),
            "gateway_us_per_stream": round((g1 - g0) / good * 1e6, 1) if good else None,
            "ok": finished and good == REUSE_STREAMS}


async def _cancel(rt: Running, up: sc.Upstream) -> dict[str, Any]:
    await up.reset()
    fleet = sc._fleet(rt, CANCEL_STREAMS, 100_000, 0.05, 0.0)
    fleet.open()
    have = await fleet.wait_until("t_first", CANCEL_STREAMS, timeout=10, stall_s=2.0)
    await up.wait_streams(at_least=CANCEL_STREAMS, timeout=5)
    mark = time.monotonic() + 0.1
    await up.mark(mark)
    await asyncio.sleep(max(0.0, mark - time.monotonic()))
    t0, _ = fleet.close_all()
    st = await up.wait_streams(at_most=0, timeout=CANCEL_WAIT_S)
    lat = [t - t0 for t in st["peer_closed_after_mark"]]
    await fleet.aclose()
    await up.reset()
    p99 = sc.pct(lat, 99)
    return {"streams": CANCEL_STREAMS, "streaming": have, "closed": len(lat), "not_closed": st["streams_active"],
            "p50_ms": sc._ms(sc.pct(lat, 50)), "p99_ms": sc._ms(p99), "max_ms": sc._ms(max(lat, default=None)),
            "ok": st["streams_active"] == 0 and have == CANCEL_STREAMS}
