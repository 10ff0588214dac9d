"""API keys, browser stream tokens, CORS, and the refusal to serve an open gateway on a public address
(CONTRACT §2 API_KEYS), against real ``ssegate serve`` processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ssegate.http.auth import fingerprint, issue_token
from ssegate.settings import Settings
from tests.conftest import FAST
from tests.support.gateway import GatewayProcess, chat_body, collect_events, free_port, sse_events
from tests.support.parallel import start_all
from tests.support.resume import script

KEY = "sk-test-7f3c9a1e5b2d4c6a8e0f"
OTHER = "sk-test-other-0b1c2d3e4f5a"
SECRET = "shared-token-secret-for-the-tests-4d9e"
QUICK = {**FAST, "demo_ttft_s": 0.0, "demo_tokens_per_s": 2000}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Gateways:
    keyed: GatewayProcess  # keys, a token secret, CORS, on a public address (allowed: it has keys)
    twin: GatewayProcess  # another replica with the same token secret, info logs
    lone: GatewayProcess  # keys, no token secret (a random one), debug logs
    open: GatewayProcess  # no keys on a public address with ALLOW_OPEN=1, prompts logged


@pytest.fixture(scope="module")
def gateways() -> Iterator[Gateways]:
    keys = {**QUICK, "api_keys": f"{KEY},{OTHER}"}
    gws = Gateways(
        keyed=GatewayProcess({**keys, "token_secret": SECRET, "cors_origins": "https://app.example",
                              "host": "0.0.0.0"}),
        twin=GatewayProcess({**keys, "token_secret": SECRET, "log_level": "info"}),
        lone=GatewayProcess({**keys, "log_level": "debug"}),
        open=GatewayProcess({**QUICK, "host": "0.0.0.0", "allow_open": "1", "log_prompts": "1", "log_level": "info"}),
    )
    start_all(gws.keyed, gws.twin, gws.lone, gws.open)
    yield gws
    for gw in (gws.keyed, gws.twin, gws.lone, gws.open):
        gw.stop()


@pytest.fixture
def keyed(gateways: Gateways) -> GatewayProcess:
    return gateways.keyed


def post_stream(gw: GatewayProcess, prompt: str = "hello", headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/stream", content=chat_body(prompt), params=params,
                      headers={"content-type": "application/json", **(headers or {})}, timeout=15)


def get_chat(gw: GatewayProcess, **params: str) -> tuple[httpx.Response, list[Any]]:
    with httpx.stream("GET", gw.url + "/chat", params=params, timeout=15) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, collect_events(resp)


def token_for(gw: GatewayProcess, key: str = KEY, scope: str | None = "stream") -> str:
    """A stream token; ``scope`` goes in the body (``None``: an empty body, the default scope)."""
    body_in = None if scope is None else json.dumps({"scope": scope})
    resp = httpx.post(gw.url + "/v1/auth/token", headers={**bearer(key), "content-type": "application/json"},
                      content=body_in, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "stream" and body["expires_in"] == 300
    assert body["scope"] == (scope or "resume")
    assert resp.headers["cache-control"] == "no-store"
    return str(body["token"])


def assert_unauthorized(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"]["code"] == "unauthorized"
    assert resp.json()["error"]["retryable"] is False


# --- keys -------------------------------------------------------------------------------------------------------
def test_missing_key_is_401(keyed: GatewayProcess) -> None:
    assert_unauthorized(post_stream(keyed))
    assert_unauthorized(get_chat(keyed, q="hi")[0])
    assert_unauthorized(httpx.post(keyed.url + "/v1/auth/token", timeout=10))
    assert_unauthorized(httpx.get(keyed.url + "/v1/streams/abc", timeout=10))


def test_wrong_key_is_401(keyed: GatewayProcess) -> None:
    assert_unauthorized(post_stream(keyed, headers=bearer(KEY + "x")))
    assert_unauthorized(post_stream(keyed, headers=bearer(KEY[:-1])))
    assert_unauthorized(post_stream(keyed, headers={"X-API-Key": "nope"}))
    assert_unauthorized(post_stream(keyed, headers={"Authorization": f"Basic {KEY}"}))


def test_right_key_streams(keyed: GatewayProcess) -> None:
    for headers in (bearer(KEY), bearer(OTHER), {"X-API-Key": KEY}):
        resp = post_stream(keyed, script(["a", "b"]), headers=headers)
        assert resp.status_code == 200
        events = list(sse_events(iter([resp.text])))
        assert [e.event for e in events] == ["start", "message", "message", "done"]


def test_a_key_in_the_url_is_not_accepted(keyed: GatewayProcess) -> None:
    """Long-lived keys never go into URLs: neither as ?token= nor as any other parameter."""
    assert_unauthorized(get_chat(keyed, q="hi", token=KEY)[0])
    assert_unauthorized(get_chat(keyed, q="hi", api_key=KEY)[0])
    assert_unauthorized(get_chat(keyed, q="hi", key=KEY)[0])


# --- browser stream tokens --------------------------------------------------------------------------------------
def test_token_from_post_opens_an_eventsource_stream_and_its_resume(keyed: GatewayProcess) -> None:
    token = token_for(keyed)
    assert KEY not in token
    resp, events = get_chat(keyed, q=script(["to", "ken"]), token=token)
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "message", "message", "done"]
    sid = events[0].json()["stream_id"]

    # the token resumes the stream (EventSource reconnect) ...
    with httpx.stream("GET", f"{keyed.url}/v1/streams/{sid}", params={"after": "1", "token": token},
                      timeout=15) as again:
        assert again.status_code == 200
        assert [e.json()["delta"] for e in collect_events(again)[:2]] == ["to", "ken"]
    # ... and so does the key it was issued for (same owner), while another key does not see it
    assert httpx.get(f"{keyed.url}/v1/streams/{sid}", params={"after": "1"}, headers=bearer(KEY),
                     timeout=10).status_code == 200
    other = httpx.get(f"{keyed.url}/v1/streams/{sid}", params={"after": "1"}, headers=bearer(OTHER), timeout=10)
    assert other.status_code == 404
    assert httpx.get(f"{keyed.url}/v1/streams/{sid}", params={"after": "1", "token": token_for(keyed, OTHER)},
                     timeout=10).status_code == 404


def test_token_is_for_get_streams_only(keyed: GatewayProcess) -> None:
    """A token cannot start POST streams, cancel, mint a new token (it would never expire), or call other GETs."""
    token = token_for(keyed)
    assert_unauthorized(post_stream(keyed, params={"token": token}))
    assert_unauthorized(httpx.post(keyed.url + "/v1/auth/token", params={"token": token}, timeout=10))
    assert_unauthorized(httpx.post(keyed.url + "/v1/streams/abc/cancel", params={"token": token}, timeout=10))
    assert_unauthorized(httpx.post(keyed.url + "/v1/auth/token", headers=bearer(token), timeout=10))
    models = httpx.get(keyed.url + "/v1/models", params={"token": token}, timeout=10)
    assert models.status_code == 401 and models.json()["error"]["code"] == "unauthorized"  # OpenAI's error shape


def test_forged_expired_and_revoked_tokens_are_401(keyed: GatewayProcess) -> None:
    good = token_for(keyed)
    sig = good.rsplit(".", 1)[1]
    tampered = good[: -len(sig)] + ("A" if sig[0] != "A" else "B") + sig[1:]
    shared = Settings(token_secret=SECRET)
    owner = fingerprint(KEY, shared)
    expired, _ = issue_token(owner, shared, scope="stream", now=time.time() - shared.token_ttl_s - 1)
    foreign, _ = issue_token(owner, Settings(token_secret="another-secret-entirely-and-long-enough"), scope="stream")
    revoked, _ = issue_token(fingerprint("sk-a-key-that-was-removed", shared), shared, scope="stream")
    valid, _ = issue_token(owner, shared, scope="stream")
    for bad in (tampered, expired, foreign, revoked, "v1.e30.", "garbage", good + "x"):
        assert_unauthorized(get_chat(keyed, q="hi", token=bad)[0])
    assert get_chat(keyed, q=script(["ok"]), token=valid)[0].status_code == 200


def test_replicas_accept_each_others_tokens_only_with_a_shared_secret(gateways: Gateways) -> None:
    keyed, twin, lone = gateways.keyed, gateways.twin, gateways.lone
    token = token_for(keyed)
    assert get_chat(twin, q=script(["x"]), token=token)[0].status_code == 200
    assert_unauthorized(get_chat(lone, q=script(["x"]), token=token)[0])
    # without a configured secret each process signs with its own random one
    assert get_chat(lone, q=script(["x"]), token=token_for(lone))[0].status_code == 200
    assert_unauthorized(get_chat(keyed, q=script(["x"]), token=token_for(lone))[0])


def test_a_token_resumes_only_unless_minted_for_streams(keyed: GatewayProcess) -> None:
    """A token from an empty POST resumes the caller's streams (GET /v1/streams/{id}, and GET /chat with
    Last-Event-ID, as EventSource reconnects) but cannot start one: a token leaked from a URL spends nothing."""
    resume_only = token_for(keyed, scope=None)
    denied = get_chat(keyed, q=script(["no"]), token=resume_only)[0]
    assert_unauthorized(denied)
    assert '{"scope": "stream"}' in denied.json()["error"]["message"]

    started = post_stream(keyed, script(["re", "sume"]), headers=bearer(KEY))
    sid = started.headers["x-stream-id"]
    with httpx.stream("GET", f"{keyed.url}/v1/streams/{sid}", params={"after": "1", "token": resume_only},
                      timeout=15) as again:
        assert again.status_code == 200
        assert [e.json()["delta"] for e in collect_events(again)[:2]] == ["re", "sume"]
    with httpx.stream("GET", keyed.url + "/chat", params={"token": resume_only},
                      headers={"Last-Event-ID": f"{sid}:2"}, timeout=15) as reconnect:
        assert reconnect.status_code in (200, 204)  # 204: the terminal event was delivered already
    assert get_chat(keyed, q=script(["yes"]), token=token_for(keyed, scope="stream"))[0].status_code == 200
    forged_scope, _ = issue_token(fingerprint(KEY, Settings(token_secret=SECRET)), Settings(token_secret=SECRET))
    assert_unauthorized(get_chat(keyed, q=script(["no"]), token=forged_scope)[0])


def test_a_token_scope_must_be_known(keyed: GatewayProcess) -> None:
    for body in ({"scope": "admin"}, {"scope": "stream", "ttl": 99999}):
        resp = httpx.post(keyed.url + "/v1/auth/token", headers=bearer(KEY), json=body, timeout=10)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "invalid_request"


# --- fingerprints -------------------------------------------------------------------------------------------------
def test_fingerprints_are_keyed_by_the_server_secret(gateways: Gateways) -> None:
    """A stream's owner (logged, and kept in Redis) is an HMAC of the key under the server secret, not a bare hash:
    whoever reads it cannot test guesses of the key offline. Replicas with one secret agree on it."""
    bare = "key:" + hashlib.sha256(KEY.encode()).hexdigest()[:24]
    shared = fingerprint(KEY, Settings(token_secret=SECRET))
    assert shared != bare
    assert shared == fingerprint(KEY, Settings(token_secret=SECRET))
    assert shared != fingerprint(KEY, Settings(token_secret=SECRET + "-rotated"))
    assert fingerprint(KEY, Settings()) != shared  # no secret: this process's random one

    gw = gateways.twin
    assert post_stream(gw, script(["fp"]), headers=bearer(KEY)).status_code == 200
    deadline = time.monotonic() + 10
    while '"stream ended"' not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.02)  # the line is written as the stream ends; bounded polling
    owners = {json.loads(line).get("owner") for line in gw.log().splitlines() if '"stream ended"' in line}
    assert owners == {shared}


# --- CORS ---------------------------------------------------------------------------------------------------------
def test_cors_allows_only_the_listed_origins(keyed: GatewayProcess) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(keyed.url + "/v1/chat/stream", timeout=10, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    ok = preflight("https://app.example")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    bad = preflight("https://evil.example")
    assert bad.status_code == 400
    assert "access-control-allow-origin" not in bad.headers
    token = token_for(keyed)
    with httpx.stream("GET", keyed.url + "/chat", params={"q": script(["c"]), "token": token},
                      headers={"Origin": "https://app.example"}, timeout=15) as resp:
        assert resp.headers["access-control-allow-origin"] == "https://app.example"
        assert "X-Stream-Id" in resp.headers["access-control-expose-headers"]


# --- binding a public address -------------------------------------------------------------------------------------
def serve_public(env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
    env.update(env_extra)
    return subprocess.Popen([sys.executable, "-m", "ssegate", "serve", "--host", "0.0.0.0", "--port",
                             str(free_port())], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_public_address_without_keys_is_refused() -> None:
    procs = [serve_public({}), serve_public({"SSEGATE_ALLOW_OPEN": "0", "SSEGATE_API_KEYS": " , "})]
    for proc in procs:
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 2, out
        assert b"refusing to serve on 0.0.0.0 without SSEGATE_API_KEYS" in out


def test_a_public_address_is_served_with_keys_or_allow_open(gateways: Gateways) -> None:
    for gw in (gateways.keyed, gateways.open):
        assert gw.settings["host"] == "0.0.0.0"
        assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200


# --- keys stay out of the logs ------------------------------------------------------------------------------------
PROMPT = "a-distinctive-prompt-zebra-quartz"


def output_after_exit(gw: GatewayProcess) -> str:
    gw.signal(signal.SIGTERM)
    gw.wait(15)
    return gw.log()


def test_keys_and_prompts_never_appear_in_the_server_output(gateways: Gateways) -> None:
    """Ends the module's ``lone`` gateway to read all it wrote (these last tests stop the gateways they use)."""
    gw = gateways.lone
    assert post_stream(gw, script(["a"]), headers=bearer(KEY)).status_code == 200
    assert post_stream(gw, PROMPT, headers=bearer(KEY)).status_code == 200
    assert_unauthorized(post_stream(gw, headers=bearer(KEY + "-wrong")))
    assert get_chat(gw, q=script(["b"], fail_at=0), token=token_for(gw))[0].status_code == 502
    assert_unauthorized(get_chat(gw, q="hi", token=KEY)[0])
    out = output_after_exit(gw)
    assert '"msg":"stream ended"' in out  # the server did log these requests (JSON lines) ...
    for secret in (KEY, KEY + "-wrong", KEY[8:20]):  # ... without the key, even a wrong one, or a piece of it
        assert secret not in out
    assert PROMPT not in out


def test_prompts_are_logged_only_when_enabled(gateways: Gateways) -> None:
    gw = gateways.open
    assert post_stream(gw, PROMPT).status_code == 200
    assert PROMPT in output_after_exit(gw)
