"""The load generator: thousands of concurrent SSE streams from one process.

Each stream is a raw asyncio protocol on uvloop (no HTTP client library in the hot path): it writes one
pre-built request, parses the status line, then only timestamps reads and counts tokens. Tokens are
counted by the fake upstream's token marker (``~``), so the same code measures OpenAI-style chunks, the
gateway's native ``{"delta": ...}`` events and any relay, whatever the framing and however a gateway
coalesces events. Per stream it records the connect time, response head, first token, every read that
carried tokens (time, count) and the end. A :class:`Fleet` can close all its streams at once (the cancel
storm); :func:`closed_loop` runs many short streams one after another on a few "users", each stream on a new
connection (the cost of setting a stream up).

The rig's own garbage collector is kept out of every measurement (:func:`collector_paused`): a full
collection of the bench process takes 10-30 ms, and one landing inside a burst of the ``ttft`` scenario added
that to the p99 of whichever target was being measured (seen with ``gc.callbacks`` at 100 streams at once: one
burst in three was ~12 ms late, through ssegate, nginx and ``direct`` alike).

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/chat/completions --streams 100 --tokens 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from .upstream import MARKER

__all__ = ["Fleet", "Stream", "build_request", "closed_loop", "collector_paused"]

_END_CHUNKED = b"\r\n0\r\n\r\n"


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection in this process while the block runs: what is alive is frozen first (out of any
    later collection's walk), the collector is off inside, and what the block left is collected after it."""
    gc.collect()
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
        gc.collect()


