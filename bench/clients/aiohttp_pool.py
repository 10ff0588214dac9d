"""The upstream client API (``bench/clients/__init__.py``) on aiohttp, used as its documentation says.

One ``ClientSession`` for the process, made in the running loop at the first request, whose ``TCPConnector``
keeps connections alive (15 s, as ssegate's own pool) with no cap unless ``limit`` is given. A request is a task
(``session.request``), so that ``abort()`` can cancel it while its head is awaited. ``stream(on_body)`` starts a
task that iterates ``response.content.iter_any()`` and hands each piece to ``on_body``: aiohttp's parser feeds
the response's ``StreamReader`` in the connection's read callback, and the task wakes on the next loop pass.

A response is read to its end before ``release()`` gives its connection back to the connector: after
``stop()`` (the provider saw ``[DONE]``) the reading task goes on, discarding, until the body's end (at most
``DRAIN_S``), and releases it then; a response closed before its end is ``close()``d (the connection with it).
``abort()`` shuts the socket down at once, then closes. aiohttp does not send a POST again on a kept-alive
connection that the server had closed meanwhile (ssegate's pool does, once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from ssegate.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout

from . import shutdown_fd

__all__ = ["Pool", "Response"]

KEEPALIVE_S = 15.0
DRAIN_S = 2.0
"""After ``stop()``, how long the rest of a body may take before the connection is given up instead."""


class Response:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._cr: aiohttp.ClientResponse | None = None
        self._task: asyncio.Task[aiohttp.ClientResponse] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._closed = False
        self._drain: asyncio.TimerHandle | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False

    def _attach(self, cr: aiohttp.ClientResponse) -> None:
        self._cr = cr
        self.status = cr.status
        headers = self.headers
        for name, value in cr.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value

    # --- what a provider calls ----------------------------------------------------------------------
    async def read(self, limit: int = 1 << 20) -> bytes:
        assert self._cr is not None
        content = self._cr.content
        parts: list[bytes] = []
        n = 0
        try:
            while n < limit:
                piece = await content.read(limit - n)
                if not piece:
                    self.complete = True
                    break
                parts.append(piece)
                n += len(piece)
        except (aiohttp.ClientError, OSError) as exc:
            if not parts:
                raise UpstreamError("the upstream closed the connection before the answer was complete") from exc
        return b"".join(parts)

    def stream(self, on_body: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self._sink = on_body
        self._done = loop.create_future()
        self._reader = loop.create_task(self._read_body())

    async def finished(self) -> None:
        if self._done is None:  # nothing streamed: wait for the end of the body
            await self.read(1 << 62)
            return
        await self._done

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True
        self._sink = None
        self._settle(None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink = None
        self._pool._busy -= 1
        cr = self._cr
        if cr is None:
            if self._task is not None:
                self._task.cancel()
            return
        if self.complete and self._error is None:
            cr.release()
            self._pool._live.discard(self)
        elif self._stopped and self._error is None and self._reader is not None and not self._reader.done():
            # the rest of the body (the end of the chunked encoding, usually) is on its way: read it, then release
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
        cr = self._cr
        conn = cr.connection if cr is not None else None
        transport = conn.transport if conn is not None else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            shutdown_fd(sock.fileno())
        self._fail(UpstreamError("the upstream request was aborted"))
        self.close()

    # --- the reading task ---------------------------------------------------------------------------
    async def _read_body(self) -> None:
        assert self._cr is not None
        cr = self._cr
        try:
            async for data in cr.content.iter_any():
                sink = self._sink
                if sink is None:
                    continue  # stopped: read the rest, for the connection's sake
                try:
                    sink(data)
                except BaseException as exc:  # the consumer's failure ends this response
                    self._fail(exc)
                    return
        except (aiohttp.ClientError, OSError) as exc:
            err = UpstreamError("the upstream closed the connection before the answer was complete")
            err.__cause__ = exc
            self._fail(err)
            return
        self.complete = True
        self._settle(None)
        if self._closed and self._error is None:  # closed while draining: the connection goes back now
            if self._drain is not None:
                self._drain.cancel()
                self._drain = None
            cr.release()
            self._pool._live.discard(self)

    def _give_up(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        if self._cr is not None:
            self._cr.close()
        self._pool._live.discard(self)

    def _settle(self, exc: BaseException | None) -> None:
        done = self._done
        if done is None or done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
            done.exception()  # retrieved: whoever waits sees it; nobody waiting is fine too

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = exc
        self._sink = None
        self._settle(exc)
        if self._cr is not None:
            self._cr.close()
        elif self._task is not None:
            self._task.cancel()


class Pool:
    def __init__(self, *, limit: int = 0, connect_timeout: float = 10.0, ssl_context: Any = None) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._busy = 0
        self._live: set[Response] = set()
        """Responses whose connection is not released yet (closed at ``aclose``)."""

    @property
    def active(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return 0

    @property
    def idle(self) -> int:
        connector = self._session.connector if self._session is not None else None
        conns = getattr(connector, "_conns", {})
        return sum(len(v) for v in conns.values())

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=0, keepalive_timeout=KEEPALIVE_S,
                                             **({"ssl": self._ssl} if self._ssl is not None else {}))
            timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                            sock_connect=self.connect_timeout)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)
        return self._session

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes = b"",
                      sent: Callable[[Response], None] | None = None) -> Response:
        session = self._open()
        resp = Response(self)

        async def send() -> aiohttp.ClientResponse:
            return await session.request(method, url, headers=headers, data=body or None, allow_redirects=False)

        resp._task = asyncio.get_running_loop().create_task(send())
        self._busy += 1
        if sent is not None:
            sent(resp)
        try:
            try:
                cr = await resp._task
            except asyncio.CancelledError:
                if resp._error is not None:  # aborted by the caller's ``sent`` hold, not cancelled
                    raise resp._error from None
                raise
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise UpstreamTimeout(f"connecting to the upstream at {url} timed out") from exc
            except aiohttp.ClientConnectorError as exc:
                raise UpstreamError(f"cannot connect to the upstream at {exc.host}:{exc.port}") from exc
            except aiohttp.ClientResponseError as exc:
                raise UpstreamProtocolError(f"the upstream sent a malformed HTTP response ({exc.message})") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamError("the upstream closed the connection before answering") from exc
        except BaseException:
            resp.close()
            raise
        resp._attach(cr)
        self._live.add(resp)
        if resp._error is not None:  # aborted just as the head arrived
            resp.close()
            raise resp._error
        return resp

    async def aclose(self) -> None:
        for resp in list(self._live):
            resp._give_up()
        if self._session is not None:
            await self._session.close()
            self._session = None
