"""``ssegate serve``'s event loop: uvloop, whose server also accepts the connections that wait behind the one
it accepted.

libuv (1.45 and later, under uvloop) accepts one connection per turn of the event loop and counts on the
listening socket staying readable for the next. A turn of a busy gateway relays hundreds of tokens and lasts
tens of milliseconds, so connections that arrive together wait in the kernel's queue for one turn each:
measured with 1000 streams opened over one second at 40 tokens/s, the gateway accepted ~30 connections a
second and half the clients had no answer seconds later, with the CPU half idle.

So the server's protocol factory, which uvloop calls for each connection it accepts, asks the kernel how many
more are waiting (``TCP_INFO`` of a listening socket: one system call, no accept that fails); when some are,
they are accepted later in the same turn and handed to the loop (``connect_accepted_socket``: the same
transport, with ``TCP_NODELAY``, as uvloop's own server makes; ~10 µs more per connection than uvloop's
accept). A connection that arrives alone costs that one
``getsockopt``; a burst is accepted in one turn instead of one turn each. (Accepted with ``socket._accept`` into a
socket whose family and type read as numbers, which uvloop compares: ``socket.socket`` makes an enum of each in
Python, at each of uvloop's three reads; uvicorn's protocol factory is given the loop.) When accepting fails (out of
descriptors or memory), the rest waits for uvloop's own accept, which handles it.

``AcceptingLoop.create_server`` does this for a server on a bound socket without TLS, on Linux (what ``ssegate
serve`` gives uvicorn, one worker or several); anything else is uvloop's server as it is. ``new_event_loop`` is
the loop factory uvicorn is given (``ssegate serve`` only: an app mounted elsewhere runs on its server's loop).
"""

from __future__ import annotations

import _socket
import asyncio
import functools
import inspect
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvloop

__all__ = ["AcceptingLoop", "new_event_loop", "waiting"]

logger = logging.getLogger("ssegate.serve")

_TCP_INFO = getattr(socket, "TCP_INFO", None)


def waiting(sock: socket.socket) -> int:
    """How many connections wait in a listening socket's queue (Linux: ``tcpi_unacked`` of a listener)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 32)  # type: ignore[arg-type]
    return int.from_bytes(info[24:28], sys.byteorder)


class _Drain:
    """The protocol factory of one server, which also accepts what waits behind each connection uvloop accepts."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[..., asyncio.Protocol],
    ) -> None:
        self._loop = loop
        self._sock = sock
        # uvicorn's factory takes the loop (its protocol otherwise asks asyncio for it: a getpid on Python 3.11)
        self._factory: Callable[[], asyncio.Protocol] = (
            functools.partial(factory, _loop=loop) if _takes_loop(factory) else factory)
        self._kind = (int(sock.family), int(sock.type), sock.proto)
        self._scheduled = False
        self.server: asyncio.AbstractServer | None = None

    def protocol(self) -> asyncio.Protocol:
        if not self._scheduled and waiting(self._sock):
            self._scheduled = True
            self._loop.call_soon(self._accept)
        return self._factory()

    def _accept(self) -> None:
        self._scheduled = False
        server, sock, loop = self.server, self._sock, self._loop
        if server is None or not server.is_serving():
            return
        family, kind, proto = self._kind
        for _ in range(waiting(sock)):
            try:
                fd, _ = sock._accept()  # type: ignore[attr-defined]  # (what accept() does, less its two enum lookups)
                conn = _Accepted(family, kind, proto, fd)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # reset while it waited
                continue
            except OSError as exc:  # out of descriptors or memory: uvloop's own accept deals with it
                logger.error("cannot accept connections: %s", exc.strerror or exc)
                return
            _step(loop.connect_accepted_socket(self._factory, conn))


def _takes_loop(factory: Callable[..., asyncio.Protocol]) -> bool:
    try:
        return "_loop" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature to read
        return False


class _Accepted(socket.socket):
    """A connection accepted here: its family and type read as the kernel's numbers, which uvloop compares
    (``socket.socket`` makes an enum of each in Python, at every read)."""

    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


def _step(coro: Any, _: object = None) -> None:
    """Run ``connect_accepted_socket`` to its end: its one wait is for its transport's ``connection_made``, which
    resumes it (a task for it would cost a third of the connection's set-up again)."""
    try:
        waiter = coro.send(None)
    except StopIteration:
        return
    except Exception as exc:  # the client left at once
        logger.debug("an accepted connection failed before it started: %s", exc)
        return
    waiter.add_done_callback(functools.partial(_step, coro))


class AcceptingLoop(uvloop.Loop):
    """uvloop, whose servers on a bound socket without TLS accept every waiting connection in one turn."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.Protocol], host: Any = None, port: Any = None, *,
        sock: socket.socket | None = None, ssl: Any = None, **kwargs: Any,
    ) -> asyncio.AbstractServer:
        drain = None
        if sock is not None and host is None and port is None and ssl is None and _TCP_INFO is not None \
                and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setblocking(False)
            drain = _Drain(self, sock, protocol_factory)
            protocol_factory = drain.protocol
        server: asyncio.AbstractServer = await super().create_server(
            protocol_factory, host, port, sock=sock, ssl=ssl, **kwargs)
        if drain is not None:
            drain.server = server
        return server


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop factory for uvicorn (``Config(loop="ssegate.http.listener:new_event_loop")``)."""
    return AcceptingLoop()
