"""``/readyz``: cheap (one upstream check per ``READY_CACHE_S``, shared by concurrent hits) and telling nobody
secrets (checks named by kind with a fixed word; no URL, credentials or upstream text; detail only for a caller
with a valid API key, and in the server log).

End to end: a real ``ssegate serve`` against a fake upstream on a loopback socket that counts its ``/models``
requests and answers as told; plus unit tests of ``UpstreamCheck``'s words and its single flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from ssegate.errors import UpstreamError, UpstreamRefused, UpstreamTimeout
from ssegate.http.routes.ops import UpstreamCheck
from tests.fakes.http import HttpConnection, HttpServer, Request
from tests.fakes.openai import OpenAIDialect
from tests.support.gateway import GatewayProcess, free_port
from tests.support.redis import RedisServer
from tests.support.resume import auth

PASSWORD = "pw-Zq8rT4-s3cret"
UPSTREAM_TEXT = "internal-trace-7f3a upstream database on fire"


class ModelsUpstream:
    """An OpenAI-compatible ``/models`` endpoint in the test's event loop: counts requests, answers after
    ``delay`` with ``status`` (and ``UPSTREAM_TEXT`` in the body of an error)."""

    def __init__(self, *, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.requests = 0
        self.server = HttpServer(self._handle, self._error)
        self.errors: list[BaseException] = []

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.port}/v1"

    async def _handle(self, request: Request, conn: HttpConnection) -> None:
        if request.path.endswith("/models"):
            self.requests += 1
        await asyncio.sleep(self.delay)
        if self.status == 200:
            body = orjson.dumps(OpenAIDialect.models())
        else:
            body = orjson.dumps({"error": {"message": UPSTREAM_TEXT, "type": "server_error"}})
        await conn.respond(self.status, {"content-type": "application/json"}, body)

    def _error(self, exc: BaseException) -> None:
        self.errors.append(exc)


@pytest.fixture
async def models() -> AsyncIterator[ModelsUpstream]:
    up = ModelsUpstream(delay=0.3)
    await up.server.start("127.0.0.1", 0)
    yield up
    await up.server.stop()
    assert not up.errors


async def serve(settings: dict[str, Any]) -> GatewayProcess:
    return await asyncio.to_thread(GatewayProcess({"provider": "openai", "model": "m", **settings}).start)


async def test_fifty_concurrent_hits_make_one_upstream_request(models: ModelsUpstream) -> None:
    """Regression: every ``/readyz`` hit made its own request to the upstream's models endpoint, so probes from
    every load balancer node multiplied upstream traffic (this test fails on the code before the cache)."""
    gw = await serve({"upstream_url": models.url()})
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(*(client.get(gw.url + "/readyz") for _ in range(50)))
            assert [a.status_code for a in answers] == [200] * 50
            assert models.requests == 1
            assert all(a.json() == {"status": "ok", "checks": {"upstream": "ok"}} for a in answers)
            # ... and hits within the next seconds are answered from the same check
            for _ in range(10):
                assert (await client.get(gw.url + "/readyz")).status_code == 200
            assert models.requests == 1
    finally:
        await asyncio.to_thread(gw.stop)


async def test_readyz_tells_anonymous_callers_no_url_password_or_upstream_text() -> None:
    """Regression: the body named the upstream check by the provider's label, its URL with any ``user:pass@``
    in it, and gave the upstream's error text to anyone (this test fails on the code before the fix). Redis's
    URL, password included, must not show either."""
    up = ModelsUpstream(status=500)
    await up.server.start("127.0.0.1", 0)
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        redis_url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        gw = await serve({"upstream_url": up.url(f"alice:{PASSWORD}@"), "redis_url": redis_url, "api_keys": "k1",
                          "token_secret": "t" * 32})
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                anonymous = await client.get(gw.url + "/readyz")
                operator = await client.get(gw.url + "/readyz", headers=auth())
                wrong_key = await client.get(gw.url + "/readyz", headers=auth("nope"))
        finally:
            log = gw.log()
            await asyncio.to_thread(gw.stop)
            await up.server.stop()
    port = str(up.server.port)
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "unavailable", "checks": {"upstream": "error", "redis": "ok"}}
    assert wrong_key.json() == anonymous.json()  # an invalid key gets the anonymous answer, not a 401
    assert operator.status_code == 503
    body = operator.json()
    assert body["checks"] == anonymous.json()["checks"]
    assert body["detail"] == {"upstream": f"127.0.0.1:{port}: UpstreamRefused",
                              "redis": f"127.0.0.1:{server.port}: ok"}
    for text in (anonymous.text, operator.text, wrong_key.text):
        assert PASSWORD not in text and "alice" not in text and UPSTREAM_TEXT not in text
    assert port not in anonymous.text and str(server.port) not in anonymous.text
    # the detail went to the server log, without the credentials
    assert f"127.0.0.1:{port}" in log and "UpstreamRefused" in log
    assert PASSWORD not in log and "alice" not in log
    assert up.requests == 1  # three hits, one check


async def test_an_unreachable_upstream_is_one_word() -> None:
    port = free_port()  # nothing listens there
    gw = await serve({"upstream_url": f"http://127.0.0.1:{port}/v1"})
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.get(gw.url + "/readyz")
    finally:
        await asyncio.to_thread(gw.stop)
    assert resp.status_code == 503
    assert resp.json() == {"status": "unavailable", "checks": {"upstream": "unreachable"}}


# --- UpstreamCheck alone ----------------------------------------------------------------------------------
class Provider:
    """A provider whose ``check()`` does what the test says, counting calls."""

    name = "openai"

    def __init__(self, outcome: BaseException | None = None, delay: float = 0.0) -> None:
        self.label = f"openai:http://bob:{PASSWORD}@upstream.example:8443/v1"
        self.outcome = outcome
        self.delay = delay
        self.calls = 0

    async def check(self) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.outcome is not None:
            raise self.outcome


def _connect_failed() -> UpstreamError:
    try:
        raise ConnectionRefusedError(111, "Connect call failed")
    except OSError as exc:
        try:
            raise UpstreamError("cannot connect to the upstream at upstream.example:8443") from exc
        except UpstreamError as err:
            return err


@pytest.mark.parametrize(
    ("outcome", "word", "detail"),
    [
        pytest.param(None, "ok", "upstream.example:8443: ok", id="ok"),
        pytest.param(UpstreamTimeout("the upstream did not answer in time"), "timeout",
                     "upstream.example:8443: UpstreamTimeout", id="timeout"),
        pytest.param(_connect_failed(), "unreachable", "upstream.example:8443: UpstreamError", id="unreachable"),
        pytest.param(UpstreamRefused(f"upstream answered 503: {UPSTREAM_TEXT}", upstream_status=503), "error",
                     "upstream.example:8443: UpstreamRefused", id="refused"),
        pytest.param(KeyError("a provider's bug"), "error", "upstream.example:8443: KeyError", id="bug"),
    ],
)
async def test_each_outcome_is_a_fixed_word_and_a_detail_without_credentials(
    outcome: BaseException | None, word: str, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    check = UpstreamCheck(Provider(outcome))  # type: ignore[arg-type]
    result = await check.outcome()
    assert (result.word, result.detail) == (word, detail)
    assert all(PASSWORD not in r.getMessage() and "bob" not in r.getMessage() for r in caplog.records)


async def test_concurrent_callers_share_one_check_even_if_one_hangs_up() -> None:
    provider = Provider(delay=0.2)
    check = UpstreamCheck(provider)  # type: ignore[arg-type]
    first = asyncio.create_task(check.outcome())
    others = [asyncio.create_task(check.outcome()) for _ in range(20)]
    await asyncio.sleep(0.05)
    first.cancel()  # a prober that hangs up does not cancel the others' check
    results = await asyncio.gather(*others)
    assert {r.word for r in results} == {"ok"} and provider.calls == 1
    assert (await check.outcome()).word == "ok" and provider.calls == 1  # cached


async def test_a_cached_outcome_expires() -> None:
    provider = Provider()
    check = UpstreamCheck(provider, cache_s=0.05)  # type: ignore[arg-type]
    await check.outcome()
    await check.outcome()
    assert provider.calls == 1
    await asyncio.sleep(0.06)
    await check.outcome()
    assert provider.calls == 2
