"""``python -m bench.accept``: what ``ssegate serve``'s loop pays to accept a connection, and how many a busy loop
accepts per turn.

Two loops: uvloop's own (``uvloop.new_event_loop``, whose server accepts one connection per turn) and the one
``ssegate serve`` gives uvicorn (``ssegate.http.listener.new_event_loop``, which also accepts the connections
waiting behind it, in the same turn). For each: ``--bursts`` bursts of ``--burst`` client connections are made
while the loop does not run (they wait in the kernel's queue); then the loop turns (each turn made ``--turn-ms``
long by blocking work, as a gateway relaying tokens is) until every connection was made and closed. Printed per
loop: the turns it took for a burst, and with ``--turn-ms 0`` the process's CPU per connection (accept, the
protocol's ``connection_made``, close), medians over the bursts.

    .venv/bin/python -m bench.accept [--burst 200] [--bursts 9] [--turn-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import uvloop

from ssegate.http.listener import new_event_loop


class _Closing(asyncio.Protocol):
    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        type(self).made += 1
        transport.close()


async def _run(burst: int, bursts: int, turn_s: float) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    server = await loop.create_server(_Closing, sock=sock, backlog=4096)
    port = sock.getsockname()[1]
    turns: list[int] = []
    cpu: list[float] = []
    try:
        for _ in range(bursts):
            _Closing.made = 0
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(burst)]
            t0 = time.process_time()
            n = 0
            while _Closing.made < burst and n < 100 * burst:
                if turn_s:
                    time.sleep(turn_s)  # a turn's work, off the CPU figure (which is read without it)
                await asyncio.sleep(0)
                n += 1
            for _ in range(10):  # the closes
                await asyncio.sleep(0)
            cpu.append((time.process_time() - t0) / burst * 1e6)
            turns.append(n)
            for c in clients:
                c.close()
            await asyncio.sleep(0.05)
    finally:
        server.close()
    return statistics.median(turns), statistics.median(cpu)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.accept", description=__doc__.split("\n\n")[0])
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--bursts", type=int, default=9)
    ap.add_argument("--turn-ms", type=float, default=0.0, help="blocking work per turn of the loop")
    args = ap.parse_args(argv)
    loops: dict[str, Callable[[], Any]] = {"uvloop": uvloop.new_event_loop, "ssegate serve": new_event_loop}
    for name, factory in loops.items():
        loop = factory()
        try:
            turns, us = loop.run_until_complete(_run(args.burst, args.bursts, args.turn_ms / 1000))
        finally:
            loop.close()
        cost = f", {us:.1f} µs CPU each" if not args.turn_ms else ""
        print(f"{name:14} {args.burst} connections at once: {turns:.0f} turns of the loop{cost}")


if __name__ == "__main__":
    main()
