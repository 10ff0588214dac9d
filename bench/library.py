"""``python -m bench.library``: how soon a client's disconnect closes an application's own generator.

CONTRACT §10: under ``gate.stream``, a client that leaves (no resume grace) gets the application's async
generator closed, its ``finally`` run, within 50 ms. This measures it on the README's example app
(``examples/rag_app.py``, on the demo model), whose answer records the time in its ``finally`` (``GET /answers``),
three ways:

- ``fast``: the example with no middleware under ``ssegate serve``'s own server (its HTTP protocol, the server's
  ``send`` in the scope): the direct-to-transport fast path, a disconnect seen in the protocol's own callback;
- ``plain``: the example with no middleware under plain uvicorn (a disconnect seen by a task on ``receive``);
- ``middleware``: the example as it ships, under plain uvicorn: ``BaseHTTPMiddleware``, GZip, CORS.

Each server is its own process. The client (this process) opens a raw socket, asks, reads until two text parts
have arrived, notes the wall-clock time and closes the socket; the latency is the ``finally``'s time minus that
(both processes read the same clock). Disconnects are one at a time, 100 ms apart; the records are fetched in
batches, so no request of the bench's own competes with a closing stream. Prints p50, p99 and max per stack.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import time
import urllib.parse
from typing import Any

import orjson

from .proc import free_port, start, wait_http
from .targets import ROOT

__all__ = ["main"]

STACKS = ("fast", "plain", "middleware")
GOAL_MS = 50.0


def serve(stack: str, port: int) -> None:
    """The server side: the example app for ``stack`` on ``port``, until SIGTERM."""
    import uvicorn
    from examples import rag_app

    import ssegate
    from ssegate.http.standalone import expose_server
    from ssegate.http.uvicorn_glue import BoundedRequestProtocol

    gate = ssegate.Gateway(ssegate.Settings(demo_ttft_s=0.01, demo_tokens_per_s=200))
    app: Any = rag_app.create_app(gate, middleware=stack == "middleware")
    http: Any = "httptools"
    if stack == "fast":
        app, http = expose_server(app), BoundedRequestProtocol
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=http, log_level="warning",
                                  access_log=False)).run()


def disconnect_once(port: int, question: str) -> float:
    """Ask, read two text parts, close; the wall-clock time of the close."""
    path = "/ask?" + urllib.parse.urlencode({"q": question, "grace": 0})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n".encode())
        seen = b""
        while seen.count(b'{"delta"') < 3:  # the reasoning part, then two text parts
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the stream ended early: {seen[-300:]!r}")
            seen += chunk
        left = time.time()
    return left


def records(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/answers")
        found = orjson.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {a["question"]: a["at"] for a in found if a["ended"] == "stopped"}


def measure(stack: str, n: int) -> list[float]:
    port = free_port()
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = start(f"library-{stack}", [sys.executable, "-m", "bench.library", "--serve", stack, "--port", str(port)],
                 port, env=env, cwd=ROOT)
    try:
        if not wait_http(proc, "/answers", 30):
            raise RuntimeError(f"the {stack} server did not start: {proc.log_tail()}")
        for i in range(5):  # warm-up: first requests import and build what later ones reuse
            disconnect_once(port, f"warm-up {i}")
            time.sleep(0.1)
        latencies: list[float] = []
        pending: dict[str, float] = {}
        for i in range(n):
            question = f"Why do streams need heartbeats? ({stack} {i})"
            pending[question] = disconnect_once(port, question)
            time.sleep(0.1)
            if len(pending) == 50 or i == n - 1:
                time.sleep(0.5)
                found = records(port)
                missing = [q for q in pending if q not in found]
                if missing:
                    raise RuntimeError(f"{len(missing)} answers were never closed, e.g. {missing[0]!r}")
                latencies += [(found[q] - left) * 1000 for q, left in pending.items()]
                pending.clear()
        return latencies
    finally:
        proc.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.library", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="disconnects per stack [200]")
    parser.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated, of {', '.join(STACKS)}")
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    print(f"client disconnect -> the app's finally ran, ms ({args.n} disconnects per stack; goal {GOAL_MS:.0f} ms)")
    print(f"{'stack':<12}{'p50':>8}{'p99':>8}{'max':>8}{'mean':>8}  over goal")
    for stack in args.stacks.split(","):
        ms = measure(stack, args.n)
        over = sum(v > GOAL_MS for v in ms)
        print(f"{stack:<12}{percentile(ms, 50):8.2f}{percentile(ms, 99):8.2f}{max(ms):8.2f}"
              f"{statistics.fmean(ms):8.2f}  {over}/{len(ms)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