def build_request(url: str, *, native: bool, tokens: int, interval: float, ttft: float, spread: int = 0,
                  model: str = "bench", shape: dict[str, float] | None = None) -> tuple[str, int, bytes]:
    """(host, port, request bytes) for one streaming chat request; stream shape in the prompt (``shape``: more
    of the upstream's words, e.g. ``{"parts": 1, "split": 0.001}``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    prompt = f"hi tokens={tokens} interval={interval:g} ttft={ttft:g}" + (f" spread={spread}" if spread else "")
    prompt += "".join(f" {k}={v:g}" for k, v in (shape or {}).items())
    body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}]}
    if native:
        body["model"] = model
    else:
        body.update(model=model, stream=True)
    raw = orjson.dumps(body)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer bench\r\nContent-Length: {len(raw)}\r\n"
        f"x-bench-tokens: {tokens}\r\nx-bench-interval: {interval:g}\r\nx-bench-ttft: {ttft:g}\r\n"
        f"x-bench-spread: {spread}\r\n\r\n"
    )
    return host, port, head.encode() + raw


class Stream(asyncio.Protocol):
    """One SSE stream: timestamps only, no parsing beyond the status line."""

    __slots__ = ("_chunked", "_head", "_length", "_request", "_seen", "_tail", "closed_by_us", "counts",
                 "done", "error", "status", "t_end", "t_first", "t_head", "t_start", "times", "tokens", "transport")

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self._head = b""
        self._chunked = False
        self._length = -1
        self._seen = 0
        self._tail = b"\r\n"
        self.status = 0
        self.error = ""
        self.t_start = time.monotonic()
        self.t_head = 0.0
        self.t_first = 0.0
        self.t_end = 0.0
        self.tokens = 0
        self.times = array("d")
        self.counts = array("i")
        self.closed_by_us = False
        self.done = done
        self.transport: asyncio.Transport | None = None
        self._request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        t = time.monotonic()
        if not self.t_head:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end].lower(), self._head[end + 4 :]
            self._head = b""
            self.t_head = t
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = -1
            if self.status != 200:
                self.error = f"http {self.status}"
                self._finish(t)
                return
            self._chunked = b"transfer-encoding: chunked" in head
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    self._length = int(line[15:])
            if not data:
                return
        n = data.count(MARKER)
        if n:
            if not self.t_first:
                self.t_first = t
            self.times.append(t)
            self.counts.append(n)
            self.tokens += n
        if self._chunked:
            self._tail = (self._tail + data)[-7:]
            if self._tail == _END_CHUNKED:
                self._finish(t)
        elif self._length >= 0:
            self._seen += len(data)
            if self._seen >= self._length:
                self._finish(t)

    def _finish(self, t: float) -> None:
        if not self.t_end:
            self.t_end = t
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        t = time.monotonic()
        if not self.t_end:
            if not self.closed_by_us:
                if not self.t_head:
                    self.error = self.error or f"closed before response ({exc or 'eof'})"
                elif self._chunked or self._length >= 0:
                    self.error = self.error or "truncated"
            self.t_end = t
        if not self.done.done():
            self.done.set_result(None)

    def close(self, abort: bool = False) -> None:
        """Disconnect, as a client going away would (FIN; RST with ``abort``)."""
        if self.t_end:
            return
        self.closed_by_us = True
        self.t_end = time.monotonic()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    # --- results ------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return not self.error and self.status == 200

    @property
    def ttft(self) -> float | None:
        return self.t_first - self.t_start if self.t_first else None


@dataclass
class FleetStats:
    opened: int
    connect_errors: int
    with_head: int
    with_first: int
    errors: dict[str, int]


class Fleet:
    """N streams to one URL, opened at once or spread over a ramp, closed together."""

    def __init__(self, host: str, port: int, request: bytes, n: int) -> None:
        self.host, self.port, self.request, self.n = host, port, request, n
        self.streams: list[Stream] = []
        self.connect_errors: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = asyncio.get_running_loop()

    async def _open_one(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        done: asyncio.Future[None] = self._loop.create_future()
        stream = Stream(self.request, done)
        self.streams.append(stream)
        try:
            await self._loop.create_connection(lambda: stream, self.host, self.port)
        except OSError as e:
            key = type(e).__name__
            self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
            stream.error = f"connect: {key}"
            stream.t_end = time.monotonic()
            if not done.done():
                done.set_result(None)

    def open(self, ramp_s: float = 0.0) -> None:
        """Start opening every stream (spread evenly over ``ramp_s``); returns at once."""
        step = ramp_s / self.n if self.n and ramp_s > 0 else 0.0
        self._tasks = [self._loop.create_task(self._open_one(i * step)) for i in range(self.n)]

    async def opened(self, timeout: float) -> None:
        """Wait until every connection attempt has finished (connected or failed)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def wait(self, timeout: float) -> bool:
        """Wait until every stream has ended; False on timeout (streams still open stay open)."""
        deadline = self._loop.time() + timeout
        await self.opened(timeout)
        pending = [s.done for s in self.streams if not s.done.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - self._loop.time()))
            return not still
        return len(self.streams) == self.n

    async def wait_until(self, predicate: str, count: int, timeout: float, stall_s: float | None = None) -> int:
        """Poll until ``count`` streams have ``t_head`` / ``t_first`` set, timeout, or (``stall_s``) no progress;
        return how many have it."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            have = sum(1 for s in self.streams if getattr(s, predicate))
            now = time.monotonic()
            if have != last:
                last, since = have, now
            if have >= count or now >= deadline or (stall_s is not None and now - since >= stall_s):
                return have
            await asyncio.sleep(0.05)

    def close_all(self, abort: bool = False) -> tuple[float, float]:
        """Disconnect every open stream at once; return (start, end) monotonic times of the storm."""
        for task in self._tasks:
            task.cancel()
        t0 = time.monotonic()
        for s in self.streams:
            s.close(abort)
        return t0, time.monotonic()

    async def aclose(self) -> None:
        self.close_all(abort=True)
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def stats(self) -> FleetStats:
        errors: dict[str, int] = {}
        for s in self.streams:
            if s.error:
                key = s.error.split(" (")[0]
                errors[key] = errors.get(key, 0) + 1
        return FleetStats(
            opened=len(self.streams),
            connect_errors=sum(self.connect_errors.values()),
            with_head=sum(1 for s in self.streams if s.t_head),
            with_first=sum(1 for s in self.streams if s.t_first),
            errors=errors,
        )


async def closed_loop(host: str, port: int, request: bytes, total: int, in_flight: int, timeout: float
                      ) -> tuple[list[Stream], bool]:
    """``total`` streams, at most ``in_flight`` at once: each of ``in_flight`` users opens a new connection,
    sends the request, reads the response to its end, closes, and starts the next. Returns the streams and
    whether all of them ended before ``timeout`` (a stream still open then is aborted)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    streams: list[Stream] = []
    left = total
    finished = True

    async def user() -> None:
        nonlocal left, finished
        while left > 0:
            left -= 1
            done: asyncio.Future[None] = loop.create_future()
            stream = Stream(request, done)
            streams.append(stream)
            try:
                async with asyncio.timeout_at(deadline):
                    await loop.create_connection(lambda s=stream: s, host, port)
                    await done
            except TimeoutError:  # (an OSError too: first)
                finished = False
                stream.error = stream.error or "timed out"
                stream.close(abort=True)
                left = 0
                return
            except OSError as e:
                stream.error = stream.error or f"connect: {type(e).__name__}"
                stream.t_end = stream.t_end or time.monotonic()

    await asyncio.gather(*(user() for _ in range(in_flight)))
    return streams, finished


