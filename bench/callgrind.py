"""``python -m bench.callgrind``: user-space instructions the gateway executes per short stream, under callgrind.

CPU time per stream (the ``setup`` scenario) moves with the machine's load and clock; an instruction count does
not, so a change to the cost of starting a stream can be judged on a shared machine to a fraction of a percent.
The gateway (``ssegate serve`` from ``--src``, one worker, the OpenAI-compatible provider in front of the
bench's fake upstream) runs under ``valgrind --tool=callgrind`` with instrumentation off; after a warm-up,
instrumentation is switched on (``callgrind_control``) for ``--streams`` one-token streams, ten at a time, each
on a new client connection, and the instructions counted are divided by the streams that ended well. Startup,
warm-up and shutdown are not counted. Kernel time (syscalls) is not an instruction here: it shows in ``setup``.

    .venv/bin/python -m bench.callgrind                            # native POST /v1/chat/stream
    .venv/bin/python -m bench.callgrind --path /v1/chat/completions
    .venv/bin/python -m bench.callgrind --src /tmp/before/src      # another tree (git archive REV src | tar -x)
    .venv/bin/python -m bench.callgrind --tokens 100 --parts       # per event: reasoning and tool-call pieces
    .venv/bin/python -m bench.callgrind --tokens 100 --redis       # the event log in Redis (a redis-server of its own)
    .venv/bin/python -m bench.callgrind --tokens 100 --interval 0.02  # each event its own read and write
    .venv/bin/python -m bench.callgrind --keep /tmp/cg             # then: callgrind_annotate --inclusive=yes
                                                                   #   /tmp/cg/cg.out.*.1 (where it goes)
    .venv/bin/python -m bench.callgrind --keep /tmp/cg --callgrind-args=--separate-callers3=slot_tp_getattr_hook
                                                                   # who reads attributes of pydantic models

With ``--redis`` the writer's round trips are batched by time, which callgrind's slowness stretches (fewer, larger
chunks than at full speed): the per-event path (each append) is counted as it runs; the writer's share per event
reads low. Needs valgrind (``apt-get install valgrind``), and redis-server for ``--redis``. Prints one line;
writes nothing else (but ``--keep``'s directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .loadgen import Fleet, build_request
from .proc import free_port, start, wait_http, wait_tcp
from .targets import ROOT

BATCH = 10


def _total(out_dir: Path) -> int:
    """The largest ``summary``/``totals`` line of callgrind's dumps (the dump after the measured streams)."""
    total = 0
    for f in out_dir.glob("cg.out.*"):
        for line in f.read_text(errors="replace").splitlines():
            m = re.match(r"^(?:summary|totals): (\d+)", line)
            if m:
                total = max(total, int(m.group(1)))
    return total


async def _batch(host: str, port: int, req: bytes, k: int, tokens: int = 1) -> int:
    fleet = Fleet(host, port, req, k)
    fleet.open()
    await fleet.wait(120)
    ok = sum(1 for s in fleet.streams if s.tokens >= tokens and not s.error)  # (a final event may repeat some)
    await fleet.aclose()
    return ok


async def run(args: argparse.Namespace) -> str:
    up_port = free_port()
    upstream = start("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(up_port)], up_port, cwd=ROOT)
    if not wait_http(upstream, "/health", 15):
        raise SystemExit(f"fake upstream did not start: {upstream.log_tail()}")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")},
           "PYTHONPATH": str(Path(args.src).resolve()), "NO_PROXY": "*", "no_proxy": "*",
           "SSEGATE_UPSTREAM_API_KEY": "bench", "SSEGATE_MODEL": "bench", "SSEGATE_PROVIDER": "openai",
           "SSEGATE_UPSTREAM_URL": f"http://127.0.0.1:{up_port}/v1", "SSEGATE_PORT": str(port),
           "SSEGATE_LOG_LEVEL": args.log_level}
    with contextlib.ExitStack() as stack:
        stack.callback(upstream.stop)
        if args.redis:
            redis_bin = shutil.which("redis-server")
            if redis_bin is None:
                raise SystemExit("redis-server is not installed (apt-get install redis-server)")
            rport = free_port()
            redis = start("redis-callgrind", [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                              "--appendonly", "no"], rport)
            stack.callback(redis.stop)
            if not wait_tcp(rport, 10):
                raise SystemExit(f"redis-server did not start: {redis.log_tail(3)}")
            env["SSEGATE_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        if args.keep:
            out = Path(args.keep).resolve()
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("cg.out.*"):
                old.unlink()
        else:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssegate-callgrind-")))
        tmp = str(out)
        gw = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", *args.callgrind_args.split(),
                               f"--callgrind-out-file={out}/cg.out.%p", sys.executable, "-m", "ssegate", "serve"],
                              env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    if gw.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the gateway did not start under valgrind") from None
                    await asyncio.sleep(0.2)
            host, p, req = build_request(f"http://127.0.0.1:{port}{args.path}", native=args.path == "/v1/chat/stream",
                                         tokens=args.tokens, interval=args.interval, ttft=0,
                                         spread=BATCH if args.interval else 0,
                                         shape={"parts": 1} if args.parts else None)
            for _ in range(10):  # warm up: imports, caches, the upstream pool
                await _batch(host, p, req, BATCH, args.tokens)
            subprocess.run(["callgrind_control", "-i", "on", str(gw.pid)], capture_output=True, check=True)
            ok = 0
            for _ in range(max(1, args.streams // BATCH)):
                ok += await _batch(host, p, req, BATCH, args.tokens)
            subprocess.run(["callgrind_control", "-i", "off", str(gw.pid)], capture_output=True, check=True)
            subprocess.run(["callgrind_control", "-d", str(gw.pid)], capture_output=True, check=True)
        finally:
            gw.terminate()
            try:
                gw.wait(60)
            except subprocess.TimeoutExpired:
                gw.kill()
        total = _total(out)
    attempted = max(1, args.streams // BATCH) * BATCH
    per_stream = total / max(ok, 1)
    tokens = "" if args.tokens == 1 else (f"; {args.tokens} {'parts' if args.parts else 'text'} tokens each: "
                                          f"{per_stream / args.tokens / 1000:.1f}k per event, stream included")
    return (f"{ok}/{attempted} streams ok; {per_stream / 1000:.0f}k instructions per stream{tokens} "
            f"({args.path}, log level {args.log_level}{', event log in Redis' if args.redis else ''}, {args.src})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/v1/chat/stream", choices=("/v1/chat/stream", "/v1/chat/completions"))
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--src", default=str(ROOT / "src"), help="the source tree to run [src]")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--tokens", type=int, default=1, help="tokens per stream [1]: >1 to weigh events, not starts")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between a stream's tokens [0: as fast as they go, so that many events share a "
                             "read and a write]; e.g. 0.02: each event its own (the streams spread over it), as in "
                             "the cpu scenario at 50 streams")
    parser.add_argument("--parts", action="store_true",
                        help="reasoning and tool-call pieces instead of text tokens (the upstream's parts=1)")
    parser.add_argument("--redis", action="store_true", help="the event log in Redis (SSEGATE_REDIS_URL)")
    parser.add_argument("--callgrind-args", default="", metavar="ARGS",
                        help="more callgrind options, e.g. '--separate-callers3=module_getattro' (who looks up "
                             "module attributes, three callers deep, in --keep's dump)")
    parser.add_argument("--keep", metavar="DIR", help="keep callgrind's output in DIR (cg.out.<pid>.1 is the measured "
                        "streams' dump: callgrind_annotate --inclusive=yes reads it)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    print(asyncio.run(run(args)), flush=True)


if __name__ == "__main__":
    main()
