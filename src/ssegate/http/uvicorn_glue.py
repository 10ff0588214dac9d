"""Everything that knows uvicorn's internals, in one module: nothing else imports uvicorn's private classes.

- ``BoundedRequestProtocol``: uvicorn's httptools protocol with the request head bounded in size and the request
  in time, a JSON body on the 400 it answers to unparseable HTTP, and a streaming response told of its client's
  disconnect inside ``eof_received``/``connection_lost`` (``set_disconnect_hook``), not a task later; at a client's
  EOF its socket is closed a callback later, or in a storm of disconnects in turns (``core/turns.py``), after
  the upstreams of the disconnects read so far were told. What it runs for every connection and request is
  uvicorn's code written here again and compiled (this module is), as classes of their own (attributes in
  fixed slots, not a dict per object as in a subclass of uvicorn's classes): its constructor, the parser's
  callbacks, its request cycle (``_Cycle``: the coroutine every step of a request's task resumes through,
  ``receive``, and ``send`` of a body chunk, with ``asyncio.Event``'s part compiled as ``_Signal``) and flow
  control (``_Flow``); uvicorn's own functions run the rest on them (upgrades, the graceful shutdown, the
  keep-alive expiry, the access log, a response start through ``send``). What it reads from uvicorn's ``Config``
  is read once per server (``_Shared``), and uvicorn's proxy-headers middleware runs only for a request it
  changes (forwarded headers from a trusted client). With the listener's accepts
  (``listener.py``): 749k → 689k instructions a short stream (``python -m bench.callgrind``); classes of their
  own, ~50k fewer. ``tests/test_relay.py`` checks the copies have the attributes and methods uvicorn's have, and
  that uvicorn's code still runs on them.
- ``direct_transport``: the client's transport when a body chunk may be written to it directly (uvicorn's
  httptools protocol, chunked framing, not HEAD, still open), for the streaming fast path of ``response.py``.
- ``write_start``: the response start and the first body chunk in one write (and the end of the body too, when
  it is the last), where uvicorn's ``send`` would make two or three: one packet for a stream's head and first
  event, and one system call less per stream. In two steps (``start_head``, then ``send_start``) for a caller
  that must know the start will go out before it makes the body (``response.py``'s commit from a callback of
  the append).
- ``drop_if_unread``: abort a connection whose client stopped reading a response that was written in one go.
- ``whole_body``: a request's body taken from ssegate serve's cycle when it all arrived with the head (the direct
  routes' small JSON bodies), without the coroutine and message of a ``receive``.
- ``ReloadingMultiprocess``: uvicorn's worker supervisor, except that ``SIGHUP`` is forwarded to every worker
  (each reloads its routing file, running streams untouched) instead of replacing the workers, which would end
  their running streams after the shutdown grace. Without a routing file it keeps uvicorn's behaviour.

Every function here degrades to "not available" (None, False) under another server, so the responses fall
back to the plain ASGI ``send``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import signal
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

import httptools
from starlette.types import Send
from uvicorn.config import Config
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import Server, ServerState
from uvicorn.supervisors import Multiprocess

from ..core.deadline import Sweep
from ..core.tasks import start as start_task
from ..core.turns import on_loop
from ..errors import InvalidRequest
from ..settings import Settings
from ..sse import dumps

__all__ = [
    "PROTOCOL",
    "BoundedRequestProtocol",
    "ReloadingMultiprocess",
    "chunk",
    "direct_transport",
    "drop_if_unread",
    "fixed_headers",
    "head_limit",
    "protocol_factory",
    "send_start",
    "set_disconnect_hook",
    "start_head",
    "whole_body",
    "write_start",
]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_Parser: Final = httptools.HttpRequestParser
_parse_url: Final = httptools.parse_url
REQUEST_TASK: Final = "ssegate-request"
"""The name of each request's task (its ASGI cycle); a generation's is ``ssegate-gen-<stream id>``."""

StartHead = tuple[Any, list[bytes]]
"""A response's head as ``start_head`` made it (the request cycle, the bytes so far), for ``send_start``."""

_UVICORN_PROTOCOL: Final[Any] = HttpToolsProtocol
"""uvicorn's protocol class, for the methods of its that run on ours (upgrades, shutdown, keep-alive expiry)."""
_UVICORN_CYCLE: Final[Any] = RequestResponseCycle
"""uvicorn's request cycle class, for the ``send`` of its that runs on ours (a response start, ...)."""


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
    if isinstance(info, (tuple, list)) and len(info) >= 2:  # (compiled, ``tuple | list`` makes a union each call)
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None


