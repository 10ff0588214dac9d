"""``ssegate serve``'s event loop: uvloop, whose server also accepts the connections that wait behind the one
it accepted.

libuv (1.45 and later, under uvloop) accepts one connection per turn of the event loop and counts on the
listening socket staying readable for the next. A turn of a busy gateway relays hundreds of tokens and lasts
tens of milliseconds, so connections that arrive together wait in the kernel's queue for one turn each:
measured with 1000 streams opened over one second at 40 tokens/s, the gateway accepted ~30 connections a
second and half the clients had no answer seconds later, with the CPU half idle.

So the server's protocol factory (``backlog.Backlog``, compiled), which uvloop calls for each connection it accepts,
asks the kernel how many more are waiting (``TCP_INFO`` of a listening socket: one system call, no accept that
fails); when some are, they are accepted later in the same turn and handed to the loop (``connect_accepted_socket``:
the same transport, with ``TCP_NODELAY``, as uvloop's own server makes). A connection that arrives alone costs that
one ``getsockopt``; a burst is accepted in one turn instead of one turn each, at ~13k instructions a connection more
than uvloop's own accept (the coroutine, future and socket object of ``connect_accepted_socket``; ``python -m
bench.callgrind``, ten clients at a time: 34k against 21k). When accepting fails (out of descriptors or memory), the
rest waits for uvloop's own accept, which handles it. The protocols are made by ``uvicorn_glue.protocol_factory``
(``ssegate serve``'s: what uvicorn's ``create_protocol`` makes, compiled) or else by uvicorn's factory, given the
loop.

``AcceptingLoop.create_server`` does this for a server on a bound socket without TLS, on Linux (what ``ssegate
serve`` gives uvicorn, one worker or several); anything else is uvloop's server as it is. ``new_event_loop`` is
the loop factory uvicorn is given (``ssegate serve`` only: an app mounted elsewhere runs on its server's loop).
"""

from __future__ import annotations

import _socket
import asyncio
import functools
import inspect
import socket
from collections.abc import Callable
from typing import Any, cast

import uvloop

from .backlog import TCP_INFO, Backlog, waiting
from .uvicorn_glue import protocol_factory as protocol_factory_of

__all__ = ["AcceptingLoop", "new_event_loop", "waiting"]


def _takes_loop(factory: Callable[..., asyncio.Protocol]) -> bool:
    try:
        return "_loop" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a callable without a signature to read
        return False


class Accepted(socket.socket):
    """A connection accepted by ``Backlog``: its family and type read as the kernel's numbers, which uvloop compares
    (``socket.socket`` makes an enum of each in Python, at every read); ``detach`` (uvloop's, when it closes the
    transport) is ``_socket.socket``'s, without ``socket.socket``'s interpreted frame that also marks it closed."""

    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]
    detach = _socket.socket.detach


class AcceptingLoop(uvloop.Loop):
    """uvloop, whose servers on a bound socket without TLS accept every waiting connection in one turn."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.Protocol], host: Any = None, port: Any = None, *,
        sock: socket.socket | None = None, ssl: Any = None, **kwargs: Any,
    ) -> asyncio.AbstractServer:
        backlog = None
        if sock is not None and host is None and port is None and ssl is None and TCP_INFO >= 0 \
                and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setblocking(False)
            # uvicorn's factory takes the loop (its protocol otherwise asks asyncio for it: a getpid on Python 3.11);
            # ssegate serve's (BoundedRequestProtocol) is made by a compiled factory of the same arguments
            factory = protocol_factory_of(protocol_factory, self) or (
                functools.partial(cast(Any, protocol_factory), _loop=self) if _takes_loop(protocol_factory)
                else protocol_factory)
            backlog = Backlog(self, sock, factory, Accepted)
            protocol_factory = backlog.protocol
        server: asyncio.AbstractServer = await super().create_server(
            protocol_factory, host, port, sock=sock, ssl=ssl, **kwargs)
        if backlog is not None:
            backlog.server = server
        return server


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop factory for uvicorn (``Config(loop="ssegate.http.listener:new_event_loop")``)."""
    return AcceptingLoop()
