"""A fast, configurable fake OpenAI Chat Completions upstream for the benchmarks.

It speaks just enough HTTP/1.1 (keep-alive, chunked responses) on a raw asyncio protocol over uvloop, so
that it costs little CPU on the same two cores as the gateway under test. One process serves every
scenario: the shape of a stream comes from the CLI defaults and can be overridden per request, in order of
precedence, by

- headers ``x-bench-tokens``, ``x-bench-interval`` (seconds), ``x-bench-ttft`` (seconds), ``x-bench-spread``,
  for direct calls;
- ``key=value`` words in the last message's content (``tokens=200 interval=0.01 ttft=0.05 spread=50``),
  which every gateway forwards unchanged;
- ``max_tokens`` in the request body caps the token count (``finish_reason: "length"``).

Two more words shape the stream (same precedence):

- ``parts=1``: instead of text, the tokens are reasoning and tool calls, in a cycle of 20 chunks: 10
  ``reasoning_content`` deltas, then a new tool call (``id``, ``name`` and the first fragment of its arguments)
  and 9 more argument fragments (the last one closes the JSON), then reasoning again, and so on
  (``finish_reason: "tool_calls"``). Every chunk still carries one token text, so clients count the same way;
- ``split=S`` (seconds): the chunked body's terminator (``0\r\n\r\n``) is written S after the ``data: [DONE]``
  event, in a write of its own, as servers that end a generator and then the response do; a client that stops
  reading at ``[DONE]`` then holds a connection whose response is not over.

``spread=N`` (N > 0) spreads streams evenly over the token interval, as independent users are: the k-th
stream started since the last reset sends its tokens at phase ``(k mod N) / N`` of a global grid of
``interval``, whenever its request arrived (without it, streams opened together tick together, and a
gateway's cost per token depends on how many arrive in the same wake-up).

Every token's text is ``zq~ `` so that a client can count tokens in any framing by counting ``~``.

``GET /stats`` counts, among others, chat requests and the connections that carried them (``chat_requests``,
``chat_connections``: a client that keeps its connections shows few connections for many requests).

Endpoints: ``POST /v1/chat/completions`` (stream true/false, ``stream_options.include_usage``),
``GET /v1/models``, ``GET /health``, ``GET /stats``, ``POST /stats/reset`` (``{"abort": true}`` also aborts
every running stream), ``POST /stats/mark`` (``{"t": <time.monotonic()>}``: count the tokens written from
then on, and the time each running stream's connection is closed by the peer).

Tokens are written by one timer wheel (a heap), not one task per stream: thousands of streams at 100
tokens/s cost one ``transport.write`` each per token.

    python -m bench.upstream --port 9000 --tokens 20 --interval 0.01 --ttft 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import re
import time
from typing import Any

import orjson

from .proc import raise_fd_limit

TOKEN_TEXT = "zq~ "
MARKER = b"~"
"""One byte that appears nowhere else in any target's output (not in base64url or hex ids, not in JSON
framing), so counting it counts tokens, and it cannot be split across two reads."""

_DIRECTIVE = re.compile(r"\b(tokens|interval|ttft|spread|parts|split)=([0-9.]+)")
_PARAMS = ("tokens", "interval", "ttft", "spread", "parts", "split")
_MAX_BODY = 1 << 20


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj: dict[str, Any]) -> bytes:
    return _chunk(b"data: " + orjson.dumps(obj) + b"\n\n")


def _chunk_obj(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


ROLE_CHUNK = _sse(_chunk_obj({"role": "assistant", "content": ""}, None))
TOKEN_CHUNK = _sse(_chunk_obj({"content": TOKEN_TEXT}, None))
FINISH_CHUNKS = {f: _sse(_chunk_obj({}, f)) for f in ("stop", "length", "tool_calls")}
DONE_EVENT = _chunk(b"data: [DONE]\n\n")
END_CHUNKED = b"0\r\n\r\n"
DONE_CHUNK = DONE_EVENT + END_CHUNKED

PARTS_CYCLE = 20
"""``parts=1``: chunks per cycle (reasoning first, then one tool call)."""
PARTS_REASONING = 10
REASONING_CHUNK = _sse(_chunk_obj({"reasoning_content": TOKEN_TEXT}, None))
_tool_chunks: dict[tuple[int, int], bytes] = {}


def _tool_chunk(call: int, pos: int, last: bool) -> bytes:
    """The chunk at ``pos`` (0 = the call's start) of tool call number ``call``; ``last`` closes its JSON."""
    key = (call, -1 if last else min(pos, 1))
    chunk = _tool_chunks.get(key)
    if chunk is None:
        args = ('{"q": "' if pos == 0 else "") + TOKEN_TEXT + ('"}' if last else "")
        fragment: dict[str, Any] = {"index": call, "function": {"arguments": args}}
        if pos == 0:
            fragment.update(id=f"call_{call}", type="function", function={"name": "lookup", "arguments": args})
        chunk = _sse(_chunk_obj({"tool_calls": [fragment]}, None))
        if pos != 0:  # a start is written once per call: keep only the fragments (a few per call index)
            _tool_chunks[key] = chunk
    return chunk
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _json_response(status: int, obj: Any) -> bytes:
    body = orjson.dumps(obj)
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required",
              413: "Payload Too Large"}.get(status, "OK")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % (status, reason.encode(), len(body))
    ) + body


