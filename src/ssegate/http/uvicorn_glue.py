"""Everything that knows uvicorn's internals, in one module: nothing else imports uvicorn's private classes.

- ``BoundedRequestProtocol``: uvicorn's httptools protocol with the request head bounded in size and the request
  in time, a JSON body on the 400 it answers to unparseable HTTP, and a streaming response told of its client's
  disconnect inside ``eof_received``/``connection_lost`` (``DISCONNECT_HOOK``), not a task later; at a client's
  EOF its socket is closed a callback later, or in a storm of disconnects in turns (``core/turns.py``), after
  the upstreams of the disconnects read so far were told.
- ``direct_transport``: the client's transport when a body chunk may be written to it directly (uvicorn's
  httptools protocol, chunked framing, not HEAD, still open), for the streaming fast path of ``response.py``.
- ``write_start``: the response start and the first body chunk in one write (and the end of the body too, when
  it is the last), where uvicorn's ``send`` would make two or three: one packet for a stream's head and first
  event, and one system call less per stream.
- ``drop_if_unread``: abort a connection whose client stopped reading a response that was written in one go.
- ``ReloadingMultiprocess``: uvicorn's worker supervisor, except that ``SIGHUP`` is forwarded to every worker
  (each reloads its routing file, running streams untouched) instead of replacing the workers, which would end
  their running streams after the shutdown grace. Without a routing file it keeps uvicorn's behaviour.

Every function here degrades to "not available" (None, False) under another server, so the responses fall
back to the plain ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from typing import Any, Final

from starlette.types import Send
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.supervisors import Multiprocess

from ..core.turns import on_loop
from ..errors import InvalidRequest
from ..settings import Settings
from ..sse import dumps

__all__ = [
    "DISCONNECT_HOOK",
    "BoundedRequestProtocol",
    "ReloadingMultiprocess",
    "direct_transport",
    "drop_if_unread",
    "head_limit",
    "set_disconnect_hook",
    "write_start",
]

DISCONNECT_HOOK: Final = "ssegate_on_disconnect"
"""Attribute a response sets on the server's request cycle (``send.__self__``): ``ssegate serve``'s protocol
calls it from ``connection_lost``, so a vanished client stops its generation in that very callback, before
any task runs (the watcher task covers other servers)."""


class ReloadingMultiprocess(Multiprocess):
    """``--workers N``: SIGHUP goes to each worker, which reloads its routing file (``routing/router.py``).

    A worker still starting (before its gateway handles SIGHUP) dies of the signal and the supervisor starts a
    new one, which reads the new file."""

    def handle_hup(self) -> None:
        if not os.environ.get("SSEGATE_CONFIG"):
            super().handle_hup()
            return
        logging.getLogger("ssegate.serve").info("SIGHUP: forwarded to the workers (they reload the routing file)")
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:  # pragma: no cover - it just exited; the supervisor replaces it
                    pass


def head_limit(settings: Settings) -> int:
    """Bytes of a request head (request line and headers) read before it is refused with 431: ``MAX_QUERY_BYTES``
    (long prompts belong in a POST body, bounded by ``MAX_BODY_BYTES``)."""
    return settings.max_query_bytes


@functools.cache
def _limits() -> tuple[float, int, bytes]:
    """The read timeout, the head limit and the 431 answer, from this process's settings (every worker process
    imports this module afresh and reads the same environment)."""
    settings = Settings()
    limit = head_limit(settings)
    body = dumps(InvalidRequest(
        f"the request line and headers are over {limit} bytes (SSEGATE_MAX_QUERY_BYTES): "
        "send long prompts in the body of POST /v1/chat/stream").body())
    refusal = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
    return settings.request_read_timeout_s, limit, refusal


def _local_address(info: Any) -> tuple[str, int | None] | None:
    """The server's address as uvicorn's ``get_local_addr`` gives it: (host, port), or (path, None) on a Unix socket."""
    if isinstance(info, tuple | list) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None


def _peer_address(info: Any) -> tuple[str, int] | None:
    """The client's address as uvicorn's ``get_remote_addr`` gives it: (host, port), None on a Unix socket."""
    address = _local_address(info)
    return (address[0], address[1]) if address is not None and address[1] is not None else None


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request whose head is over the limit."""


class BoundedRequestProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded in size, and the request in time.

    Plain uvicorn buffers a request line or headers of any size (one 200 MB header costs 200 MB of RSS, kept
    after) and waits forever for a request that never completes (slowloris). Here a head still incomplete after
    ``head_limit()`` bytes gets ``431`` and the connection is closed (so a head costs at most that plus one socket
    read); so does a complete head (request line and headers) over the limit that arrived in one read, before
    the app sees it. A connection whose request (head and body) is not complete ``REQUEST_READ_TIMEOUT_S`` after it
    opened (or after the request began, on a kept-alive connection) is closed. A streaming response learns of
    its client's disconnect inside ``connection_lost`` (``DISCONNECT_HOOK``), not a task later. A request that
    does not parse as HTTP gets a JSON error body (``invalid_request``) like every other error, not uvicorn's
    plain-text one."""

    _in_head = False
    _head_bytes = 0
    _head_refused = False
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn's, with the two addresses read from the transport, which keeps them: uvicorn's helpers ask
        # uvloop's socket wrapper, which makes a socket object and system calls for each, on every connection
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = _local_address(transport.get_extra_info("sockname"))
        self.client = _peer_address(transport.get_extra_info("peername"))
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        cycle = self.cycle
        super().connection_lost(exc)
        _client_gone(cycle)

    def eof_received(self) -> bool:  # type: ignore[override]
        # uvicorn closes the connection at the client's EOF, and the loop reports connection_lost a pass later,
        # behind whatever is queued (in a storm of disconnects: the unwinding of every stream cancelled so far)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # as connection_lost will say: the app's receive() gets http.disconnect
        _client_gone(cycle)
        super().eof_received()
        # uvicorn's close, made in turns: over loopback (a proxy in front) that system call also runs the client's
        # side of the teardown, and its connection_lost follows; in a storm of disconnects, each upstream would
        # otherwise be told only after the client sockets of all those read before it were closed
        on_loop("close", self.loop).add(self.transport.close)
        return True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:  # all of this chunk went into a head that is still incomplete
            self._head_bytes += len(data)
            _, limit, refusal = _limits()
            if self._head_bytes > limit and not self.transport.is_closing():
                self._in_head = False
                self.transport.write(refusal)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._arm_read_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > _limits()[1]:
            self._head_refused = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response, which answers 431
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm_read_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_refused:
            self.transport.write(_limits()[2])
            self.transport.close()
            return
        body = dumps(InvalidRequest(f"the request is not valid HTTP/1.1: {msg}").body())
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def _arm_read_timer(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(_limits()[0], self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def _client_gone(cycle: object) -> None:
    """A streaming response's client closed: stop its generation now (``DISCONNECT_HOOK``)."""
    hook = getattr(cycle, DISCONNECT_HOOK, None)
    if hook is not None:
        hook()



def drop_if_unread(send: Send, timeout: float) -> None:
    """After a response's last write, abort the connection if its client takes none of the bytes still queued
    for it for ``timeout`` s (and again each ``timeout`` s while it takes some). uvicorn's ``send`` returns once
    bytes are queued, so a client that stopped reading a response written in one go (a whole ``chat.completion``,
    a final batch) would otherwise hold that memory and its socket for as long as it stays connected.
    ``send`` is the server's own (see ``standalone.expose_server``)."""
    cycle = server_cycle(send)
    transport = cycle.transport if cycle is not None else None
    if transport is None or transport.is_closing() or not transport.get_write_buffer_size():
        return
    loop = asyncio.get_running_loop()

    def check(queued: int) -> None:
        if transport.is_closing():
            return
        left = transport.get_write_buffer_size()
        if left >= queued:
            transport.abort()
        elif left:
            loop.call_later(timeout, check, left)

    loop.call_later(timeout, check, transport.get_write_buffer_size())


