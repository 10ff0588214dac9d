"""How ``httpclient.py`` reaches an upstream: happy eyeballs, proxies from the environment, CONNECT tunnels.

Everything here happens once per new connection and connects ``httpclient.Pool``'s protocol (``connect``); the
connection's protocol, and so the per-token path, is the same whether it goes straight to the upstream or through
a proxy.

**Dialing**: an upstream reached directly whose host is an IP address is connected by the event loop itself, with
nothing resolved (``loop.create_connection`` to that address with its family: uvloop connects it in libuv, with no
socket object of Python's, ~43k instructions less than a socket of ours for each new connection, ``python -m
bench.callgrind`` with an upstream that closes each connection; and without the loop's ``getaddrinfo``, whose
answer for an IP address makes two enums of Python's, ~18k more). A host name with one address is resolved, then
connected the same way. The connect is bounded by ``connect_timeout`` with ``core.tasks.within`` (compiled, where
``asyncio.timeout`` is ~37k instructions of interpreted code): a new connection costs ~42k instructions less than
with both (a burst of 100 streams on an empty pool, scratch callgrind: 286k → 244k a stream until its request is
written). Otherwise (``dial``) the
host's addresses are tried in the order the resolver gives them, families interleaved (IPv6, IPv4, IPv6, ...), a
new attempt starting every ``HAPPY_EYEBALLS_S`` while the earlier ones are still pending or as soon as one fails
(RFC 8305), and the socket that connects is handed to the loop. asyncio's own ``happy_eyeballs_delay`` is not used:
uvloop, which serves the gateway, does not have it, and a host whose first address black-holes would then wait for
the whole connect timeout.

**Proxies** (``Proxies``): read from the environment once, when the pool is made, exactly as Python's urllib
reads them (``urllib.request.getproxies_environment`` and ``proxy_bypass_environment``; curl, requests and
httpx agree on the common cases): ``HTTPS_PROXY`` for ``https://`` upstreams, ``HTTP_PROXY`` for ``http://``
ones, ``ALL_PROXY`` for either, ``NO_PROXY`` (host names and domain suffixes, ``*`` for all) for the hosts
reached directly; a lower-case name wins over the upper-case one. ssegate has no setting of its own for this.
Only ``http://`` proxies are spoken to (a scheme-less value counts as one); ``socks5://`` or ``https://`` proxy
URLs fail each request with an error that names the variable.

- an ``http://`` upstream through a proxy: the connection goes to the proxy and each request line carries the
  absolute URL (``POST http://host:port/v1/chat/completions HTTP/1.1``), with ``Proxy-Authorization: Basic``
  when the proxy URL has a user and password (``httpclient.py`` adds both);
- an ``https://`` upstream through a proxy: ``tunnel`` sends ``CONNECT host:port`` on the socket and reads the
  proxy's answer head; after a ``2xx`` the socket is a byte pipe to the upstream, and ``httpclient.py`` starts TLS on
  it with the upstream's name (the certificate is checked against the upstream host, never the proxy's).

A proxy that refuses a tunnel (``407``, ``403``, ``502`` ...: any answer but ``2xx`` to ``CONNECT``) is an
``UpstreamError`` that names the proxy by ``host:port`` and the variable it came from, and says what it answered.
For an ``http`` upstream the proxy's answer is the response itself: ``407`` is taken as the proxy's refusal, any
other status (a proxy's ``502`` too) reaches the provider as the upstream's, which may send the same.

The user and password of a proxy URL are kept apart from everything printable: they appear in no message, log
line or ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import socket
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import httptools

from ..core.tasks import within
from ..errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout, caused

__all__ = ["HAPPY_EYEBALLS_S", "Proxies", "Proxy", "connect", "dial", "refusal", "tunnel"]

HAPPY_EYEBALLS_S: Final = 0.25
"""Head start of each address over the next one (RFC 8305 recommends 250 ms)."""
MAX_CONNECT_HEAD: Final = 64 << 10
"""Largest answer head accepted from a proxy to a CONNECT."""
_PENDING: Final = frozenset({errno.EINPROGRESS, errno.EINTR})
"""What a non-blocking TCP ``connect`` answers while the connection is still being made (its ``EAGAIN`` is a
failure: no local port left)."""
_VARIABLE: Final = {"http": "HTTP_PROXY", "https": "HTTPS_PROXY", "all": "ALL_PROXY"}
_running_loop: Final = asyncio.get_running_loop
_inet_pton: Final = socket.inet_pton
_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)


@dataclass(frozen=True)
class Proxy:
    """An ``http://`` proxy: where it is, the environment variable that named it, and its credentials (kept
    out of ``repr``; ``label`` is what messages show)."""

    host: str
    port: int
    variable: str
    authorization: str | None = field(default=None, repr=False)
    """The ``Proxy-Authorization`` header value, when the proxy URL has a user."""

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"the proxy at {host}:{self.port} ({self.variable})"


class Proxies:
    """Which proxy, if any, carries the requests to an origin: the environment is read when this object is
    made, and each origin's route decided at its first request."""

    def __init__(self) -> None:
        self._env = urllib.request.getproxies_environment()
        self._routes: dict[tuple[str, str, int], Proxy | str | None] = {}
        """Each origin's proxy, None (direct), or why its proxy URL cannot be used."""

    def __repr__(self) -> str:
        return f"Proxies({sorted(k for k in self._env if k != 'no')})"

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for ``scheme://host:port``, or None to connect directly; an unusable proxy URL raises."""
        key = (scheme, host, port)
        if key not in self._routes:
            self._routes[key] = self._decide(scheme, host, port)
        route = self._routes[key]
        if isinstance(route, str):
            raise UpstreamError(route, retryable=False)
        return route

    def _decide(self, scheme: str, host: str, port: int) -> Proxy | str | None:
        kind = scheme if scheme in self._env else "all"
        url = self._env.get(kind)
        if not url:
            return None
        where = host if ":" in host else f"{host}:{port}"  # NO_PROXY entries may name a port
        if urllib.request.proxy_bypass_environment(where, self._env):  # type: ignore[attr-defined]
            return None
        variable = _VARIABLE.get(kind, f"{kind.upper()}_PROXY")
        if "://" not in url:
            url = "http://" + url  # as curl reads "proxy:3128"
        try:
            parts = urlsplit(url)
            proxy_host, proxy_port = parts.hostname, parts.port or 80
        except ValueError:
            return f"{variable} is not a proxy URL: set it to http://host:port"
        if parts.scheme.lower() != "http" or not proxy_host:
            shown = f"{parts.scheme}://{proxy_host}" + (f":{parts.port}" if parts.port else "")
            return (f"the proxy {shown} ({variable}) is not supported: ssegate speaks to http:// proxies only "
                    f"(or list {host} in NO_PROXY to reach it directly)")
        authorization = None
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(secret).decode("ascii")
        return Proxy(proxy_host, proxy_port, variable, authorization)


