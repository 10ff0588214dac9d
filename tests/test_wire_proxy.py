"""Upstreams behind an HTTP proxy named by the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
``NO_PROXY``), through a real tinyproxy on loopback: plain ``http`` forwarded, ``https`` through a ``CONNECT``
tunnel with the upstream's certificate checked, Basic proxy auth, a proxy's refusals, and credentials that never
show in an error or a log line. Every test here but the ``NO_PROXY`` rows fails on a client that ignores the
proxy variables."""

from __future__ import annotations

import asyncio
import base64
import gc
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psutil
import pytest
import trustme
import uvloop

from ssegate.errors import UpstreamError
from ssegate.upstream.httpclient import Pool
from tests.fakes import FakeUpstream, Script
from tests.support.gateway import GatewayProcess, chat_body
from tests.support.scripted import Serve, fixed, raw, servers
from tests.support.tinyproxy import TinyProxy

SECRET = "s3cr3t-pr0xy-pw"
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy",
              "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it means; none leak in from the machine running the suite."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with servers() as start:
        yield start


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[TinyProxy]:
    with TinyProxy() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def authproxy() -> Iterator[TinyProxy]:
    with TinyProxy(user="gw", password=SECRET) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, name: str = "localhost") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def via_tinyproxy(proxy: TinyProxy, peer: tuple[str, int]) -> bool:
    """The connection the origin saw from ``peer`` is one of tinyproxy's own sockets."""
    return any(c.laddr and c.laddr.port == peer[1] for c in psutil.Process(proxy.pid).net_connections("tcp"))


def no_secret(err: BaseException, *more: Any) -> None:
    """The password shows nowhere in the error, its causes and reprs, or in ``more``."""
    texts = [repr(m) for m in more]
    e: BaseException | None = err
    while e is not None:
        texts += [str(e), repr(e)]
        e = e.__cause__ or e.__context__
    for text in texts:
        assert SECRET not in text and base64.b64encode(f"gw:{SECRET}".encode()).decode() not in text, text