def _peer_address(info: Any) -> tuple[str, int] | None:
    """The client's address as uvicorn's ``get_remote_addr`` gives it: (host, port), None on a Unix socket."""
    address = _local_address(info)
    return (address[0], address[1]) if address is not None and address[1] is not None else None


class _Flow:
    """uvicorn's flow control (``FlowControl``: what its request cycle calls), compiled, with its event made at the
    first pause of writing (most connections never pause: uvicorn makes and sets one for each)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        """None until ``attach`` (a protocol's flow control is made before its connection)."""
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Event | None = None

    def attach(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    async def drain(self) -> None:
        writable = self._writable
        if writable is not None:
            await writable.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            if self._writable is None:
                self._writable = asyncio.Event()
            else:
                self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._writable is not None:
                self._writable.set()


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request whose head is over the limit."""


class BoundedRequestProtocol:
    """uvicorn's httptools protocol with the request head bounded in size, and the request in time.

    Plain uvicorn buffers a request line or headers of any size (one 200 MB header costs 200 MB of RSS, kept
    after) and waits forever for a request that never completes (slowloris). Here a head still incomplete after
    ``head_limit()`` bytes gets ``431`` and the connection is closed (so a head costs at most that plus one socket
    read); so does a complete head (request line and headers) over the limit that arrived in one read, before
    the app sees it. A connection whose request (head and body) is not complete ``REQUEST_READ_TIMEOUT_S`` after it
    opened (or after the request began, on a kept-alive connection) is closed. The server's connections share one
    timer for that, and one for uvicorn's keep-alive timeout (``_Sweeps``; a timer per connection and request,
    made and cancelled within the milliseconds a request takes to arrive or a client to leave, cost ~4k
    instructions each, 0.7% of a short stream's). A streaming response learns of
    its client's disconnect inside ``connection_lost`` (``set_disconnect_hook``), not a task later. A request that
    does not parse as HTTP gets a JSON error body (``invalid_request``) like every other error, not uvicorn's
    plain-text one.

    A class of its own, not a subclass of uvicorn's ``HttpToolsProtocol`` (nor ``_Cycle`` of its
    ``RequestResponseCycle``, nor ``_Flow`` of its ``FlowControl``): compiled classes with their attributes in
    fixed slots, where a subclass of uvicorn's keeps them in a dict of each object (~60k instructions a short
    stream went to those lookups, 10%). uvicorn's own code that runs on them (upgrades, the graceful shutdown, the
    keep-alive expiry, a response start through ``send``) reads and writes the same attributes by name."""

    url = b""
    _in_head = False
    _head_bytes = 0
    _head_refused = False
    _reading = False
    _keeping = False
    _forwarded = False
    """The request so far has an ``X-Forwarded-For`` or ``X-Forwarded-Proto`` header."""
    _proxy_trusted: bool | None = None
    """Whether uvicorn's proxy-headers middleware trusts this connection's client (asked once, when a request
    first has those headers)."""
    _sweeps: _Sweeps | None = None
    timeout_keep_alive_task: asyncio.TimerHandle | None = None
    """uvicorn's keep-alive timer: always None here (the keep-alive is on the server's sweep)."""

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's, compiled, with what it reads from the config for every connection read once per server
        # (``_Shared``)
        shared: _Shared | None = getattr(config, "ssegate_shared", None)
        if shared is None:
            shared = _shared_of(config)
        self.shared = shared
        self.config = config
        self.app: Any = shared.app
        self.loop: asyncio.AbstractEventLoop = _loop or asyncio.get_event_loop()
        self.logger = shared.logger
        self.access_logger = shared.access_logger
        self.access_log = shared.access_log
        parser = _Parser(self)
        if shared.lenient:
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.parser: Any = parser
        """None once the connection is lost (as uvicorn's)."""
        self.ws_protocol_class: Any = shared.ws_protocol_class
        self.root_path: str = shared.root_path
        self.asgi_version: str = shared.asgi_version
        self.limit_concurrency: int | None = shared.limit_concurrency
        self.app_state = app_state
        self.timeout_keep_alive = shared.timeout_keep_alive
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.transport: Any = None
        """The connection's transport (from ``connection_made``)."""
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme: str | None = None
        self.pipeline: deque[tuple[_Cycle, Any]] = deque()
        self.scope: dict[str, Any] = {}
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100_continue = False
        self.cycle: _Cycle | None = None
        self.flow = _Flow(None)
        """The connection's flow control (its transport set by ``connection_made``)."""

    def given(self, server: tuple[str, int] | None, client: tuple[str, int]) -> None:
        """The addresses the listener's accept already knows (``backlog.Backlog``): the client's, and the server's
        where the listener is bound to one address (None on a wildcard: ``connection_made`` asks the transport)."""
        self.server = server
        self.client = client

    def connection_made(self, transport: asyncio.Transport) -> None:
        # uvicorn's, with the two addresses read from the transport, which keeps them: uvicorn's helpers ask
        # uvloop's socket wrapper, which makes a socket object and system calls for each, on every connection;
        # a connection the listener accepted itself came with them (``given``)
        self.connections.add(self)
        self.transport = transport
        self.flow.attach(transport)
        if self.client is None:
            self.client = _peer_address(transport.get_extra_info("peername"))
            self.server = _local_address(transport.get_extra_info("sockname"))
        elif self.server is None:
            self.server = _local_address(transport.get_extra_info("sockname"))
        self.scheme = "https" if self.shared.tls and transport.get_extra_info("sslcontext") else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        # uvicorn's, then the streaming response told (its disconnect hook)
        self._disarm_read_timer()
        cycle = self.cycle
        self.connections.discard(self)
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection lost", prefix)
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        self._unset_keepalive_if_required()  # (uvicorn's left its timer armed after a reset: not on the sweep)
        self.parser = None
        _client_gone(cycle)

    def _unset_keepalive_if_required(self) -> None:
        if self._keeping:
            self._keeping = False
            assert self._sweeps is not None
            self._sweeps.keep_alive.discard(self)

    def eof_received(self) -> bool:
        # uvicorn closes the connection at the client's EOF, and the loop reports connection_lost a pass later,
        # behind whatever is queued (in a storm of disconnects: the unwinding of every stream cancelled so far)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # as connection_lost will say: the app's receive() gets http.disconnect
        _client_gone(cycle)
        # uvicorn's close, made in turns: over loopback (a proxy in front) that system call also runs the client's
        # side of the teardown, and its connection_lost follows; in a storm of disconnects, each upstream would
        # otherwise be told only after the client sockets of all those read before it were closed
        on_loop("close", self.loop).add(self.transport.close)
        return True

    def data_received(self, data: bytes) -> None:
        # uvicorn's, then the bound on a head still incomplete
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head:  # all of this chunk went into a head that is still incomplete
            self._head_bytes += len(data)
            _, limit, refusal = _limits()
            if self._head_bytes > limit and not self.transport.is_closing():
                self._in_head = False
                self.transport.write(refusal)
                self.transport.close()

    # --- the parser's callbacks: uvicorn's, compiled (httptools calls each of them for every request) ---------

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        headers: list[tuple[bytes, bytes]] = []
        self.headers = headers
        self.scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        self._in_head = True
        self._head_bytes = 0
        self._forwarded = False
        self._arm_read_timer()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if value and (value[-1] == 32 or value[-1] == 9):  # (a space or a tab at the end: rare, and a method call)
            value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which RFC 9110 5.5 excludes
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"x-forwarded-for" or name == b"x-forwarded-proto":
            self._forwarded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        url: bytes = self.url
        size = len(url)
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        if size > _limits()[1]:
            self._head_refused = True
            raise _HeadTooLarge  # stops the parser; data_received then calls send_400_response, which answers 431
        parser = self.parser
        scope = self.scope
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        raw_path: bytes
        query: bytes | None
        # "/..." without "?" or "#" (by byte value: a bytes operand of ``in`` is first tried as an int, a TypeError
        # made and dropped, ~2k instructions): the path itself, as parse_url reads it, without its object
        if url and url[0] == 47 and 63 not in url and 35 not in url:
            raw_path, query = url, None
        else:
            parsed_url: Any = _parse_url(url)  # (its stub says bytes for parts that may be None)
            raw_path, query = parsed_url.path, parsed_url.query  # (query: None without one)
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path: str = self.root_path
        scope["path"] = root_path + path if root_path else path
        scope["raw_path"] = root_path.encode("ascii") + raw_path if root_path else raw_path
        scope["query_string"] = query or b""
        app: Any = self.app if self._forwarded and self._trusts_proxy() else self.shared.unforwarded
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        cycle = _Cycle(
            scope, self.transport, self.flow, self.logger, self.access_logger, self.access_log,
            self.server_state.default_headers, self.expect_100_continue,
            http_version != "1.0" and parser.should_keep_alive(), self.on_response_complete, self.loop,
        )
        self.cycle = cycle
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # a pipelined request waits for the one before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _trusts_proxy(self) -> bool:
        """Whether uvicorn's proxy-headers middleware reads the forwarded headers of this connection's requests
        (it wraps the app, and trusts the client); once per connection."""
        trusted = self._proxy_trusted
        if trusted is None:
            hosts = self.shared.trusted_hosts
            client = self.client
            trusted = self._proxy_trusted = hosts is not None and (client[0] if client else None) in hosts
        return trusted

    def _start_asgi_task(self, cycle: _Cycle, app: Any) -> None:
        context = contextvars.Context() if self.shared.fresh_context else None
        task = start_task(self.loop, cycle.run_asgi(app), REQUEST_TASK, context)
        tasks = self.tasks
        task.add_done_callback(tasks.discard)
        tasks.add(task)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle  # (None, or the one before, for the body of an upgrade: on_headers_complete made none)
        if cycle is None or cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._disarm_read_timer()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        transport = self.transport
        if transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:  # (uvicorn's timer, on the server's sweep: timeout_keep_alive_task stays None)
            self._keeping = True
            self._sweeps_on().keep_alive.add(self, self.loop.time() + self.timeout_keep_alive)

    def send_400_response(self, msg: str) -> None:
        if self._head_refused:
            self.transport.write(_limits()[2])
            self.transport.close()
            return
        body = dumps(InvalidRequest(f"the request is not valid HTTP/1.1: {msg}").body())
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    # --- the rest of uvicorn's protocol, uvicorn's own functions run on this one (it reads and writes the same
    # attributes by name): upgrades (only for a request that asks for one), the server's graceful shutdown, the
    # keep-alive expiry; and the transport's flow-control callbacks, which go to this connection's ``_Flow``

    def _get_upgrade(self) -> bytes | None:
        upgrade: bytes | None = _UVICORN_PROTOCOL._get_upgrade(self)
        return upgrade

    def _should_upgrade_to_ws(self) -> bool:
        return bool(_UVICORN_PROTOCOL._should_upgrade_to_ws(self))

    def _should_upgrade(self) -> bool:
        return bool(_UVICORN_PROTOCOL._should_upgrade(self))

    def _unsupported_upgrade_warning(self) -> None:
        _UVICORN_PROTOCOL._unsupported_upgrade_warning(self)

    def handle_websocket_upgrade(self) -> None:
        _UVICORN_PROTOCOL.handle_websocket_upgrade(self)

    def shutdown(self) -> None:
        _UVICORN_PROTOCOL.shutdown(self)

    def timeout_keep_alive_handler(self) -> None:
        _UVICORN_PROTOCOL.timeout_keep_alive_handler(self)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def _sweeps_on(self) -> _Sweeps:
        sweeps = self._sweeps
        if sweeps is None:
            sweeps = self._sweeps = _sweeps_of(self.server_state, self.loop)
        return sweeps

    def _arm_read_timer(self) -> None:
        if not self._reading:
            self._reading = True
            self._sweeps_on().reads.add(self, self.loop.time() + _limits()[0])

    def _disarm_read_timer(self) -> None:
        if self._reading:
            self._reading = False
            assert self._sweeps is not None
            self._sweeps.reads.discard(self)

    def _read_timed_out(self) -> None:
        self._reading = False
        if not self.transport.is_closing():
            self.transport.close()

    def _keep_alive_timed_out(self) -> None:
        self._keeping = False
        self.timeout_keep_alive_handler()


PROTOCOL: Final[Any] = BoundedRequestProtocol
"""``BoundedRequestProtocol`` as ``uvicorn.Config(http=...)`` takes it (typed there as a subclass of
``asyncio.Protocol``, which a compiled class of its own is not; uvicorn and the loop only call its methods)."""


def _read_expired(protocol: BoundedRequestProtocol) -> None:
    protocol._read_timed_out()


def _keep_alive_expired(protocol: BoundedRequestProtocol) -> None:
    protocol._keep_alive_timed_out()


class _Shared:
    """What every connection of one server reads from its ``Config``, read once (uvicorn's protocol reads it again
    for each connection: attribute lookups on an interpreted object, a property, the access logger's handlers
    looked up through its parents). Kept on the config (``ssegate_shared``), made by the first connection.

    ``unforwarded`` is the app that uvicorn's ``ProxyHeadersMiddleware`` (``proxy_headers``, on by default) wraps:
    what that middleware calls, changing nothing, for a request without ``X-Forwarded-For`` or
    ``X-Forwarded-Proto`` or from a client it does not trust (``FORWARDED_ALLOW_IPS``); such a request goes to it
    directly, and the middleware (an interpreted coroutine and a pass over the headers, ~10k instructions a
    request, 2% of a short stream) runs only for a request it changes."""

    def __init__(self, config: Config) -> None:
        if not config.loaded:
            config.load()
        app: Any = config.loaded_app
        self.app: Final[Any] = app
        proxy = type(app) is ProxyHeadersMiddleware
        self.unforwarded: Final[Any] = app.app if proxy else app
        self.trusted_hosts: Final[Any] = app.trusted_hosts if proxy else None
        self.ws_protocol_class: Final[Any] = config.ws_protocol_class
        self.root_path: Final[str] = config.root_path
        self.asgi_version: Final[str] = config.asgi_version
        self.limit_concurrency: Final[int | None] = config.limit_concurrency
        self.timeout_keep_alive: Final[float] = float(config.timeout_keep_alive)
        self.logger: Final = logging.getLogger("uvicorn.error")
        self.access_logger: Final = logging.getLogger("uvicorn.access")
        self.access_log: Final[bool] = self.access_logger.hasHandlers()
        """uvicorn's test, made at a server's first connection rather than at each (logging is configured before
        a server starts)."""
        self.tls: Final[bool] = config.ssl is not None
        """The server was given TLS (``ssl`` of its ``create_server``): without it no connection is TLS, and the
        transport is not asked (uvicorn asks each for its ``sslcontext``)."""
        self.fresh_context: Final[bool] = bool(getattr(config, "reset_contextvars", False))
        """uvicorn's ``reset_contextvars`` (newer uvicorns): each request's task runs in a context of its own."""
        self.lenient: Final[bool] = hasattr(httptools.HttpRequestParser, "set_dangerous_leniencies")
        """httptools 0.6.3 and later: data after a ``Connection: close`` request is not an error (uvicorn's)."""


def _shared_of(config: Config) -> _Shared:
    shared = _Shared(config)
    setattr(config, "ssegate_shared", shared)  # noqa: B010 (an attribute uvicorn's class does not declare)
    return shared


class _Sweeps:
    """The deadlines of a server's connections, one timer for each kind (``core.deadline.Sweep``): the request's
    read (``REQUEST_READ_TIMEOUT_S``) and the keep-alive of an idle connection (uvicorn's ``timeout_keep_alive``).
    Kept on the server's ``ServerState`` (one per server, which runs on one loop), so they go with the server."""

    __slots__ = ("keep_alive", "reads")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.reads: Final[Sweep[BoundedRequestProtocol]] = Sweep(loop, _read_expired)
        self.keep_alive: Final[Sweep[BoundedRequestProtocol]] = Sweep(loop, _keep_alive_expired)


def _sweeps_of(state: ServerState, loop: asyncio.AbstractEventLoop) -> _Sweeps:
    sweeps: _Sweeps | None = getattr(state, "ssegate_sweeps", None)
    if sweeps is None:
        sweeps = _Sweeps(loop)
        setattr(state, "ssegate_sweeps", sweeps)  # noqa: B010 (an attribute uvicorn's class does not declare)
    return sweeps


class _Cycle:
    """uvicorn's request cycle, with what runs for every request compiled: the constructor, the coroutine that runs
    the app (every step of a request's task resumes through its frame), ``receive``, and ``send`` of a body
    chunk of a started chunked response; everything else is uvicorn's ``send`` (and its 500), which reads and
    writes this cycle's attributes by uvicorn's names. ``tests/test_relay.py`` checks that one has the attributes
    uvicorn's constructor gives it."""

    on_disconnect: Callable[[], None] | None = None
    """What a streaming response set (``set_disconnect_hook``) to be called when its client goes: from
    ``eof_received``/``connection_lost``, so a vanished client stops its generation in that very callback, before
    any task runs (the response's watcher task covers other servers)."""

    def __init__(
        self, scope: Any, transport: Any, flow: _Flow, logger: logging.Logger,
        access_logger: logging.Logger, access_log: bool, default_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool, keep_alive: bool, on_response: Callable[..., None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.logger = logger
        self.access_logger = access_logger
        self.access_log = access_log
        self.default_headers = default_headers
        self.message_event = _Signal(loop)
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0

    async def send_500_response(self) -> None:
        await _UVICORN_CYCLE.send_500_response(self)

    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_response = _nothing

    async def receive(self) -> Any:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            event = self.message_event
            await event.wait()
            event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message

    async def send(self, message: Any) -> None:
        if (not self.response_started or self.chunked_encoding is not True or self.response_complete
                or self.disconnected or self.flow.write_paused or message["type"] != "http.response.body"
                or self.scope["method"] == "HEAD"):
            await _UVICORN_CYCLE.send(self, message)
            return
        # a body chunk of a started chunked response, written now: what uvicorn's send does for it
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        if body:
            self.transport.write(chunk(body, last=not more_body))
        elif not more_body:
            self.transport.write(b"0\r\n\r\n")
        if not more_body:
            _complete_own(self)


class _Signal:
    """``asyncio.Event``'s ``set``, ``clear`` and ``wait`` (what uvicorn calls), compiled, as a request cycle's
    ``message_event`` (set at each piece of the body, at its end, at the response's end and at a disconnect;
    awaited by ``receive``). The same rules as asyncio's: ``set`` wakes every waiter and stays set until
    ``clear``; a waiter cancelled after it was woken takes nothing from the others. Told its loop, where asyncio's
    asks for the running loop (a system call on Python 3.11)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._value = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        if not self._value:
            self._value = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)


def _complete(cycle: Any) -> None:
    """A response's last bytes were written: what uvicorn's ``send`` does then (the connection closed unless kept
    alive, the protocol told, which reads the next request)."""
    if isinstance(cycle, _Cycle):
        _complete_own(cycle)
        return
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def _complete_own(cycle: _Cycle) -> None:
    """``_complete`` of ssegate serve's cycle, its attributes read as a compiled class's."""
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


def _nothing() -> None:
    """A finished cycle's ``on_response`` (uvicorn's ``lambda: None``)."""


def _client_gone(cycle: _Cycle | None) -> None:
    """A streaming response's client closed: stop its generation now (its disconnect hook)."""
    hook = cycle.on_disconnect if cycle is not None else None
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


def server_cycle(send: Any) -> Any:
    """The request cycle of uvicorn's httptools protocol or ours (``_Cycle``) when ``send`` is its own ``send``
    (nothing wrapped around it); None for anything else: another server, or a ``send`` an application's
    middleware wrapped. The two have the same attributes."""
    cycle = getattr(send, "__self__", None)
    return cycle if isinstance(cycle, (_Cycle, RequestResponseCycle)) else None


def whole_body(receive: Any) -> bytes | None:
    """The request's body, taken as ``receive`` would give it in one message, when ``receive`` is ssegate serve's
    request cycle's own and the body has all arrived (no ``100 Continue`` owed, the response not begun, the client
    still there); None for anything else (the caller awaits ``receive``). A streaming endpoint's small JSON body
    arrives with its head, so its handler reads it without the coroutine and the message a ``receive`` makes
    (~2.5k instructions a request)."""
    cycle = getattr(receive, "__self__", None)
    if type(cycle) is not _Cycle:
        return None
    if cycle.more_body or cycle.waiting_for_100_continue or cycle.disconnected or cycle.response_complete:
        return None
    cycle.flow.resume_reading()  # what receive does, for its one message
    cycle.message_event.clear()
    body = bytes(cycle.body)
    cycle.body = bytearray()
    return body


class _NewProtocol:
    """``BoundedRequestProtocol`` of a uvicorn server, made as its ``create_protocol`` makes it (the server's config,
    state and lifespan state, the loop), without that interpreted closure and its call by keywords."""

    __slots__ = ("_config", "_loop", "_server")

    def __init__(self, config: Config, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._server = server
        self._loop = loop

    def __call__(self) -> BoundedRequestProtocol:
        server = self._server
        return BoundedRequestProtocol(self._config, server.server_state, server.lifespan.state, self._loop)


def protocol_factory(factory: Any, loop: asyncio.AbstractEventLoop) -> Callable[[], Any] | None:
    """The protocol factory uvicorn gives ``create_server`` (``Server.startup``'s ``create_protocol``, a closure over
    its config and server), as a compiled one, when its protocol is ``BoundedRequestProtocol``; None for any other
    factory (the caller keeps it). ~6k instructions a connection (``python -m bench.callgrind``)."""
    code = getattr(factory, "__code__", None)
    cells = getattr(factory, "__closure__", None)
    # uvicorn's closure as this module knows it: ``create_protocol(_loop=None)`` over ``config`` and ``self``;
    # another shape (a uvicorn that passes more) keeps uvicorn's own factory
    if code is None or cells is None or code.co_name != "create_protocol" \
            or code.co_varnames[:code.co_argcount + code.co_kwonlyargcount] != ("_loop",) \
            or sorted(code.co_freevars) != ["config", "self"] or len(cells) != 2:
        return None
    names: tuple[str, ...] = code.co_freevars
    env = {name: cell.cell_contents for name, cell in zip(names, cells, strict=True)}
    config, server = env.get("config"), env.get("self")
    if not isinstance(config, Config) or not isinstance(server, Server) \
            or cast(object, config.http_protocol_class) is not BoundedRequestProtocol:
        return None
    return _NewProtocol(config, server, loop)


def set_disconnect_hook(send: Any, hook: Any) -> bool:
    """Set (or clear, with None) the disconnect hook of the request cycle behind ``send``; False where there is
    none, or its protocol is plain uvicorn's, which would never call it (the response then learns of a disconnect
    from ``receive()``). A ``_Cycle`` is ``BoundedRequestProtocol``'s."""
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, _Cycle):
        return False
    cycle.on_disconnect = hook
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
    transport: asyncio.WriteTransport = cycle.transport
    return transport


NAME_REFUSED: Final = bytes(range(0x20)) + b"\x7f()<>@,;:[]={} \t\\\""
"""The bytes uvicorn refuses in a header name (``HEADER_RE``)."""
VALUE_REFUSED: Final = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
"""The bytes uvicorn refuses in a header value (``HEADER_VALUE_RE``)."""


def _marking(refused: bytes) -> bytes:
    """A ``bytes.translate`` table: each refused byte to NUL (itself refused), any other byte to itself."""
    return bytes(0 if b in refused else b for b in range(256))


_NAME_MARKS: Final = _marking(NAME_REFUSED)
_VALUE_MARKS: Final = _marking(VALUE_REFUSED)


def header_bytes_ok(names: bytes, values: bytes) -> bool:
    """No name or value byte that uvicorn's ``send`` refuses: what its two patterns find, as a NUL after a
    translation that marks them (``bytes.translate`` with a table and no deletion, then a ``memchr``: a tenth of the
    pattern search's instructions, and ~2.5k a stream fewer than a deletion, which builds its table each call)."""
    return 0 not in names.translate(_NAME_MARKS) and 0 not in values.translate(_VALUE_MARKS)  # (a byte as an int:
    # ``bytes.__contains__`` of a bytes object first fails to read it as an int, an exception each call)


_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding", b"connection"))
"""Headers of a response's framing, which uvicorn's ``send`` writes itself when the caller gives none."""


def write_start(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more_body: bool) -> bool:
    """Send ``http.response.start`` and one ``http.response.body`` as uvicorn's own ``send`` would (the same bytes,
    the same state of its request cycle), in one write to the transport. False, with nothing sent, where
    ``send`` is not uvicorn's or would not write right away (see ``start_head``): the caller then uses ``send``."""
    head = start_head(send, status, headers)
    if head is None:
        return False
    send_start(head, body, more_body)
    return True


def start_head(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> StartHead | None:
    """The head of a chunked response that uvicorn's own ``send`` would write now, for ``send_start``; None where
    ``send`` is not uvicorn's or would not write right away (paused for a slow client, gone, a HEAD request, an
    access log to write, a response already started, a header it refuses or a framing header of the caller's).
    Nothing is sent and nothing changes: a caller may still go another way. Pairs checked before are written as
    the lines kept of them (``_Lines``): the server's default headers, and a caller's ``fixed_headers``."""
    cycle = server_cycle(send)
    if cycle is None:
        return None
    if isinstance(cycle, _Cycle):  # ssegate serve's: its attributes read as a compiled class's (not by name)
        own: _Cycle = cycle
        if (own.response_started or own.disconnected or own.flow.write_paused or own.access_log
                or own.scope.get("method") == "HEAD" or own.chunked_encoding is not None):
            return None
        default: list[tuple[bytes, bytes]] = own.default_headers
        keep_alive = own.keep_alive
    elif (cycle.response_started or cycle.disconnected or cycle.flow.write_paused or cycle.access_log
            or cycle.scope.get("method") == "HEAD" or cycle.chunked_encoding is not None):
        return None
    else:
        default = cycle.default_headers
        keep_alive = cycle.keep_alive
    kept = _LINES
    memo = kept.default  # (read and replaced whole: servers on other threads share it)
    if memo is not None and memo[0] is default:
        block = memo[1]
    else:
        made = _block(default)
        if made is None:
            return None
        block = made
        kept.default = (default, block)
    content = [STATUS_LINE[status], block]
    fixed = kept.fixed
    names: list[bytes] = []
    values: list[bytes] = []
    items: list[object] = cast(list[object], headers)  # (as objects: a typed pair would be a new tuple, a new id)
    for pair in items:
        line = fixed.get(id(pair))
        if line is not None:
            content.append(line)
            continue
        name, value = cast(tuple[bytes, bytes], pair)
        names.append(name)
        values.append(value)
        name = name.lower()
        if name in _FRAMING:
            return None  # framing chosen by the caller: uvicorn's send handles it
        content.append(name)
        content.append(b": ")
        content.append(value)
        content.append(b"\r\n")
    # uvicorn's checks of each name and value, over all of them joined ("-" and tab are allowed where they join)
    if names and not header_bytes_ok(b"-".join(names), b"\t".join(values)):
        return None  # uvicorn's send raises for it: let it
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content.append(b"transfer-encoding: chunked\r\n\r\n")
    return cycle, content


class _Lines:
    """Header pairs checked once, kept as the head lines uvicorn's ``send`` writes of them (the name in lower
    case): the server's default headers as a block, for the last list of them seen (uvicorn's server makes a new
    list each second, with the date, and never changes one), and the pairs registered with ``fixed_headers``, by
    identity (each kept here, so that its ``id`` stays its own). A stream's head then checks only its own
    headers (its id, its route): ~17k → ~7k instructions."""

    def __init__(self) -> None:
        self.default: tuple[list[tuple[bytes, bytes]], bytes] | None = None
        """The last default headers seen, and their block."""
        self.fixed: dict[int, bytes] = {}
        self.pairs: list[object] = []


_LINES: Final = _Lines()


def _line(name: bytes, value: bytes) -> bytes | None:
    """The head line of one header as uvicorn's ``send`` writes it; None for one it refuses or a framing header."""
    if not header_bytes_ok(name, value):
        return None
    name = name.lower()
    if name in _FRAMING:
        return None
    return name + b": " + value + b"\r\n"


def _block(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    lines = []
    for name, value in headers:
        line = _line(name, value)
        if line is None:
            return None
        lines.append(line)
    return b"".join(lines)


def fixed_headers(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``pairs`` (returned as they are), registered as fixed headers of responses: where ``start_head`` meets one
    of these very tuples, it writes the line checked here once. A pair uvicorn refuses, or a framing header, is
    not registered: it is checked where it is sent, and goes to uvicorn's ``send``."""
    items: list[object] = cast(list[object], pairs)  # (the tuples themselves, as start_head meets them)
    for pair in items:
        name, value = cast(tuple[bytes, bytes], pair)
        line = _line(name, value)
        if line is not None and id(pair) not in _LINES.fixed:
            _LINES.pairs.append(pair)
            _LINES.fixed[id(pair)] = line
    return pairs


_CHUNK_HEADS: Final = [b"%x\r\n" % size for size in range(2048)]
"""The head of a chunk of each size below 2 KiB (an event's, usually: ~80 KB for the table): a list lookup, where the
size formatted (``bytes %``, with the chunk) was ~1.2k instructions an event."""
_LAST: Final = b"\r\n0\r\n\r\n"
"""A last chunk's end and the body's."""


def _chunk_head(size: int) -> bytes:
    """``<size in hex>\\r\\n``: the head of a chunk of a chunked body."""
    return _CHUNK_HEADS[size] if size < 2048 else b"%x\r\n" % size


def chunk(body: bytes, last: bool = False) -> bytes:
    """``body`` (not empty) as one chunk of a chunked body, and with ``last`` the body's end after it: what
    uvicorn's ``send`` writes for a body message, for ``_Cycle.send`` and the response's direct writes."""
    return b"".join((_chunk_head(len(body)), body, _LAST if last else b"\r\n"))


def send_start(head: StartHead, body: bytes, more_body: bool) -> None:
    """Write a head from ``start_head`` with the first body chunk (and the end of the body, without
    ``more_body``) in one write, leaving uvicorn's request cycle as its ``send`` would. Only right after
    ``start_head``, with nothing awaited in between."""
    cycle, content = head
    if body:
        content += (_chunk_head(len(body)), body, b"\r\n")
    if not more_body:
        content.append(b"0\r\n\r\n")
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = True
    cycle.expected_content_length = 0
    cycle.transport.write(b"".join(content))
    if not more_body:
        _complete(cycle)