def gaps_in_window(streams: list[Stream], w0: float, w1: float, interval: float) -> tuple[list[float], int]:
    """Inter-token delay minus ``interval`` for tokens arriving in [w0, w1] (s), and how many streams
    received no token in the window. Tokens sharing one read count as gap 0; a stall still in progress
    at ``w1`` counts as one gap up to ``w1``."""
    added: list[float] = []
    silent = 0
    for s in streams:
        times, counts = s.times, s.counts
        got = False
        prev = None
        for t, c in zip(times, counts, strict=True):
            if t > w1:
                break
            if t >= w0:
                got = True
                if prev is not None:
                    added.append(t - prev - interval)
                added.extend([-interval] * (c - 1))
            prev = t
        if not got:
            silent += 1
        elif prev is not None and w1 - prev > interval:
            added.append(w1 - prev - interval)
    return added, silent


async def _cli(args: argparse.Namespace) -> None:
    host, port, req = build_request(args.url, native=args.native, tokens=args.tokens, interval=args.interval,
                                    ttft=args.ttft)
    fleet = Fleet(host, port, req, args.streams)
    cpu0, t0 = time.process_time(), time.monotonic()
    fleet.open(args.ramp)
    finished = await fleet.wait(args.timeout)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    await fleet.aclose()
    ttfts = sorted(s.ttft for s in fleet.streams if s.ttft is not None)
    tokens = sum(s.tokens for s in fleet.streams)
    print(orjson.dumps({
        "finished": finished, "wall_s": round(wall, 3), "tokens": tokens, "stats": fleet.stats().__dict__,
        "ttft_p50_ms": round(ttfts[len(ttfts) // 2] * 1000, 2) if ttfts else None,
        "ttft_max_ms": round(ttfts[-1] * 1000, 2) if ttfts else None,
        "loadgen_cpu_s": round(cpu, 3), "loadgen_us_per_token": round(cpu / tokens * 1e6, 2) if tokens else None,
    }, option=orjson.OPT_INDENT_2).decode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description="Open N SSE streams at once.")
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000/v1/chat/completions")
    parser.add_argument("--native", action="store_true", help="ssegate native body (POST /v1/chat/stream)")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds over which to open the streams")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    from .proc import raise_fd_limit

    raise_fd_limit()
    import uvloop

    uvloop.run(_cli(args))


if __name__ == "__main__":
    main()