# --- plain http: the request forwarded ------------------------------------------------------------------------
async def test_an_http_upstream_is_reached_through_http_proxy(
    serve: Serve, tinyproxy: TinyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    srv = await serve(fixed(b"proxied"))
    pool = Pool()
    resp = await asyncio.wait_for(pool.request("POST", srv.url("/v1/chat/completions?x=1"), {}, b"{}"), 10)
    assert (resp.status, await resp.read()) == (200, b"proxied")
    resp.close()
    request = srv.requests[0]
    assert request.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")  # tinyproxy took the absolute form
    assert b"\r\nvia: 1.1 " in request.lower() and b"tinyproxy" in request.lower()
    await pool.aclose()


# --- https: a CONNECT tunnel, TLS with the upstream ------------------------------------------------------------
async def https_through(proxy: TinyProxy | None, ca: trustme.CA, host: str = "localhost") -> tuple[bytes, bool]:
    """One https request through the proxy named by ``HTTPS_PROXY`` (set by the caller) to a TLS server whose
    certificate names ``localhost``; returns the body and whether the server's peer was one of ``proxy``'s own
    sockets (looked at while the kept connection is still open)."""
    async with servers() as start:
        srv = await start(fixed(b"tunnelled"), tls_server(ca))
        pool = Pool(ssl_context=trusting(ca))
        try:
            resp = await asyncio.wait_for(pool.request("GET", srv.url("/v1/models", host=host, scheme="https"), {}),
                                          10)
            body = await resp.read()
            resp.close()
            return body, proxy is not None and via_tinyproxy(proxy, srv.peers[0])
        finally:
            await pool.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_https_upstream_is_reached_through_a_connect_tunnel(
    tinyproxy: TinyProxy, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """On both event loops the gateway may run on (uvloop serves it): TLS runs inside the tunnel, end to end."""
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)

    async def scenario() -> tuple[bytes, bool]:
        return await https_through(tinyproxy, ca)

    body, proxied = uvloop.run(scenario()) if loop == "uvloop" else asyncio.run(scenario())
    assert body == b"tunnelled" and proxied


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_the_certificate_is_checked_against_the_upstream_host_not_the_proxy(
    tinyproxy: TinyProxy, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream's certificate names ``localhost``; asked for ``127.0.0.1`` through the tunnel, it is refused.
    (The test's asyncio TLS server drops the socket of the handshake our client refused without closing it: the
    collection below keeps that warning in this test.)"""
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)
    with pytest.raises(UpstreamError, match=r"cannot connect to the upstream at 127\.0\.0\.1:\d+ through the proxy "
                                            r"at 127\.0\.0\.1:\d+ \(HTTPS_PROXY\)") as info:
        await https_through(tinyproxy, ca, host="127.0.0.1")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    await asyncio.sleep(0.05)
    gc.collect()


# --- proxy auth ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_proxy_auth_is_sent_from_the_proxy_url(
    serve: Serve, authproxy: TinyProxy, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv(f"{scheme.upper()}_PROXY", authproxy.url_with("gw", SECRET))
    if scheme == "https":
        body, proxied = await https_through(authproxy, ca)
        assert body == b"tunnelled" and proxied
        return
    srv = await serve(fixed(b"let in"))
    pool = Pool()
    resp = await asyncio.wait_for(pool.request("GET", srv.url(), {}), 10)
    assert await resp.read() == b"let in"
    resp.close()
    assert b"tinyproxy" in srv.requests[0].lower()  # its Via header: the request went through it
    assert b"proxy-authorization" not in srv.requests[0].lower()  # for the proxy, not passed on
    await pool.aclose()


@pytest.mark.parametrize(("scheme", "credentials", "answer"), [
    ("https", "none", "407 Proxy Authentication Required"),
    ("https", "wrong", "401 Unauthorized"),  # tinyproxy's answer to a wrong password
    ("http", "none", "407 Proxy Authentication Required"),
])
async def test_a_proxy_that_wants_credentials_is_an_upstream_error_that_names_it_and_never_the_password(
    serve: Serve, authproxy: TinyProxy, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, scheme: str,
    credentials: str, answer: str,
) -> None:
    url = authproxy.url if credentials == "none" else authproxy.url_with("gw", SECRET + "-not")
    monkeypatch.setenv("ALL_PROXY", url)
    srv = await serve(fixed(b"never"), tls_server(ca) if scheme == "https" else None)
    pool = Pool(ssl_context=trusting(ca))
    with pytest.raises(UpstreamError) as info:
        await asyncio.wait_for(pool.request("GET", srv.url(host="localhost", scheme=scheme), {}), 10)
    what = "the tunnel to localhost" if scheme == "https" else "the request to localhost"
    hint = "the proxy URL has no user and password" if credentials == "none" else (
        "check the user and password in the proxy URL")
    assert str(info.value).startswith(f"the proxy at 127.0.0.1:{authproxy.port} (ALL_PROXY) refused {what}")
    assert str(info.value).endswith(f": it answered {answer} ({hint})")
    assert not info.value.retryable
    no_secret(info.value, pool, pool.proxies)
    assert srv.connections == 0 and pool.active == 0
    await pool.aclose()


async def test_a_forwarding_proxy_that_refuses_the_password_is_named_and_the_password_is_not(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``http`` upstream: the proxy's ``407`` comes as the answer to the forwarded request (a scripted proxy:
    tinyproxy answers a wrong password with ``401``, which an upstream may send too, so it is passed on)."""
    proxy = await serve(raw(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"))
    monkeypatch.setenv("HTTP_PROXY", f"http://gw:{SECRET}@127.0.0.1:{proxy.port}")
    pool = Pool()
    with pytest.raises(UpstreamError, match=rf"^the proxy at 127\.0\.0\.1:{proxy.port} \(HTTP_PROXY\) refused the "
                                            r"request to upstream\.test:8080: it answered 407 Proxy Authentication "
                                            r"Required \(check the user and password in the proxy URL\)$") as info:
        await asyncio.wait_for(pool.request("POST", "http://upstream.test:8080/v1/x", {}, b"{}"), 10)
    no_secret(info.value, pool, pool.proxies)
    basic = base64.b64encode(f"gw:{SECRET}".encode()).decode()
    assert proxy.requests[0].startswith(b"POST http://upstream.test:8080/v1/x HTTP/1.1\r\nHost: upstream.test:8080\r\n")
    assert f"\r\nProxy-Authorization: Basic {basic}\r\n".encode() in proxy.requests[0]
    assert pool.active == 0
    await pool.aclose()


# --- refusals --------------------------------------------------------------------------------------------------
async def test_a_proxy_that_forbids_the_port_is_a_403_upstream_error(serve: Serve, ca: trustme.CA,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with TinyProxy(connect_ports=(1,)) as strict:
        monkeypatch.setenv("HTTPS_PROXY", strict.url)
        with pytest.raises(UpstreamError, match=rf"the proxy at 127\.0\.0\.1:{strict.port} \(HTTPS_PROXY\) refused "
                                                r"the tunnel to localhost:\d+: it answered 403 Forbidden"):
            await https_through(strict, ca)


async def test_a_proxy_that_cannot_reach_the_upstream_is_a_retryable_upstream_error(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy answering ``502`` to CONNECT (a scripted one: it also shows the exact CONNECT sent, with the
    percent-encoded credentials of the proxy URL decoded into the Basic header)."""
    proxy = await serve(raw(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", keep=False))
    monkeypatch.setenv("https_proxy", f"http://us%20er:p%40ss@127.0.0.1:{proxy.port}")
    pool = Pool()
    with pytest.raises(UpstreamError, match=rf"the proxy at 127\.0\.0\.1:{proxy.port} \(HTTPS_PROXY\) refused the "
                                            r"tunnel to api\.example\.com:443: it answered 502 Bad Gateway") as info:
        await asyncio.wait_for(pool.request("GET", "https://api.example.com/v1/models", {}), 10)
    assert info.value.retryable
    basic = base64.b64encode(b"us er:p@ss").decode()
    assert proxy.requests == [b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n"
                              b"Proxy-Authorization: Basic " + basic.encode() + b"\r\n\r\n"]
    await pool.aclose()


async def test_a_proxy_that_is_not_there_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.gateway import free_port

    port = free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://gw:{SECRET}@127.0.0.1:{port}")
    pool = Pool()
    with pytest.raises(UpstreamError, match=rf"^cannot connect to the proxy at 127\.0\.0\.1:{port} \(HTTP_PROXY\)$") \
            as info:
        await asyncio.wait_for(pool.request("GET", "http://upstream.invalid/", {}), 10)
    no_secret(info.value)
    await pool.aclose()


async def test_a_socks_proxy_is_refused_with_a_message_that_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALL_PROXY", f"socks5://gw:{SECRET}@127.0.0.1:1080")
    pool = Pool()
    with pytest.raises(UpstreamError, match=r"the proxy socks5://127\.0\.0\.1:1080 \(ALL_PROXY\) is not supported"
                                            r".*NO_PROXY") as info:
        await pool.request("GET", "https://api.example.com/", {})
    no_secret(info.value, pool.proxies)
    await pool.aclose()


# --- which requests go through the proxy ------------------------------------------------------------------------
@pytest.mark.parametrize(("env", "proxied"), [
    ({"HTTP_PROXY": "{proxy}"}, True),
    ({"ALL_PROXY": "{proxy}"}, True),
    ({"HTTPS_PROXY": "{proxy}"}, False),  # for https upstreams only
    ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "localhost,127.0.0.1"}, False),
    ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "*"}, False),
    ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "upstream.example,localhost"}, True),  # other hosts
    ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1:{port}"}, False),  # with the port
    ({"HTTP_PROXY": "{proxy}", "no_proxy": "127.0.0.1", "NO_PROXY": ""}, False),  # lower case wins
    ({"http_proxy": "", "HTTP_PROXY": "{proxy}"}, False),  # lower case wins, even empty
    ({"HTTP_PROXY": "127.0.0.1:{proxy_port}"}, True),  # no scheme: http
], ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()) if isinstance(v, dict) else str(v))
async def test_the_proxy_variables_decide_which_upstreams_go_through_the_proxy(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], proxied: bool
) -> None:
    proxy = await serve(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied"))
    srv = await serve(fixed(b"direct!"))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(proxy=f"http://127.0.0.1:{proxy.port}", proxy_port=proxy.port,
                                              port=srv.port))
    pool = Pool()
    resp = await asyncio.wait_for(pool.request("GET", srv.url("/x"), {}), 10)
    assert await resp.read() == (b"proxied" if proxied else b"direct!")
    resp.close()
    if proxied:
        assert proxy.requests[0].startswith(f"GET http://127.0.0.1:{srv.port}/x HTTP/1.1\r\n".encode())
    await pool.aclose()


# --- the gateway, end to end ----------------------------------------------------------------------------------
class ProxiedGateway(GatewayProcess):
    def __init__(self, settings: dict[str, Any], proxy_env: dict[str, str]) -> None:
        super().__init__(settings)
        self.proxy_env = proxy_env

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if k not in PROXY_VARS}
        return {**env, **self.proxy_env}


def test_the_gateway_streams_through_http_proxy_from_its_environment(
    upstream: FakeUpstream, tinyproxy: TinyProxy
) -> None:
    prompt = upstream.script(Script(deltas=["through ", "the ", "proxy"], delay=0.01))
    settings = {"provider": "openai", "upstream_url": upstream.url, "model": "fake-model", "log_level": "info"}
    with ProxiedGateway(settings, {"HTTP_PROXY": tinyproxy.url}) as gw:
        r = httpx.post(gw.url + "/v1/chat/stream", content=chat_body(prompt), timeout=20)
    assert r.status_code == 200
    assert '"through "' in r.text and '"proxy"' in r.text and "event: done" in r.text
    (rec,) = upstream.records(prompt)
    assert "tinyproxy" in rec.headers.get("via", "")


def test_the_gateway_names_a_refusing_proxy_and_never_logs_its_password(authproxy: TinyProxy) -> None:
    settings = {"provider": "openai", "upstream_url": "https://localhost:9/v1", "model": "m", "log_level": "debug",
                "retry_attempts": 1}
    with ProxiedGateway(settings, {"HTTPS_PROXY": authproxy.url_with("gw", SECRET + "-not")}) as gw:
        r = httpx.post(gw.url + "/v1/chat/stream", content=chat_body("hello"), timeout=20)
        log = gw.log()
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert message.endswith(f"the proxy at 127.0.0.1:{authproxy.port} (HTTPS_PROXY) refused the tunnel to localhost:9: "
                            "it answered 401 Unauthorized (check the user and password in the proxy URL)")
    assert f"127.0.0.1:{authproxy.port}" in log  # the failure was logged ...
    for text in (r.text, log):  # ... without the password
        assert SECRET not in text and "gw:" not in text