class Stats:
    """Counters exposed on ``GET /stats``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connections_opened = 0
        self.connections_closed = 0
        self.requests = 0
        self.chat_requests = 0
        self.chat_connections = 0
        """Connections that carried their first chat request since the reset (control requests aside)."""
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_closed_by_peer = 0
        self.tokens_written = 0
        self.mark: float | None = None
        self.tokens_after_mark = 0
        self.peer_closed_after_mark: list[float] = []
        self.active_at_mark = 0


class Stream:
    """One streaming response being generated."""

    __slots__ = ("conn", "finish", "include_usage", "interval", "parts", "prompt_tokens", "sent", "split", "total")

    def __init__(self, conn: Conn, total: int, interval: float, include_usage: bool, finish: str,
                 parts: bool = False, split: float = 0.0) -> None:
        self.conn = conn
        self.total = total
        self.interval = interval
        self.include_usage = include_usage
        self.finish = finish
        self.parts = parts
        self.split = split
        self.sent = 0
        self.prompt_tokens = 9

    def token_chunk(self) -> bytes:
        """The chunk that carries the next token."""
        if not self.parts:
            return TOKEN_CHUNK
        pos = self.sent % PARTS_CYCLE - PARTS_REASONING
        if pos < 0:
            return REASONING_CHUNK
        last = pos == PARTS_CYCLE - PARTS_REASONING - 1 or self.sent == self.total - 1
        return _tool_chunk(self.sent // PARTS_CYCLE, pos, last)


class Server:
    def __init__(self, tokens: int, interval: float, ttft: float) -> None:
        self.defaults = {"tokens": tokens, "interval": interval, "ttft": ttft, "spread": 0.0, "parts": 0.0,
                         "split": 0.0}
        self.spread_seq = 0
        self.stats = Stats()
        self.conns: set[Conn] = set()
        self.active: set[Stream] = set()
        self._heap: list[tuple[float, int, Stream]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.loop = asyncio.get_running_loop()

    # --- the timer wheel ---------------------------------------------------------------------------
    def schedule(self, due: float, stream: Stream) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), stream))
        if due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        now = self.loop.time()
        heap = self._heap
        mark = self.stats.mark
        after_mark = mark is not None and time.monotonic() >= mark
        written = 0
        while heap and heap[0][0] <= now + 0.0005:
            due, _, stream = heapq.heappop(heap)
            if stream not in self.active:
                continue
            stream.conn.transport.write(stream.token_chunk())
            stream.sent += 1
            written += 1
            if stream.sent >= stream.total:
                self.finish(stream)
                continue
            nxt = due + stream.interval
            if nxt < now - stream.interval:  # fell far behind: do not burst to catch up
                nxt = now + stream.interval
            heapq.heappush(heap, (nxt, next(self._seq), stream))
        self.stats.tokens_written += written
        if after_mark:
            self.stats.tokens_after_mark += written
        if heap:
            self._timer_at = heap[0][0]
            self._timer = self.loop.call_at(self._timer_at, self._tick)

    def start_stream(self, conn: Conn, body: dict[str, Any], headers: dict[bytes, bytes]) -> Stream:
        params = self.params(body, headers)
        total = int(params["tokens"])
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < total:
            total, finish = max_tokens, "length"
        opts = body.get("stream_options") or {}
        parts = bool(params["parts"])
        if parts and finish == "stop":
            finish = "tool_calls"
        stream = Stream(conn, total, max(float(params["interval"]), 0.0), bool(opts.get("include_usage")), finish,
                        parts, max(float(params["split"]), 0.0))
        self.active.add(stream)
        self.stats.streams_started += 1
        conn.transport.write(STREAM_HEAD + ROLE_CHUNK)
        if total <= 0:
            self.finish(stream)
        else:
            due = self.loop.time() + max(float(params["ttft"]), 0.0)
            spread, interval = int(params["spread"]), stream.interval
            if spread > 0 and interval > 0:
                phase = (self.spread_seq % spread) * interval / spread
                self.spread_seq += 1
                slot = (due // interval) * interval + phase
                due = slot if slot >= due else slot + interval
            self.schedule(due, stream)
        return stream

    def finish(self, stream: Stream) -> None:
        self.active.discard(stream)
        self.stats.streams_completed += 1
        out = FINISH_CHUNKS[stream.finish]
        if stream.include_usage:
            out += _sse({
                "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                "model": "bench", "choices": [],
                "usage": {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.sent,
                          "total_tokens": stream.prompt_tokens + stream.sent},
            })
        conn = stream.conn
        if stream.split > 0:
            conn.transport.write(out + DONE_EVENT)
            self.loop.call_later(stream.split, self._end_response, conn)
            return
        conn.transport.write(out + DONE_CHUNK)
        conn.stream = None
        if conn.close_after:
            conn.transport.close()

    def _end_response(self, conn: Conn) -> None:
        """``split``: the terminator, in a write of its own; then the connection takes its next request."""
        if conn.transport.is_closing():
            return
        conn.transport.write(END_CHUNKED)
        conn.stream = None
        if conn.close_after:
            conn.transport.close()
            return
        if conn.buf:
            conn.data_received(b"")  # a request that arrived meanwhile

    def params(self, body: dict[str, Any], headers: dict[bytes, bytes]) -> dict[str, float]:
        params = dict(self.defaults)
        messages = body.get("messages") or []
        if messages and isinstance(messages[-1], dict):
            content = messages[-1].get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str):
                for key, value in _DIRECTIVE.findall(content):
                    params[key] = float(value)
        for key in _PARAMS:
            raw = headers.get(b"x-bench-" + key.encode())
            if raw:
                params[key] = float(raw)
        return params

    # --- control endpoints ---------------------------------------------------------------------------
    def stats_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "connections_open": len(self.conns),
            "connections_opened": s.connections_opened,
            "connections_closed": s.connections_closed,
            "requests": s.requests,
            "chat_requests": s.chat_requests,
            "chat_connections": s.chat_connections,
            "streams_active": len(self.active),
            "streams_started": s.streams_started,
            "streams_completed": s.streams_completed,
            "streams_closed_by_peer": s.streams_closed_by_peer,
            "tokens_written": s.tokens_written,
            "mark": s.mark,
            "active_at_mark": s.active_at_mark,
            "tokens_after_mark": s.tokens_after_mark,
            "peer_closed_after_mark": s.peer_closed_after_mark,
        }

    def reset(self, abort: bool) -> None:
        if abort:
            for stream in list(self.active):
                self.active.discard(stream)
                stream.conn.transport.abort()
            self._heap.clear()
        self.stats.reset()
        self.spread_seq = 0

    def set_mark(self, t: float) -> None:
        self.stats.mark = t
        self.stats.tokens_after_mark = 0
        self.stats.peer_closed_after_mark = []
        self.stats.active_at_mark = len(self.active)


class Conn(asyncio.Protocol):
    """One client connection: parse requests (Content-Length bodies), answer, keep alive."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.stream: Stream | None = None
        self.close_after = False
        self.chatted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)
        self.server.stats.connections_opened += 1

    def eof_received(self) -> bool:
        """The peer closed its side: its stream ends now, and the time of the close is taken now. This side's close
        follows in a callback of its own: over loopback that system call also runs the peer's part of the
        teardown (~30 µs), and a storm of closes read in one turn of the loop would otherwise be timed each after
        the closes of all those read before it (the instrument's lag, not the peer's)."""
        self._peer_gone()
        asyncio.get_running_loop().call_soon(self.transport.close)
        return True  # (closed by the callback above)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.conns.discard(self)
        server.stats.connections_closed += 1
        self._peer_gone()  # a reset, or our own close: no end of file came first

    def _peer_gone(self) -> None:
        server = self.server
        stream = self.stream
        if stream is not None and stream in server.active:
            server.active.discard(stream)
            server.stats.streams_closed_by_peer += 1
            if server.stats.mark is not None:
                now = time.monotonic()
                if now >= server.stats.mark:
                    server.stats.peer_closed_after_mark.append(now)
        self.stream = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.stream is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.transport.abort()
                return
            head = self.buf[:end].split(b"\r\n")
            try:
                method, target, _ = head[0].split(b" ", 2)
            except ValueError:
                self.transport.abort()
                return
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                self.transport.write(_json_response(411, {"error": "chunked request bodies unsupported"}))
                self.transport.close()
                return
            length = int(headers.get(b"content-length", b"0") or 0)
            if length > _MAX_BODY:
                self.transport.write(_json_response(413, {"error": "too large"}))
                self.transport.close()
                return
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.server.stats.requests += 1
            self.close_after = headers.get(b"connection", b"").lower() == b"close"
            self.handle(method, target.split(b"?", 1)[0], headers, body)
            if self.close_after and self.stream is None:
                self.transport.close()
                return

    def handle(self, method: bytes, path: bytes, headers: dict[bytes, bytes], raw: bytes) -> None:
        server = self.server
        write = self.transport.write
        if path.endswith(b"/chat/completions") and method == b"POST":
            server.stats.chat_requests += 1
            if not self.chatted:
                self.chatted = True
                server.stats.chat_connections += 1
            try:
                body = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                write(_json_response(400, {"error": {"message": "bad json", "type": "invalid_request_error",
                                                     "code": None}}))
                return
            if body.get("stream"):
                self.stream = server.start_stream(self, body, headers)
                return
            params = server.params(body, headers)
            n = int(params["tokens"])
            write(_json_response(200, {
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": TOKEN_TEXT * n},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n},
            }))
        elif path.endswith(b"/models") and method == b"GET":
            write(_json_response(200, {"object": "list", "data": [
                {"id": "bench", "object": "model", "created": 1700000000, "owned_by": "bench"}]}))
        elif path == b"/stats" and method == b"GET":
            write(_json_response(200, server.stats_json()))
        elif path == b"/stats/reset" and method == b"POST":
            body = orjson.loads(raw) if raw else {}
            server.reset(bool(body.get("abort")))
            write(_json_response(200, {"ok": True}))
        elif path == b"/stats/mark" and method == b"POST":
            body = orjson.loads(raw) if raw else {}
            server.set_mark(float(body.get("t", time.monotonic())))
            write(_json_response(200, {"ok": True}))
        elif path in (b"/health", b"/healthz") and method == b"GET":
            write(_json_response(200, {"ok": True}))
        else:
            write(_json_response(404, {"error": {"message": "not found", "type": "not_found", "code": None}}))


async def serve(host: str, port: int, tokens: int, interval: float, ttft: float, ready: asyncio.Event | None = None
                ) -> None:
    server = Server(tokens, interval, ttft)
    srv = await asyncio.get_running_loop().create_server(lambda: Conn(server), host, port, backlog=4096,
                                                          reuse_address=True)
    if ready is not None:
        ready.set()
    async with srv:
        await srv.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--tokens", type=int, default=20, help="tokens per stream [20]")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between tokens [0.01]")
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token [0]")
    args = parser.parse_args(argv)
    raise_fd_limit()
    import uvloop

    uvloop.run(serve(args.host, args.port, args.tokens, args.interval, args.ttft))


if __name__ == "__main__":
    main()