# --- dialing ------------------------------------------------------------------------------------------
async def connect(
    protocol: Callable[[], asyncio.Protocol], host: str, port: int, proxy: Proxy | None,
    ssl_context: ssl.SSLContext | None, connect_timeout: float,
) -> None:
    """Connect ``protocol`` to ``host:port``, directly or through ``proxy`` (a tunnel when ``ssl_context`` is
    given, TLS then started with the upstream's name) within ``connect_timeout``; failures are ``UpstreamError``s."""
    loop = _running_loop()
    try:
        if proxy is None:
            family = _literal(host)
            if family:  # an IP address: nothing to resolve, the loop connects it
                await within(loop, loop.create_connection(protocol, host, port, family=family, ssl=ssl_context,
                                                          server_hostname=host if ssl_context is not None else None),
                             connect_timeout)
                return
        await within(loop, _connect_resolved(loop, protocol, host, port, proxy, ssl_context), connect_timeout)
    except TimeoutError as exc:
        raise caused(UpstreamTimeout(f"connecting to {_where(host, port, proxy)} timed out"), exc)  # noqa: B904 (errors.caused)
    except OSError as exc:  # refused, unreachable, DNS, TLS
        raise caused(UpstreamError(f"cannot connect to {_where(host, port, proxy)}"), exc)  # noqa: B904 (errors.caused)