def server_cycle(send: Any) -> RequestResponseCycle | None:
    """uvicorn's request cycle when ``send`` is its own ``send`` (``ssegate serve``, nothing wrapped around it);
    None for anything else: another server, or a ``send`` an application's middleware wrapped."""
    cycle = getattr(send, "__self__", None)
    return cycle if isinstance(cycle, RequestResponseCycle) else None


def set_disconnect_hook(send: Any, hook: Any) -> bool:
    """Set (or clear, with None) ``DISCONNECT_HOOK`` on the request cycle behind ``send``; False where there is
    none, or its protocol is plain uvicorn's, which would never call it (the response then learns of a disconnect
    from ``receive()``)."""
    cycle = server_cycle(send)
    if cycle is None or not isinstance(getattr(cycle.on_response, "__self__", None), BoundedRequestProtocol):
        return False
    setattr(cycle, DISCONNECT_HOOK, hook)
    return True


def abort_connection(send: Any) -> bool:
    """Tear down the connection behind ``send`` now (a client that stopped reading); False where it cannot."""
    cycle = server_cycle(send)
    if cycle is None:
        return False
    cycle.transport.abort()
    return True


def direct_transport(send: Send) -> asyncio.WriteTransport | None:
    """The client's transport when body chunks may bypass the server's ``send``: uvicorn's httptools
    protocol, a response it frames with chunked encoding, not a HEAD request, still open. ``send`` would then
    do exactly this (frame the chunk, write it); anything else (another server or protocol, a HEAD, a closed
    connection) gets None and every body message goes through ``send``."""
    cycle = server_cycle(send)
    if (cycle is None or cycle.chunked_encoding is not True or cycle.scope.get("method") == "HEAD"
            or cycle.response_complete or cycle.transport.is_closing()):
        return None
    return cycle.transport


NAME_REFUSED: Final = bytes(range(0x20)) + b"\x7f()<>@,;:[]={} \t\\\""
"""The bytes uvicorn refuses in a header name (``HEADER_RE``)."""
VALUE_REFUSED: Final = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
"""The bytes uvicorn refuses in a header value (``HEADER_VALUE_RE``)."""


def header_bytes_ok(names: bytes, values: bytes) -> bool:
    """No name or value byte that uvicorn's ``send`` refuses: what its two patterns find, as a deletion that
    changes the length (``bytes.translate``: a tenth of the pattern search's instructions, ~12k a stream)."""
    return (len(names.translate(None, NAME_REFUSED)) == len(names)
            and len(values.translate(None, VALUE_REFUSED)) == len(values))


def write_start(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more_body: bool) -> bool:
    """Send ``http.response.start`` and one ``http.response.body`` as uvicorn's own ``send`` would (the same bytes,
    the same state of its request cycle), in one write to the transport. False, with nothing sent, where
    ``send`` is not uvicorn's or would not write right away (paused for a slow client, gone, a HEAD request, an
    access log to write, a response already started): the caller then uses ``send``."""
    cycle = server_cycle(send)
    if (cycle is None or cycle.response_started or cycle.disconnected or cycle.flow.write_paused
            or cycle.access_log or cycle.scope.get("method") == "HEAD" or cycle.chunked_encoding is not None):
        return False
    every = (*cycle.default_headers, *headers)
    # uvicorn's checks of each name and value, over all of them joined ("-" and tab are allowed where they join)
    if not header_bytes_ok(b"-".join(n for n, _ in every), b"\t".join(v for _, v in every)):
        return False  # uvicorn's send raises for it: let it
    content = [STATUS_LINE[status]]
    for name, value in every:
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding", b"connection"):
            return False  # framing chosen by the caller: uvicorn's send handles it
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content.append(b"transfer-encoding: chunked\r\n\r\n")
    if body:
        content += (b"%x\r\n" % len(body), body, b"\r\n")
    if not more_body:
        content.append(b"0\r\n\r\n")
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = True
    cycle.expected_content_length = 0
    cycle.transport.write(b"".join(content))
    if not more_body:
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
    return True
