"""The connections waiting in a listening socket's queue: counted (``waiting``) and accepted in the turn of the
loop that found them (``Backlog``). The per-connection part of ``listener.py`` (whose loop class, a subclass of
uvloop's, cannot be compiled), compiled (``make compile``): ~2k instructions a short stream fewer than interpreted
(``python -m bench.callgrind``, ten clients at a time, most of them accepted here: 450k → 448k).

``Backlog.protocol`` is the server's protocol factory: for each connection uvloop accepts it asks the kernel how
many more wait (``TCP_INFO`` of a listening socket), and when some do, ``Backlog._accept`` runs a callback later:
it accepts each (``socket._accept``: the descriptor and the client's address, without the two enum lookups of
``accept``) into a ``listener.Accepted`` made without ``socket.socket.__init__``'s interpreted frame, and hands it to
the loop (``connect_accepted_socket``, run to its end by ``_Connecting`` instead of a task: its one wait is for its
transport's ``connection_made``). When accepting fails (out of descriptors or memory), the rest waits for uvloop's
own accept, which handles it.

``ssegate serve``'s protocol (``uvicorn_glue.BoundedRequestProtocol``) is given the addresses such an accept knows:
the client's, which the accept returned, and the server's, where the listener is bound to one address (on a wildcard,
each connection has its own, which its protocol asks the transport for). Asked of the transport, each is made anew
from the socket address uvloop read (``inet_ntop``, a string and a tuple): ~7k instructions a connection fewer
(``python -m bench.callgrind``).
"""

from __future__ import annotations

import _socket
import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any, Final

from .uvicorn_glue import BoundedRequestProtocol

__all__ = ["Backlog", "waiting"]

logger: Final = logging.getLogger("ssegate.serve")

TCP_INFO: Final[int] = getattr(socket, "TCP_INFO", -1)
"""``socket.TCP_INFO`` (Linux), -1 where there is none (``listener.py`` then leaves uvloop's server as it is)."""
_TCP: Final = int(socket.IPPROTO_TCP)
_init_socket: Final = _socket.socket.__init__
_BYTEORDER: Final = sys.byteorder
_DONE: Final = object()
"""What ``_Connecting.step`` gets from a coroutine that returned."""


def _bound(sock: socket.socket) -> tuple[str, int] | None:
    """A listener's (host, port), None when it listens on every address (a connection's own is then its to tell)."""
    address = sock.getsockname()
    if not isinstance(address, tuple) or address[0] in ("0.0.0.0", "::", ""):
        return None
    return (str(address[0]), int(address[1]))


def waiting(sock: socket.socket) -> int:
    """How many connections wait in a listening socket's queue (Linux: ``tcpi_unacked`` of a listener)."""
    info: bytes = sock.getsockopt(_TCP, TCP_INFO, 32)
    return int.from_bytes(info[24:28], _BYTEORDER)


class _Connecting:
    """``connect_accepted_socket`` run to its end without a task (one would cost a third of the connection's
    set-up again): its one wait is for its transport's ``connection_made``, which resumes it. Stepped by ``next``
    with a default on its ``__await__`` iterator, not by ``send``: the end is then no ``StopIteration`` caught in
    compiled code, whose traceback entry and exception state cost ~3k instructions a connection."""

    def __init__(self, coro: Any) -> None:
        self.steps: Any = coro.__await__()

    def step(self, _: object = None) -> None:
        try:
            waiter: Any = next(self.steps, _DONE)
        except Exception as exc:  # the client left at once
            logger.debug("an accepted connection failed before it started: %s", exc)
            return
        if waiter is not _DONE:
            waiter.add_done_callback(self.step)


class Backlog:
    """The protocol factory of one server, which also accepts what waits behind each connection uvloop accepts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.Protocol], accepted: type[socket.socket]) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._accepted = accepted
        """``listener.Accepted``: a socket whose family and type read as the kernel's numbers."""
        self._family = int(sock.family)
        self._kind = int(sock.type)
        self._proto = sock.proto
        self._scheduled = False
        self.server: asyncio.AbstractServer | None = None
        self._address = _bound(sock)
        """The listener's (host, port) when it is bound to one address: every connection's own address."""
        self._peer: tuple[str, int] | None = None
        """The client address of the connection being handed to the loop (for ``_made``)."""

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
        accept: Callable[[], tuple[int, Any]] = sock._accept  # type: ignore[attr-defined]
        made = self._made
        for _ in range(waiting(sock)):
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # reset while it waited
                continue
            except OSError as exc:  # out of descriptors or memory: uvloop's own accept deals with it
                logger.error("cannot accept connections: %s", exc.strerror or exc)
                return
            conn = self._accepted.__new__(self._accepted)
            _init_socket(conn, self._family, self._kind, self._proto, fd)  # (socket.socket.__init__'s two lines)
            conn._io_refs = 0  # type: ignore[attr-defined]
            conn._closed = False  # type: ignore[attr-defined]
            self._peer = (peer[0], peer[1])
            try:  # (the loop makes the protocol in this first step: ``_made``)
                _Connecting(loop.connect_accepted_socket(made, conn)).step()
            finally:
                self._peer = None

    def _made(self) -> asyncio.Protocol:
        """The protocol of a connection accepted here, given the addresses its accept returned (``ssegate serve``'s
        protocol takes them instead of asking its transport)."""
        protocol = self._factory()
        peer = self._peer
        if peer is not None and isinstance(protocol, BoundedRequestProtocol):
            protocol.given(self._address, peer)
        return protocol