def _where(host: str, port: int, proxy: Proxy | None) -> str:
    return f"the upstream at {host}:{port}" + (f" through {proxy.label}" if proxy is not None else "")


_LITERALS: Final[dict[str, int]] = {}
"""Each host name seen: the address family of an IP address, 0 for a name to resolve (a pool has a few hosts)."""


def _literal(host: str) -> int:
    """``AF_INET`` or ``AF_INET6`` when ``host`` is an IP address (one without an IPv6 scope), else 0."""
    family = _LITERALS.get(host)
    if family is None:
        family = 0
        for candidate in (_AF_INET, _AF_INET6):
            try:
                _inet_pton(candidate, host)
            except (OSError, ValueError):
                continue
            family = candidate
            break
        if len(_LITERALS) < 1024:
            _LITERALS[host] = family
    return family


async def _connect_resolved(
    loop: asyncio.AbstractEventLoop, protocol: Callable[[], asyncio.Protocol], host: str, port: int,
    proxy: Proxy | None, ssl_context: ssl.SSLContext | None,
) -> None:
    """``connect`` for a host name, or through a proxy: the addresses resolved and raced, or the proxy dialed (and
    a tunnel asked of it), then the socket that connects handed to the loop."""
    sock: socket.socket | None = None
    made = False
    server_hostname = host if ssl_context is not None else None
    try:
        if proxy is None:
            infos = await _resolved(loop, host, port)
            if len(infos) == 1 and _plain(infos[0][4]):
                family, _, _, _, address = infos[0]
                await loop.create_connection(protocol, address[0], address[1], family=family, ssl=ssl_context,
                                             server_hostname=server_hostname)
                return
            sock = await _race(loop, infos)
        else:
            try:
                sock = await dial(proxy.host, proxy.port)
            except OSError as exc:
                unreached = UpstreamError(f"cannot connect to {proxy.label}")
                raise caused(unreached, exc)  # noqa: B904 (errors.caused)
            if ssl_context is not None:
                await tunnel(sock, proxy, host, port)
        await loop.create_connection(protocol, sock=sock, ssl=ssl_context, server_hostname=server_hostname)
        made = True
    finally:
        if sock is not None and not made and sock.fileno() != -1:
            sock.close()


async def dial(host: str, port: int, delay: float = HAPPY_EYEBALLS_S) -> socket.socket:
    """A connected non-blocking socket to ``host:port`` (happy eyeballs across its addresses); raises the
    ``OSError`` of the attempts when none connects."""
    loop = asyncio.get_running_loop()
    return await _race(loop, await _resolved(loop, host, port), delay)


