"""The upstream client API (``bench/clients/__init__.py``) on libcurl's multi-socket interface (``pycurl``).

One ``CurlMulti`` per pool, made in the running loop at the first request, with curl's sockets on the event loop:

- ``CURLMOPT_SOCKETFUNCTION``: curl says which sockets it wants watched for what; they become
  ``loop.add_reader`` / ``add_writer`` (removed on ``POLL_REMOVE``, before curl closes the socket);
- ``CURLMOPT_TIMERFUNCTION``: curl's one timeout becomes a ``loop.call_later``;
- a readable socket calls ``socket_action(fd, CSELECT_IN)``: curl reads, parses the response (chunked decoding
  in C) and calls the transfer's write callback with the body bytes, which hands them to ``on_body`` right
  there, inside the loop's read callback (as ssegate's own client does); then ``info_read`` reports the
  transfers that ended, which are removed from the multi (their connection stays in curl's cache).

Connections are kept and reused by curl (a cache of ``MAXCONNECTS``, each kept ``KEEPALIVE_S``); a request on a
cached connection that turns out dead is sent again on a new one by curl itself. After ``stop()`` the transfer
runs to the end of the body (at most ``DRAIN_S``) so that its connection can be reused; a response closed
before its end is removed from the multi, which closes its connection. ``abort()`` shuts the socket down first.
Easy handles are reused (``reset()``). curl's callbacks never remove a transfer themselves: a removal asked
for inside one (an abort while curl delivers a body) waits for the loop's next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pycurl

from ssegate.__about__ import __version__
from ssegate.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout

from . import shutdown_fd

__all__ = ["Pool", "Response"]

KEEPALIVE_S = 15
MAXCONNECTS = 256
DRAIN_S = 2.0
USER_AGENT = f"ssegate/{__version__} (libcurl)"
_CLOSED_EARLY = {pycurl.E_GOT_NOTHING, pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR, pycurl.E_PARTIAL_FILE}


class Response:
    def __init__(self, pool: Pool, handle: pycurl.Curl) -> None:
        self._pool = pool
        self._c = handle
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._body: list[bytes] = []
        self._error: BaseException | None = None
        self._stopped = False
        self._closed = False
        self._in_multi = False
        self._drain: asyncio.TimerHandle | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False

    # --- what a provider calls ----------------------------------------------------------------------
    async def read(self, limit: int = 1 << 20) -> bytes:
        while not self.complete and self._error is None and sum(map(len, self._body)) < limit:
            await self._wait()
        if self._error is not None and not self._body:
            raise self._error
        return b"".join(self._body)[:limit]

    def stream(self, on_body: Callable[[bytes], None]) -> None:
        body, self._body = self._body, []
        self._sink = on_body
        for piece in body:
            try:
                on_body(piece)
            except BaseException as exc:
                self._fail(exc)
                return

    async def finished(self) -> None:
        while not self.complete and not self._stopped and self._error is None:
            await self._wait()
        if self._error is not None:
            raise self._error

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True
        self._sink = None
        self._wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink = None
        self._pool._busy -= 1
        if not self._in_multi:
            self._pool._recycle(self._c)
        elif self._stopped and self._error is None:  # read the rest of the body, then curl keeps the connection
            self._drain = asyncio.get_running_loop().call_later(DRAIN_S, self._give_up)
        else:
            self._give_up()

    def cut(self) -> None:
        """What a provider hands to ``Sink.holding``: ``abort`` (ssegate's own client also wakes nobody there; the
        generation cancels the task waiting on this response itself, and an error it sees first counts as the
        cancel)."""
        self.abort()

    def abort(self) -> None:
        self._sink = None
        self._stopped = True
        if self._in_multi:
            with contextlib.suppress(pycurl.error):
                fd = self._c.getinfo(pycurl.ACTIVESOCKET)
                if fd >= 0:
                    shutdown_fd(fd)
        self._fail(UpstreamError("the upstream request was aborted"))
        self.close()

    # --- the pool's side ----------------------------------------------------------------------------
    def _give_up(self) -> None:
        """Remove the transfer before its end: curl closes its connection."""
        self._drain = None
        if self._in_multi:
            self._in_multi = False
            self._pool._remove(self._c)

    def _finished(self, errno: int, message: str) -> None:
        """curl ended the transfer (and it was removed from the multi)."""
        self._in_multi = False
        if errno == 0:
            if not self._head.done():
                self._fail(UpstreamProtocolError("the upstream closed the connection before answering"))
            else:
                self.complete = True
                self._wake()
        elif self._error is None:
            if errno == pycurl.E_OPERATION_TIMEDOUT:
                err: UpstreamError = UpstreamTimeout("connecting to the upstream timed out")
            elif errno in (pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST):
                err = UpstreamError(f"cannot connect to the upstream ({message})")
            elif errno in _CLOSED_EARLY:
                what = "before answering" if not self._head.done() else "before the answer was complete"
                err = UpstreamError(f"the upstream closed the connection {what}")
            else:
                err = UpstreamProtocolError(f"the upstream request failed: {message}")
            self._fail(err)
        if self._closed:
            if self._drain is not None:
                self._drain.cancel()
                self._drain = None
            self._pool._recycle(self._c)

    def _on_header(self, line: bytes) -> None:
        if line.startswith(b"HTTP/"):
            parts = line.split(None, 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.headers = {}
            return
        if line in (b"\r\n", b"\n"):
            if 100 <= self.status < 200:
                return  # an interim response: the real one follows
            if not self._head.done():
                self._head.set_result(None)
            return
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            return
        key, text = name.strip().lower(), value.strip()
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def _on_write(self, data: bytes) -> int | None:
        sink = self._sink
        if sink is None:
            if not self._stopped and self._error is None:
                self._body.append(data)
                self._wake()
            return None
        try:  # the hot path: a network read of a stream, decoded by curl, straight to its consumer
            sink(data)
        except BaseException as exc:  # the consumer's failure ends this response (curl aborts the transfer)
            self._fail(exc)
            return 0
        return None

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        self._sink = None
        if not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()
        self._wake()

    async def _wait(self) -> None:
        fut = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await fut
        finally:
            self._waiter = None

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)


class Pool:
    def __init__(self, *, limit: int = 0, connect_timeout: float = 10.0, ssl_context: Any = None) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self._multi: pycurl.CurlMulti | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watched: dict[int, int] = {}
        self._free: list[pycurl.Curl] = []
        self._responses: dict[int, Response] = {}
        self._in_curl = False
        self._busy = 0

    @property
    def active(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return 0

    @property
    def idle(self) -> int:
        return 0  # curl's connection cache does not say

    def _setup(self) -> pycurl.CurlMulti:
        if self._multi is None:
            self._loop = asyncio.get_running_loop()
            m = pycurl.CurlMulti()
            m.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
            m.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
            m.setopt(pycurl.M_MAXCONNECTS, MAXCONNECTS)
            if self.limit:
                m.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self.limit)
            self._multi = m
        return self._multi

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes = b"",
                      sent: Callable[[Response], None] | None = None) -> Response:
        multi = self._setup()
        c = self._free.pop() if self._free else pycurl.Curl()
        resp = Response(self, c)
        lines = [f"{name}: {value}" for name, value in headers.items()]
        if not any(name.lower() == "user-agent" for name in headers):
            lines.append(f"User-Agent: {USER_AGENT}")
        lines.append("Expect:")  # no 100-continue round trip for a POST body
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(self.connect_timeout * 1000))
        c.setopt(pycurl.MAXAGE_CONN, KEEPALIVE_S)
        c.setopt(pycurl.HTTPHEADER, lines)
        if method == "GET":
            c.setopt(pycurl.HTTPGET, 1)
        else:
            c.setopt(pycurl.POSTFIELDS, body)
            if method != "POST":
                c.setopt(pycurl.CUSTOMREQUEST, method)
        c.setopt(pycurl.HEADERFUNCTION, resp._on_header)
        c.setopt(pycurl.WRITEFUNCTION, resp._on_write)
        self._responses[id(c)] = resp
        multi.add_handle(c)
        resp._in_multi = True
        self._busy += 1
        if sent is not None:
            sent(resp)
        try:
            await resp._head
        except BaseException:
            resp.close()
            raise
        return resp

    # --- the event loop drives curl -----------------------------------------------------------------
    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        loop = self._loop
        assert loop is not None
        had = self._watched.get(fd, 0)
        want = 0 if what == pycurl.POLL_REMOVE else what
        if had & pycurl.POLL_IN and not want & pycurl.POLL_IN:
            loop.remove_reader(fd)
        if had & pycurl.POLL_OUT and not want & pycurl.POLL_OUT:
            loop.remove_writer(fd)
        if want & pycurl.POLL_IN and not had & pycurl.POLL_IN:
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if want & pycurl.POLL_OUT and not had & pycurl.POLL_OUT:
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        if want:
            self._watched[fd] = want
        else:
            self._watched.pop(fd, None)

    def _on_timer(self, ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ms >= 0:
            assert self._loop is not None
            self._timer = self._loop.call_later(ms / 1000, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, event: int) -> None:
        multi = self._multi
        if multi is None:
            return
        self._in_curl = True
        try:
            _, running = multi.socket_action(fd, event)
        finally:
            self._in_curl = False
        if running >= len(self._responses):
            return  # no transfer ended: nothing for info_read (the common case: a read of a running stream)
        while True:
            queued, ok, failed = multi.info_read()
            for c in ok:
                self._ended(c, 0, "")
            for c, errno, message in failed:
                self._ended(c, errno, message)
            if not queued:
                break

    def _ended(self, c: pycurl.Curl, errno: int, message: str) -> None:
        assert self._multi is not None
        self._multi.remove_handle(c)
        resp = self._responses.pop(id(c), None)
        if resp is not None:
            resp._finished(errno, message)

    def _remove(self, c: pycurl.Curl) -> None:
        """Remove a transfer before its end (never from inside one of curl's callbacks)."""
        if self._in_curl:
            assert self._loop is not None
            self._loop.call_soon(self._remove, c)
            return
        if self._responses.pop(id(c), None) is None:
            return  # it ended meanwhile: recycled then
        if self._multi is not None:
            self._multi.remove_handle(c)
        self._recycle(c)

    def _recycle(self, c: pycurl.Curl) -> None:
        if id(c) in self._responses:
            return  # still in a transfer: recycled when it ends
        c.reset()
        if len(self._free) < MAXCONNECTS:
            self._free.append(c)
        else:
            c.close()

    async def aclose(self) -> None:
        multi = self._multi
        self._multi = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if multi is None:
            return
        for c_id, resp in list(self._responses.items()):
            del self._responses[c_id]
            with contextlib.suppress(pycurl.error):
                multi.remove_handle(resp._c)
        multi.close()
        if self._loop is not None:
            for fd in self._watched:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        self._watched.clear()
        for c in self._free:
            c.close()
        self._free.clear()
