"""A small HTTP/1.1 client for upstream requests: one asyncio protocol per connection, httptools' C parser.

The gateway's hot path is an upstream body read: one network read carries one model token. A general
client (aiohttp, httpx) hands each read through a buffer object, a future and a task switch before the
provider sees it; here the connection's ``data_received`` parses the chunk (llhttp, in C) and hands the body
bytes straight to the consumer's callback, in that same callback of the event loop: the body a read brought, in
one call once the read is parsed (a read that carries several chunks of a chunked body, such as a stream's last
token, its finish and ``[DONE]``, is one call with their bytes joined: its events then reach the client in one
write, ``events.read_events``). That is the whole reason for this module; the rest is what an upstream client
must do besides:

- ``Pool``: keep-alive connections per origin; at most ``limit`` requests at once (0 = no limit), waiters served
  in order, a place given up passing straight to the next waiter (also when that one is cancelled in the same
  instant), a wait longer than ``connect_timeout`` an ``UpstreamTimeout``; the TLS context made with the pool.
- Connections (``dial.py``): happy eyeballs; proxies from ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and
  ``NO_PROXY``. An ``https`` upstream behind a proxy is reached through a ``CONNECT`` tunnel made on the socket
  before this protocol is attached, so a proxied stream runs through the same per-token code as a direct one;
  an ``http`` one gets absolute-form request lines and ``Proxy-Authorization``.
- ``Pool.request()`` returns the ``Response`` once its head arrived; interim answers (``100``, ``103``) are
  skipped; the head is bounded (``MAX_HEAD``) on the bytes as they arrive, so an endless header line is
  refused at 64 KiB, not buffered. ``head_timeout`` bounds the wait for the head when a caller asks; a
  streaming caller owns that wait (the generation's first-token timeout). A request is sent again, once, on a
  new connection only when the upstream cannot have seen it: its connection had been idle in the pool and
  closed before any byte of an answer, and the request was not aborted.
- ``Response.read()`` reads a short body (error details, ``/models``), each wait bounded by ``read_timeout``;
  ``Response.stream(on_body)`` pushes body bytes as each read brings them and ``await finished()`` waits for the end (or
  raises the failure, including one raised by ``on_body``). No timer per read on the streaming path: the
  generation bounds the silence between tokens.
- ``Response.stop()``: the consumer saw its end marker (``[DONE]``). ``close()`` then drains the rest of the
  message, and the connection returns to the pool when it ends within ``DRAIN_S``/``DRAIN_BYTES``, whether or
  not the final chunk came in the same read as the marker. ``close()`` of any other unfinished response closes
  the connection; ``abort()`` shuts the socket down at once (the upstream sees the FIN before anything else
  runs), for cancel and disconnect; ``cut()`` does the same without waking the task waiting on the response
  (its caller cancels that task itself: ``Generation.cancel``).
- Idle connections expire after ``KEEPALIVE_S`` (under the 5 s of uvicorn and Node), or a second before the
  ``timeout`` of the server's ``Keep-Alive`` header: no request is written into a connection being closed. One
  ``core.deadline.Deadline`` per pool sweeps them, at the earliest expiry: a connection kept with a shorter life
  than those already idle moves it earlier; a longer one costs nothing (the sweep looks for the next expiry after
  it closed what was due). Its cost is per connection kept, never per token. The same sweep ends the drains
  that ran past ``DRAIN_S``: a drain costs no timer of its own (it started one per stream, made and cancelled
  within a millisecond when the final chunk came in the next read).

gzip/deflate bodies are decoded (we ask for ``identity``, but a server may not listen); no HTTP/2, no
redirects: an upstream is a configured base URL, and a redirect is an error worth seeing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import httptools

from ..__about__ import __version__
from ..core.deadline import Deadline
from ..core.tasks import within
from ..errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .dial import Proxies, Proxy, connect, refusal

__all__ = ["Pool", "Response"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_running_loop: Final = asyncio.get_running_loop
_ResponseParser: Final = httptools.HttpResponseParser

USER_AGENT: Final = f"ssegate/{__version__}"
MAX_HEAD: Final = 64 << 10
"""Largest response head accepted (status lines and headers, interim answers included)."""
MAX_IDLE_PER_ORIGIN: Final = 10_000
"""Idle connections kept per origin: every one a burst of streams used (as many as the gateway admits at once by
default, ``max_streams``), so that the next burst finds them open instead of paying a TCP and TLS handshake each in
its middle; none is kept longer than ``KEEPALIVE_S``, so what is kept is what the last seconds' traffic had open.
(With 256 kept, each burst of 1000 streams opened 744 connections again: CHANGELOG, twentieth round.)"""
PREPARED_MAX: Final = 256
"""Request heads kept per (method, URL, headers) by a pool; the table starts again when full."""
_WITH_BODY: Final = frozenset(("POST", "PUT", "PATCH"))
KEEPALIVE_S = 4.0
"""An idle connection is closed after this long: under the 5 s of uvicorn and Node (others keep theirs longer)."""
DRAIN_S: Final = 1.0
"""After ``stop()`` and ``close()``, how long the rest of the message may take to arrive."""
DRAIN_BYTES: Final = 16 << 10
"""After ``stop()``, how much more body may arrive before the connection is given up."""
READ_TIMEOUT_S: Final = 30.0
"""``Response.read()``: the longest wait for more of a short body."""
CLOSE_WAIT_S: Final = 1.0
"""How long ``Pool.aclose()`` waits for the connections it closed to be gone (a TLS close takes loop passes)."""

Origin = tuple[str, str, int]
_Prepared = tuple[Origin, "Proxy | None", str, bytes]
"""(origin, proxy, authority, request head)."""


class _Connection(asyncio.Protocol):
    """One upstream TCP connection; it carries one response at a time."""

    __slots__ = ("expires", "loop", "origin", "pool", "response", "reused", "transport")

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.loop = _running_loop()
        """The loop it was made in (``get_running_loop()`` is a system call on Python 3.11: looked up once)."""
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.reused = False
        self.expires = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None:  # bytes on an idle connection: not a server to keep talking to
            assert self.transport is not None
            self.transport.abort()
            return
        resp._feed(data)

    def eof_received(self) -> bool | None:
        resp = self.response
        if resp is not None:
            resp._eof()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._forget(self)
        resp = self.response
        if resp is not None:
            resp._eof(exc)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class Response:
    """One upstream response. ``status`` and ``headers`` (lower-case names) are set once ``Pool.request``
    returns it; the body is read with ``read()`` or pushed with ``stream()``. Whoever got it closes it."""

    __slots__ = (
        "_aborted", "_body", "_conn", "_decoder", "_draining", "_dropped", "_error", "_final_raw", "_got", "_head",
        "_head_bytes", "_headers", "_heading", "_interim", "_keep_alive", "_keep_s", "_more", "_parser", "_raw_headers",
        "_seen", "_sink", "_slot", "_stale", "_stopped", "_until_eof", "_waiter", "complete", "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self._headers: dict[str, str] | None = None
        self.complete = False
        """The whole body arrived."""
        self._parser: httptools.HttpResponseParser | None = _ResponseParser(self)
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._heading = True  # until the final head: bytes are counted against MAX_HEAD as they come
        self._head_bytes = 0
        self._interim = False
        self._waiter: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._sink: Callable[[bytes], None] | None = None
        self._got: bytes | None = None
        """The body the read being parsed brought so far, for ``_sink`` (``_pass_on``) ..."""
        self._more: list[bytes] | None = None
        """... and its pieces after the first (the chunks of a chunked body), if any."""
        self._error: BaseException | None = None
        self._decoder: Any = None
        self._until_eof = False
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._final_raw: list[tuple[bytes, bytes]] = []  # the final head's (``headers``)
        self._seen = False  # some of the answer arrived
        self._stale = False  # the connection closed before any byte of an answer
        self._stopped = False
        self._aborted = False
        self._keep_alive = False
        self._keep_s: float | None = None  # the timeout of the server's Keep-Alive header
        self._draining = False
        """Draining after ``stop()`` and ``close()`` (until the pool's time for it: ``Pool._start_drain``)."""
        self._dropped = 0
        self._slot = False  # this response holds one of the pool's places under limit (given back at close)

    # --- what a provider calls ----------------------------------------------------------------------
    async def read(self, limit: int = 1 << 20) -> bytes:
        """The body (at most ``limit`` bytes of it: reading stops there); what arrived when the body ends
        early, the error when nothing did. Waiting ``Pool.read_timeout`` for more is an ``UpstreamTimeout``."""
        bound = self._conn.pool.read_timeout
        while not self.complete and self._error is None and sum(map(len, self._body)) < limit:
            try:
                await within(self._conn.loop, self._wait(), bound)
            except TimeoutError:
                self._fail(UpstreamTimeout(f"the upstream sent no more of its answer for {bound:g} s"))
        if self._error is not None and not self._body:
            raise self._error
        return b"".join(self._body)[:limit]

    async def chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); ``b""`` at the end."""
        while not self._body and not self.complete and not self._stopped and self._error is None:
            await self._wait()
        if self._body:
            body = b"".join(self._body)
            self._body = []
            return body
        if self._error is not None:
            raise self._error
        return b""

    def stream(self, on_body: Callable[[bytes], None]) -> None:
        """From now on, hand the body to ``on_body`` as it arrives, a read's in one call (what arrived already: at
        once, a piece at a time). An exception from ``on_body`` fails the response: the connection is closed and
        ``finished`` raises it."""
        body, self._body = self._body, []
        self._sink = on_body
        for piece in body:  # already decoded
            self._hand(piece)

    async def finished(self) -> None:
        """Wait for the end of the body (or ``stop``); raise what failed it."""
        while not self.complete and not self._stopped and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    @property
    def stopped(self) -> bool:
        """``stop`` was called."""
        return self._stopped

    def stop(self) -> None:
        """The consumer has all it wants (an end marker in the body): ``finished`` returns now, and what else
        arrives is dropped (``close`` keeps the connection if the message ends soon)."""
        self._stopped = True
        self._sink = None
        self._wake()

    def close(self) -> None:
        """Give the connection back to the pool when the body was read to its end. After ``stop``, the rest of
        the message is drained first: the connection goes back when it ends within ``DRAIN_S`` (and
        ``DRAIN_BYTES``), else it is closed. Any other unfinished response closes its connection."""
        self._sink = None
        conn = self._conn
        if self._slot:
            self._slot = False
            conn.pool._leave()
        if conn.response is not self or self._draining:
            return
        if self._error is None and conn.usable:
            if self.complete:
                self._release()
                return
            if self._stopped and not self._heading and not self._until_eof:
                self._draining = True
                conn.pool._start_drain(conn, conn.loop.time() + DRAIN_S)
                return
        self._parser = None  # it calls this response back: a cycle the GC would have to find
        conn.response = None
        if conn.transport is not None:
            conn.transport.abort()

    def abort(self) -> None:
        """Tear the connection down now: the socket is shut down right here, so the upstream sees the FIN
        before the event loop runs anything else (the transport's own close waits for the next loop pass,
        behind the unwinding of every other generation that a storm of disconnects cancelled at once).
        Whoever waits on this response gets an ``UpstreamError``."""
        self._teardown(wake=True)

    def cut(self) -> None:
        """``abort`` for a caller that cancels the task waiting on this response itself (``Generation.cancel``):
        the same teardown, but nobody is woken, so that the task does nothing (a retry, an error) before its
        cancel. It is what a provider hands to ``Sink.holding``."""
        self._teardown(wake=False)

    def _teardown(self, wake: bool) -> None:
        self._sink = None
        self._stopped = True  # never sent again
        self._aborted = True
        conn = self._conn
        transport = conn.transport
        if transport is not None and conn.response is self and not transport.is_closing():
            _shut_down(transport)
        if self._error is None:
            self._fail(UpstreamError("the upstream request was aborted"), wake)
        self.close()

    # --- the protocol's side ------------------------------------------------------------------------
    async def _wait(self) -> None:
        fut = self._waiter = _running_loop().create_future()
        try:
            await fut
        finally:
            self._waiter = None

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._error is not None:
            return
        if self._heading:
            self._feed_head(parser, data)
            return
        self._parse(parser, data)  # the hot path: a read of the body, through the parser to the consumer

    def _feed_head(self, parser: httptools.HttpResponseParser, data: bytes) -> None:
        """Bytes before the final head: counted as they arrive, so a head is refused the moment it passes
        ``MAX_HEAD`` (the parser would otherwise buffer a header line of any length until it ends)."""
        self._seen = True
        room = MAX_HEAD - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._parse(parser, data)
            return
        self._head_bytes = MAX_HEAD
        self._parse(parser, data[:room])
        if self._error is not None or self._parser is None:
            return
        if self._heading:
            self._fail(UpstreamProtocolError(f"the upstream sent a response head over {MAX_HEAD >> 10} KiB"))
            return
        self._parse(parser, data[room:])  # the head ended in time: the rest is body

    def _parse(self, parser: httptools.HttpResponseParser, data: bytes) -> None:
        """Parse a read; the body it brought goes to the consumer in one call at its end (``on_body``), also what came
        before a fault in it (as the consumer would have had it piece by piece)."""
        failure: BaseException | None = None
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # our own callback failed: keep what it raised
            failure = exc.__context__ or exc
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            failure = UpstreamProtocolError(f"the upstream sent a malformed HTTP response ({exc})")
        self._pass_on()
        if failure is not None:
            self._fail(failure)

    def _pass_on(self) -> None:
        """Hand the body gathered from the read being parsed to the consumer (``_hand``), its pieces joined."""
        body = self._got
        if body is None:
            return
        self._got = None
        more = self._more
        if more is not None:
            self._more = None
            more.insert(0, body)
            body = b"".join(more)
        self._hand(body)

    def _eof(self, exc: Exception | None = None) -> None:
        if self.complete or self._error is not None:
            return
        if self._until_eof and not self._heading and exc is None:
            self._message_done()  # a body without length or chunking ends with the connection
            return
        what = "before answering" if self._heading else "before the answer was complete"
        err = UpstreamError(f"the upstream closed the connection {what}")
        if exc is not None:
            err.__cause__ = exc
        self._stale = not self._seen
        self._fail(err)

    def _fail(self, exc: BaseException, wake: bool = True) -> None:
        """The response failed: its connection is torn down, and whoever waits on it (the head, the body) gets
        ``exc``; without ``wake``, the waiter sleeps on (its caller cancels it)."""
        if self._error is not None:
            return
        self._error = exc
        self._sink = None
        conn = self._conn
        if self._draining:
            self._draining = False
            conn.pool._draining.pop(conn, None)
        if conn.transport is not None:
            conn.transport.abort()
        if not wake:
            return
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: whoever waits sees it; nobody waiting is fine too
        self._wake()

    def _deliver(self, piece: bytes) -> None:
        if self._decoder is not None:
            piece = self._decoder.decompress(piece)
            if not piece:
                return
        self._hand(piece)

    def _hand(self, piece: bytes) -> None:
        sink = self._sink
        if sink is None:
            if self._stopped:  # after the end marker: dropped, and bounded
                self._dropped += len(piece)
                if self._dropped > DRAIN_BYTES:
                    self._fail(UpstreamProtocolError("the upstream went on sending after the end marker"))
                return
            self._body.append(piece)
            self._wake()
            return
        try:
            sink(piece)
        except BaseException as exc:  # the consumer's failure (bad upstream data, usually) ends this response
            self._fail(exc)

    def _message_done(self) -> None:
        decoder = self._decoder
        if decoder is not None:
            self._decoder = None
            rest = decoder.flush()
            if rest:
                self._hand(rest)
            if not decoder.eof:
                self._fail(UpstreamProtocolError("the upstream's compressed body ended before its end"))
                return
        self.complete = True
        self._wake()
        if self._draining:  # closed after stop(): the message ended in time
            self._release()

    def _release(self) -> None:
        """The message ended and nobody reads it any more: keep the connection for the next request."""
        conn = self._conn
        if self._draining:
            self._draining = False
            conn.pool._draining.pop(conn, None)
        self._parser = None
        conn.response = None
        if self._keep_alive and conn.usable:
            conn.pool._keep(conn, self._keep_s)
        elif conn.transport is not None:
            conn.transport.close()

    # --- httptools callbacks ------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    @property
    def headers(self) -> dict[str, str]:
        """The final answer's headers by lower-case name (a repeated one's values joined with ", "), made when first
        asked for (an error's ``retry-after``): most streams never read them, and an upstream such as OpenAI sends
        twenty (~1.5k instructions each to decode and file). Empty until the head is complete."""
        headers = self._headers
        if headers is None:
            if self._heading:
                return {}
            headers = self._headers = _joined(self._final_raw)
        return headers

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._raw_headers = []
            self._interim = True
            return
        self.status = status
        raw = self._final_raw = self._raw_headers
        self._raw_headers = []  # (trailers, if any, go there: not into ``headers``)
        headers = _joined(raw, framing_only=True)  # the headers read here; ``headers`` makes all if asked
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "deflate", "x-gzip"):
            self._decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, detected from the header
        elif encoding not in ("identity", ""):
            raise UpstreamProtocolError(f"the upstream answered in an encoding it was not asked for: {encoding}")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._until_eof = not chunked and "content-length" not in headers and status not in (204, 304)
        if "keep-alive" in headers:
            self._keep_s = _keep_alive_timeout(headers["keep-alive"])
        self._heading = False
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._sink is None or self._decoder is not None:
            self._deliver(body)
            return
        # the hot path: gathered, for the consumer at the end of the read (``_parse``; as a rule one piece)
        if self._got is None:
            self._got = body
        elif self._more is None:
            self._more = [body]
        else:
            self._more.append(body)

    def on_message_complete(self) -> None:
        self._pass_on()  # the body first, then its end
        if self._interim:
            self._interim = False
            return
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()  # asked now: the parser forgets once it returns
        self._message_done()


class Pool:
    """Keep-alive connections to upstreams, created lazily inside the running loop.

    ``connect_timeout`` bounds a new connection (TCP, proxy tunnel, TLS) and the wait for a place under
    ``limit``; ``head_timeout`` the wait for a response head (None: unbounded, the caller's to bound);
    ``read_timeout`` each wait of ``Response.read()``. Proxies are read from the environment now."""

    def __init__(
        self,
        *,
        limit: int = 0,
        connect_timeout: float = 10.0,
        head_timeout: float | None = None,
        read_timeout: float | None = READ_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        """For ``https`` upstreams (the system's trust store unless one is given); made now, off the hot path."""
        self.proxies = Proxies()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._draining: dict[_Connection, float] = {}
        """Connections whose response drains its message, and the loop time by which it must end."""
        self._busy = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self._sweep: Deadline | None = None
        """Closes the idle connections that expired; armed at the earliest expiry (made in the loop, at the first
        connection kept)."""
        self._closed = False
        self._closing: set[_Connection] = set()
        self._all_closed: asyncio.Event | None = None
        self._prepared: dict[tuple[object, ...], _Prepared] = {}
        self._last: tuple[dict[str, str], str, str, dict[str, str], _Prepared] | None = None
        """The last request's headers (the caller's dict, and a copy to tell a change), method, URL and what
        ``_prepare`` made of them: a provider sends its own headers each time (~4k instructions a request to make
        and hash the key of ``_prepared``)."""

    @property
    def active(self) -> int:
        """Requests in flight (responses not closed yet)."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Requests waiting for a place under ``limit``."""
        return len(self._queue)

    @property
    def idle(self) -> int:
        """Connections kept for the next request."""
        return sum(map(len, self._idle.values()))

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes = b"",
        sent: Callable[[Response], None] | None = None,
        *,
        head_timeout: float | None = None,
    ) -> Response:
        """Send a request; return its response once the head arrived (the caller closes it). ``sent`` is
        called with the response as soon as the request is written, so it can be aborted while its head
        is awaited. ``head_timeout`` (the pool's when None) bounds that wait."""
        last = self._last
        if last is not None and last[0] is headers and last[1] == method and last[2] == url and last[3] == headers:
            prepared = last[4]  # a provider's own headers again, unchanged: no key to build and hash
        else:
            key = (method, url, *headers.items())
            found = self._prepared.get(key)
            if found is None:
                found = self._prepare(method, url, headers)
                if len(self._prepared) >= PREPARED_MAX:
                    self._prepared.clear()
                self._prepared[key] = found
            prepared = found
            self._last = (headers, method, url, dict(headers), prepared)
        origin, proxy, authority, head = prepared
        raw = (head + b"Content-Length: %d\r\n\r\n" % len(body) + body if body or method in _WITH_BODY
               else head + b"\r\n")
        timeout = self.head_timeout if head_timeout is None else head_timeout
        await self._admit()
        try:
            resp = await self._exchange(await self._connection(origin, proxy), raw, sent, timeout)
            if resp._error is not None:  # a kept connection the server had closed: once more, on a new one
                conn = await self._connection(origin, proxy, reuse=False)
                if resp._aborted:  # aborted while the new connection was made: not sent again
                    self._keep(conn, None)
                    raise resp._error
                resp = await self._exchange(conn, raw, sent, timeout)
                if resp._error is not None:
                    raise resp._error
            if proxy is not None and origin[0] == "http" and resp.status == 407:  # a proxy that forwards it
                resp.close()
                raise refusal(proxy, 407, f"the request to {authority}")
        except BaseException:
            self._leave()
            raise
        resp._slot = True
        return resp

    def _prepare(self, method: str, url: str, headers: dict[str, str]) -> _Prepared:
        """What a request to ``url`` with ``headers`` needs besides its body: where it goes (the origin, the proxy)
        and its head up to the ``Content-Length``; kept per (method, URL, headers), as a provider sends the
        same ones each time."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        default = 443 if scheme == "https" else 80
        port = parts.port or default
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = (f"[{host}]" if ":" in host else host) + ("" if port == default else f":{port}")
        proxy = self.proxies.for_origin(scheme, host, port)
        forward = proxy if scheme == "http" else None  # https goes through a tunnel: the request is as direct
        head = _request_head(method, f"http://{authority}{target}" if forward else target, authority, headers,
                             forward.authorization if forward else None)
        return (scheme, host, port), proxy, authority, head

    async def _exchange(
        self, conn: _Connection, raw: bytes, sent: Callable[[Response], None] | None, head_timeout: float | None
    ) -> Response:
        """Write the request, wait for the response head. A response that failed comes back (instead of its
        error being raised) only when the request may be sent again: the connection had been idle in the pool
        and closed before any byte of an answer, and nobody aborted the request."""
        resp = Response(conn)
        conn.response = resp
        assert conn.transport is not None
        conn.transport.write(raw)
        if sent is not None:
            sent(resp)
        try:
            if head_timeout is None:  # the common case: the generation's own deadlines bound the wait
                await resp._head
            else:
                await within(conn.loop, resp._head, head_timeout)
        except TimeoutError:
            err = UpstreamTimeout(f"the upstream sent no answer within {head_timeout:g} s of the request")
            resp._fail(err)
            resp.close()
            raise err from None
        except UpstreamError:
            resp.close()
            if conn.reused and resp._stale and not resp._aborted:
                return resp
            raise
        except BaseException:
            resp.close()
            raise
        return resp

    async def _admit(self) -> None:
        """Take a place under ``limit``, waiting (first come, first served) at most ``connect_timeout``."""
        if not self.limit or (self._busy < self.limit and not self._queue):
            self._busy += 1
            return
        loop = _running_loop()
        fut = loop.create_future()
        self._queue.append(fut)
        try:
            await within(loop, fut, self.connect_timeout)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self._leave()  # given a place in the same instant: it passes on, not lost
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._queue.remove(fut)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"no upstream connection came free within {self.connect_timeout:g} s "
                    f"({self.limit} requests in flight, the most allowed)") from None
            raise

    def _leave(self) -> None:
        """Give a place back: to the first waiter (the place passes on, ``_busy`` unchanged), else free it."""
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._busy -= 1

    async def _connection(self, origin: Origin, proxy: Proxy | None, reuse: bool = True) -> _Connection:
        idle = self._idle.get(origin)
        while reuse and idle:
            conn = idle.pop()
            if conn.usable and conn.loop.time() < conn.expires:
                conn.reused = True
                return conn
            if conn.transport is not None:
                conn.transport.close()
        return await self._open(origin, proxy)

    async def _open(self, origin: Origin, proxy: Proxy | None) -> _Connection:
        conn = _Connection(self, origin)
        ctx = self.ssl_context if origin[0] == "https" else None
        await connect(lambda: conn, origin[1], origin[2], proxy, ctx, self.connect_timeout)
        return conn

    def _keep(self, conn: _Connection, keep_s: float | None) -> None:
        """A response read to its end: keep its connection for the next request, until it expires (a second
        before the server's ``Keep-Alive: timeout``, at most ``KEEPALIVE_S``)."""
        ttl = KEEPALIVE_S if keep_s is None else min(KEEPALIVE_S, keep_s - 1.0)
        idle = self._idle.setdefault(conn.origin, [])
        if self._closed or ttl <= 0 or len(idle) >= MAX_IDLE_PER_ORIGIN:
            assert conn.transport is not None
            conn.transport.close()
            return
        conn.expires = conn.loop.time() + ttl
        idle.append(conn)
        self._sweep_by(conn, conn.expires)

    def _start_drain(self, conn: _Connection, until: float) -> None:
        """``conn``'s response drains its message until ``until`` (loop time): the sweep fails it then."""
        self._draining[conn] = until
        self._sweep_by(conn, until)

    def _sweep_by(self, conn: _Connection, at: float) -> None:
        sweep = self._sweep
        if sweep is None:
            sweep = self._sweep = Deadline(conn.loop, self._expire)
        if sweep.at is None or at < sweep.at:  # a later time waits for the sweep before it
            sweep.set(at)

    def _expire(self) -> None:
        """Close the idle connections whose time is up, and fail the drains whose time is up (those due within
        the next 10 ms too: one pass for a burst kept together); arm the sweep for the next of either."""
        now = _running_loop().time() + 0.01
        for idle in self._idle.values():
            for conn in [c for c in idle if c.expires <= now]:
                idle.remove(conn)
                if conn.transport is not None:
                    conn.transport.close()
        left = [c.expires for idle in self._idle.values() for c in idle]
        for conn, until in list(self._draining.items()):
            if until > now:
                left.append(until)
            else:  # past its time: the response fails, which ends the drain
                resp = conn.response
                if resp is not None:
                    resp._fail(UpstreamError("the upstream did not end its body after the end marker"))
                self._draining.pop(conn, None)
        if left and self._sweep is not None:
            self._sweep.set(min(left))

    def _forget(self, conn: _Connection) -> None:
        self._draining.pop(conn, None)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        if self._all_closed is not None:
            self._closing.discard(conn)
            if not self._closing:
                self._all_closed.set()

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.close()
            self._sweep = None
        closing = {c for c in [*self._draining, *(c for idle in self._idle.values() for c in idle)]
                   if c.transport is not None}
        self._idle.clear()
        self._draining.clear()
        if not closing:
            return
        # a TLS connection's close (close_notify, then the socket) finishes in later loop passes: wait for it
        # (bounded), so that a loop closed right after aclose() does not cut it short
        self._closing = closing
        self._all_closed = asyncio.Event()
        for conn in closing:
            conn.transport.close()  # type: ignore[union-attr]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), CLOSE_WAIT_S)


def _shut_down(transport: asyncio.BaseTransport) -> None:
    """Shut the socket under ``transport`` down now, so that the upstream sees the FIN before the loop runs anything
    else (``Response.abort``); the transport still owns the fd, and closes it. The loop's own object for the socket
    may refuse ``shutdown`` (uvloop's stands for the fd and does), so a socket object is made on the same fd, shuts
    it down and lets go of it without closing it (its family is a label that ``shutdown`` does not read: given, it
    is not asked of the fd). Only for a transport that is not closing: its fd is open (a closed one's number may
    already be another connection's)."""
    sock = transport.get_extra_info("socket")
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return
    own = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
    try:
        own.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # (not connected any more: nothing to shut down)
    finally:
        own.detach()


_FRAMING: Final = frozenset(("content-encoding", "transfer-encoding", "content-length", "keep-alive"))
"""The headers of an answer that ``Response`` reads itself (its body's framing and encoding, the connection's
keep-alive); ``_FRAMING_SIZES`` their lengths: a header of another length is not decoded to be compared."""
_FRAMING_SIZES: Final = frozenset(len(name) for name in _FRAMING)


def _joined(raw: list[tuple[bytes, bytes]], framing_only: bool = False) -> dict[str, str]:
    """Header pairs as a dict by lower-case name (latin-1), a repeated name's values joined with ", "; with
    ``framing_only``, the ``_FRAMING`` headers alone."""
    headers: dict[str, str] = {}
    for name, value in raw:
        if framing_only and len(name) not in _FRAMING_SIZES:
            continue
        key = name.decode("latin-1").lower()
        if framing_only and key not in _FRAMING:
            continue
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _keep_alive_timeout(value: str) -> float | None:
    """The ``timeout=N`` of a ``Keep-Alive`` header (``timeout=5, max=100``)."""
    for part in value.split(","):
        name, _, number = part.partition("=")
        if name.strip().lower() == "timeout":
            with contextlib.suppress(ValueError):
                return float(number.strip().strip('"'))
    return None


def _request_head(
    method: str, target: str, authority: str, headers: dict[str, str], proxy_authorization: str | None = None,
) -> bytes:
    """The request line and headers, without the ``Content-Length`` and the blank line that ends the head."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    names = set()
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0"):
            raise UpstreamError(f"the upstream header {name!r} holds a line break (check the configured key)")
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")
    if proxy_authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy_authorization}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")