async def _resolved(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[tuple[Any, ...]]:
    infos = _interleave(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    if not infos:
        raise OSError(f"no address found for {host}")
    return infos


def _plain(address: tuple[Any, ...]) -> bool:
    """Whether the loop can be given ``address`` as a host and a port: not an IPv6 address with a scope."""
    return len(address) < 4 or not address[3]


async def _race(loop: asyncio.AbstractEventLoop, infos: list[tuple[Any, ...]],
                delay: float = HAPPY_EYEBALLS_S) -> socket.socket:
    """The first of ``infos``' addresses to connect, happy eyeballs (the module's docstring)."""
    if len(infos) == 1:  # nothing to race, so no task and no wait of asyncio's
        return await _attempt(loop, infos[0])
    errors: list[OSError] = []
    running: set[asyncio.Task[socket.socket]] = set()
    try:
        for n, info in enumerate(infos):
            running.add(loop.create_task(_attempt(loop, info)))
            last = n == len(infos) - 1
            while running:
                done, running = await asyncio.wait(running, timeout=None if last else delay,
                                                   return_when=asyncio.FIRST_COMPLETED)
                winner = None
                for task in done:
                    exc = task.exception()
                    if exc is None and winner is None:
                        winner = task.result()
                    elif exc is None:
                        task.result().close()  # two connected in the same pass: keep one
                    else:
                        errors.append(exc if isinstance(exc, OSError) else OSError(str(exc)))
                if winner is not None:
                    return winner
                if not last:
                    break  # one failed or the delay passed: the next address starts now
    finally:
        for task in running:  # still connecting: each closes its own socket when cancelled
            task.cancel()
    if len(errors) == 1 or len({str(e) for e in errors}) == 1:
        raise errors[0]
    raise OSError("; ".join(f"{e}" for e in errors))


async def _attempt(loop: asyncio.AbstractEventLoop, info: tuple[Any, ...]) -> socket.socket:
    family, type_, proto, _, address = info
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await _connected(loop, sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connected(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[Any, ...]) -> None:
    """Connect the non-blocking ``sock`` to ``address``, a resolved one. (``loop.sock_connect`` resolves it again:
    uvloop's asks its resolver without a socket type, which misses its shortcut for an IP address and goes through
    libuv's thread pool: ~86k instructions, the thread's included, and its round trip for each new connection.)"""
    err = sock.connect_ex(address)
    if err in _PENDING:
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock, _settle, fut)
        try:
            await fut
        finally:
            loop.remove_writer(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, f"Connect call failed {address}")


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _interleave(infos: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Alternate address families, the resolver's first family first (RFC 8305 §4)."""
    by_family: dict[int, list[tuple[Any, ...]]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out: list[tuple[Any, ...]] = []
    while queues:
        for q in queues:
            out.append(q.pop(0))
        queues = [q for q in queues if q]
    return out


# --- CONNECT ------------------------------------------------------------------------------------------
async def tunnel(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """Ask ``proxy`` (``sock`` is connected to it) for a tunnel to ``host:port``; return once it agreed, the
    socket then carrying bytes to and from the upstream."""
    loop = asyncio.get_running_loop()
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:  # the proxy sends nothing after its head until TLS starts: no over-read
        if len(head) > MAX_CONNECT_HEAD:
            raise UpstreamProtocolError(f"{proxy.label} sent an answer head over 64 KiB to CONNECT {authority}")
        piece = await loop.sock_recv(sock, 16384)
        if not piece:
            raise UpstreamError(f"{proxy.label} closed the connection instead of answering CONNECT {authority}")
        head += piece
    head, _, rest = head.partition(b"\r\n\r\n")
    parser = httptools.HttpResponseParser(None)
    try:
        parser.feed_data(head + b"\r\n\r\n")
    except httptools.HttpParserError as exc:
        malformed = UpstreamProtocolError(f"{proxy.label} answered CONNECT {authority} with malformed HTTP")
        raise caused(malformed, exc)  # noqa: B904 (errors.caused)
    status = parser.get_status_code()
    if not 200 <= status < 300:
        raise refusal(proxy, status, f"the tunnel to {authority}")
    if rest:
        raise UpstreamProtocolError(f"{proxy.label} sent bytes of its own after agreeing to CONNECT {authority}")


def refusal(proxy: Proxy, status: int, what: str) -> UpstreamError:
    """The error for a proxy that answered ``status`` instead of carrying ``what``."""
    try:
        phrase = f" {HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    hint = ""
    if status in (401, 407):
        hint = (" (check the user and password in the proxy URL)" if proxy.authorization
                else " (the proxy URL has no user and password)")
    return UpstreamError(f"{proxy.label} refused {what}: it answered {status}{phrase}{hint}",
                         retryable=status >= 500)
