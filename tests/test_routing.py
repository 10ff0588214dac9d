"""Many models, many upstreams (CONTRACT §9), end to end: real ``ssegate serve`` processes with a routing file in
front of real fake upstreams (two OpenAI-compatible, one Anthropic) on loopback.

Each model name reaches its upstream with its upstream model name and its key; wildcards send the suffix; an
unknown model is a 404 the OpenAI SDK raises as ``NotFoundError``; keys limited to some models see only those. A
group of two spreads concurrent streams, skips a stopped deployment without a client-visible error and takes it
back after the cooldown. Fallbacks cross providers before the first token, never after it. ``SIGHUP`` swaps the
table under a running stream (also with ``--workers 2``), and a broken file keeps the old one.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ssegate.sse import ServerSentEvent
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import GatewayProcess, collect_events, free_port, sse_events
from tests.support.redis import RedisServer

MakeGateway = Callable[..., GatewayProcess]
HANG = 20.0  # seconds: only catches a hang

KEYS = {"KEY_A": "sk-route-a-0123456789", "KEY_B": "sk-route-b-0123456789", "KEY_C": "sk-ant-route-c-0123456789",
        "TEAM_A_KEY": "team-a-route-0123456789"}
ADMIN = "admin-route-0123456789"


def label(up: FakeUpstream, kind: str = "openai") -> str:
    return f"{kind}:127.0.0.1:{up.port}/v1"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def body(model: str | None, content: str, **extra: Any) -> bytes:
    b: dict[str, Any] = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        b["model"] = model
    return orjson.dumps(b)


def stream(gw: GatewayProcess, model: str | None, content: str, *, key: str | None = None,
           **extra: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    with httpx.stream("POST", gw.url + "/v1/chat/stream", content=body(model, content, **extra), headers=headers,
                      timeout=HANG) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, collect_events(resp)


def text(events: list[ServerSentEvent]) -> str:
    return "".join(e.json()["delta"] for e in events if e.event == "message")


def sent(up: FakeUpstream, marker: str) -> list[Any]:
    """The requests ``up`` received whose body holds ``marker``."""
    return [r for r in up.records() if marker in r.request_body.decode()]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(gw: GatewayProcess) -> Samples:
    resp = httpx.get(gw.url + "/metrics", timeout=10, headers={"authorization": f"Bearer {ADMIN}"})
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    return scrape(gw).get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(what: str, check: Callable[[], bool], timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)  # polling another process's state; bounded


# --- three upstreams, one gateway ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three() -> Iterator[tuple[FakeUpstream, FakeUpstream, FakeUpstream]]:
    with FakeUpstream() as a, FakeUpstream() as b, FakeUpstream(kind="anthropic") as c:
        yield a, b, c


@pytest.fixture(scope="module")
def routed(three: tuple[FakeUpstream, FakeUpstream, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[GatewayProcess]:
    a, b, c = three
    path = write(tmp_path_factory.mktemp("routing") / "models.toml", f"""
[[models]]
name = "fast"
provider = "openai"
url = "{a.url}"
api_key = "${{KEY_A}}"
upstream_model = "gpt-4o-mini"

[[models]]
name = "smart"
provider = "openai"
url = "{b.url}"
api_key = "${{KEY_B}}"
upstream_model = "gpt-4o"

[[models]]
name = "claude"
provider = "anthropic"
url = "{c.url}"
api_key = "${{KEY_C}}"
upstream_model = "claude-sonnet-4-5"

[[models]]
name = "local/*"
provider = "openai"
url = "{b.url}"

[[keys]]
key = "${{TEAM_A_KEY}}"
models = ["fast", "local/*"]
""")
    from tests.conftest import FAST

    with GatewayProcess({**FAST, "config": path, "api_keys": ADMIN, "log_level": "info"}, environ=KEYS) as gw:
        yield gw


@pytest.mark.parametrize(("model", "which", "upstream_model", "key"), [
    ("fast", 0, "gpt-4o-mini", "KEY_A"),
    ("smart", 1, "gpt-4o", "KEY_B"),
    ("claude", 2, "claude-sonnet-4-5", "KEY_C"),
    ("local/llama3.2", 1, "llama3.2", None),
    ("local/qwen2.5:7b", 1, "qwen2.5:7b", None),
    (None, 0, "gpt-4o-mini", "KEY_A"),  # no model: the first entry
])
def test_each_model_reaches_its_upstream_with_its_name_and_key(
    routed: GatewayProcess, three: tuple[FakeUpstream, FakeUpstream, FakeUpstream], model: str | None, which: int,
    upstream_model: str, key: str | None,
) -> None:
    up = three[which]
    prompt = up.script(Script(deltas=["routed ", "here"]))
    resp, events = stream(routed, model, prompt, key=ADMIN)
    assert resp.status_code == 200
    assert text(events) == "routed here"
    assert events[0].json()["model"] == (model or "fast")
    [rec] = up.records(prompt)
    assert rec.request_json["model"] == upstream_model
    kind = "anthropic" if up.kind == "anthropic" else "openai"
    if kind == "anthropic":
        assert rec.headers["x-api-key"] == KEYS["KEY_C"]
        assert "authorization" not in rec.headers
    elif key is None:
        assert "authorization" not in rec.headers
    else:
        assert rec.headers["authorization"] == f"Bearer {KEYS[key]}"
    entry = "local/*" if model and model.startswith("local/") else (model or "fast")
    assert resp.headers["x-ssegate-model"] == entry
    assert resp.headers["x-ssegate-deployment"] == label(up, kind)
    for other in three:
        if other is not up:
            assert other.records(prompt) == []


def test_unknown_model_is_a_404_the_openai_sdk_raises_as_not_found(routed: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=routed.url + "/v1", api_key=ADMIN, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert info.value.code == "model_not_found"
    assert "GET /v1/models" in info.value.message
    resp, _ = stream(routed, "gpt-9", "hi", key=ADMIN)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    assert [m.id for m in client.models.list().data] == ["fast", "smart", "claude", "local/*"]
    assert client.models.retrieve("local/llama3.2").id == "local/llama3.2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_ssegate_chat_model_picks_the_routing_entry(routed: GatewayProcess,
                                                   three: tuple[FakeUpstream, FakeUpstream, FakeUpstream]) -> None:
    """``ssegate chat --model NAME`` asks for a name of the routing file (its upstream answers, with its own
    upstream model name); a name the gateway does not serve is the 404 that says where the names are, a client
    error (exit 2)."""
    import subprocess
    import sys

    up = three[1]
    prompt = up.script(Script(deltas=["chat ", "routed"]))
    done = subprocess.run([sys.executable, "-m", "ssegate", "chat", prompt, "--model", "smart", "--url", routed.url,
                           "--api-key", ADMIN], capture_output=True, text=True, timeout=HANG)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "chat routed"
    [rec] = up.records(prompt)
    assert rec.request_json["model"] == "gpt-4o"
    missing = subprocess.run([sys.executable, "-m", "ssegate", "chat", "hi", "--model", "gpt-9", "--url", routed.url,
                              "--api-key", ADMIN], capture_output=True, text=True, timeout=HANG)
    assert missing.returncode == 2, (missing.returncode, missing.stderr)
    assert "gpt-9" in missing.stderr and "GET /v1/models" in missing.stderr


def test_a_key_limited_to_some_models_sees_and_uses_only_those(
    routed: GatewayProcess, three: tuple[FakeUpstream, FakeUpstream, FakeUpstream]
) -> None:
    """A [[keys]] key is valid without being in SSEGATE_API_KEYS; another model is the same 404 as an unknown one."""
    team = openai.OpenAI(base_url=routed.url + "/v1", api_key=KEYS["TEAM_A_KEY"], max_retries=0)
    assert [m.id for m in team.models.list().data] == ["fast", "local/*"]
    a, b, _ = three
    prompt = a.script(Script(deltas=["ok"]))
    out = team.chat.completions.create(model="fast", messages=[{"role": "user", "content": prompt}])
    assert out.choices[0].message.content == "ok"
    local = b.script(Script(deltas=["local"]))
    resp, events = stream(routed, "local/phi", local, key=KEYS["TEAM_A_KEY"])
    assert resp.status_code == 200 and text(events) == "local"
    for forbidden in ("smart", "claude"):
        with pytest.raises(openai.NotFoundError) as info:
            team.chat.completions.create(model=forbidden, messages=[{"role": "user", "content": "hi"}])
        assert info.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            team.models.retrieve(forbidden)
    assert b.records(prompt) == [] and a.records(local) == []
    stranger = openai.OpenAI(base_url=routed.url + "/v1", api_key="not-a-key-0123456789", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_per_model_metrics_name_the_model_and_deployment(
    routed: GatewayProcess, three: tuple[FakeUpstream, FakeUpstream, FakeUpstream]
) -> None:
    a, _, c = three
    before = metric(routed, "ssegate_model_streams_total", model="claude", deployment=label(c, "anthropic"),
                    cause="done")
    resp, _ = stream(routed, "claude", c.script(Script(deltas=["x", "y"])), key=ADMIN)
    assert resp.status_code == 200
    resp, _ = stream(routed, "fast", a.script(Script(deltas=["z"])), key=ADMIN)  # so "fast" has an attempt, run alone
    assert resp.status_code == 200
    samples = scrape(routed)
    assert samples[("ssegate_model_streams_total", (("cause", "done"), ("deployment", label(c, "anthropic")),
                                                    ("model", "claude")))] == before + 1
    assert samples[("ssegate_deployment_in_flight", (("deployment", label(a)), ("model", "fast")))] == 0
    assert samples[("ssegate_deployment_attempts_total", (("deployment", label(a)), ("model", "fast")))] >= 1


def test_no_key_appears_in_the_log(routed: GatewayProcess, three: tuple[FakeUpstream, FakeUpstream, FakeUpstream]
                                   ) -> None:
    """Keys read through ${VAR} never reach a log line, even when an upstream fails (logged at warning/error)."""
    a = three[0]
    resp, _ = stream(routed, "fast", a.script(Script(status=500)), key=ADMIN)
    assert resp.status_code == 502
    log = routed.log()
    assert '"deployment"' in log  # the stream lines were written
    for secret in (*KEYS.values(), ADMIN):
        assert secret not in log


# --- credentials in an upstream URL --------------------------------------------------------------------------------
URL_PASSWORD = "pw-9f2Kq-url-s3cret"


def credentialed(url: str, user: str) -> str:
    """``url`` with ``user:URL_PASSWORD@`` in it."""
    return url.replace("://", f"://{user}:{URL_PASSWORD}@", 1)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_in_an_upstream_url_show_in_no_banner_header_metric_or_log(
    make_gateway: MakeGateway, upstream: FakeUpstream, log_format: str
) -> None:
    """``user:pass@`` in ``SSEGATE_UPSTREAM_URL`` or ``SSEGATE_FALLBACK_URLS`` never appears anywhere: not in the
    start-up banner (text) or its ``serving`` line (JSON), the ``X-Ssegate-Deployment`` header, the ``deployment``
    label of ``/metrics``, an error answer, or a log line about a failed attempt (``/readyz``: see
    ``tests/test_readyz.py``). The deployments are still named, by their URL without the credentials."""
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: each attempt there fails, then the fallback
    gw = make_gateway({"provider": "openai", "model": "fake-model", "upstream_url": credentialed(dead, "url-user-dead"),
                       "fallback_urls": credentialed(upstream.url, "url-user-live"), "log_format": log_format,
                       "log_level": "info"})
    live_label, dead_label = label(upstream), f"openai:{dead.split('://', 1)[1]}"

    resp, events = stream(gw, "fake-model", upstream.script(Script(deltas=["through ", "the fallback"])))
    assert resp.status_code == 200 and text(events) == "through the fallback"
    assert resp.headers["x-ssegate-deployment"] == live_label
    failed, _ = stream(gw, "fake-model", upstream.script(Script(status=500)))
    assert failed.status_code == 502

    metrics = httpx.get(gw.url + "/metrics", timeout=HANG)
    assert metrics.status_code == 200
    deployments = {s.labels.get("deployment") for family in text_string_to_metric_families(metrics.text)
                   for s in family.samples} - {None}
    assert {live_label, dead_label} <= deployments
    log = gw.log()
    if log_format == "text":
        assert re.search(rf"model\s+fake-model\s+openai \({re.escape(dead)} then {re.escape(upstream.url)}\)", log), log
    else:
        serving = next(orjson.loads(line) for line in log.splitlines() if '"msg":"serving"' in line)
        assert serving["upstreams"] == [{"model": "fake-model", "provider": "openai", "url": f"{dead} then "
                                         f"{upstream.url}"}]
    shown = [str(dict(resp.headers)), str(dict(failed.headers)), failed.text, metrics.text, log,
             *(e.data for e in events)]
    for where in shown:
        for secret in (URL_PASSWORD, "url-user-dead", "url-user-live"):
            assert secret not in where, where


def test_a_routing_file_url_with_credentials_is_refused_without_printing_them(
    make_gateway: MakeGateway, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A ``[[models]]`` ``url`` may not hold credentials (they go in ``api_key``), also when ``${VAR}`` brings them
    in: ``ssegate serve`` refuses the file at start-up, and a ``SIGHUP`` reload refuses it and keeps the table, each
    in a message that names the entry and not the URL's user or password."""
    environ = {"CRED_URL": credentialed(upstream.url, "url-user-file")}
    entry = '[[models]]\nname = "m"\nprovider = "openai"\nurl = "{url}"\n'
    path = write(tmp_path / "models.toml", entry.format(url="${CRED_URL}"))
    refused = GatewayProcess({"config": path}, environ=environ)
    proc = subprocess.run([sys.executable, "-m", "ssegate", "serve"], env=refused.env(), capture_output=True,
                          text=True, timeout=HANG)
    assert proc.returncode == 2, proc.stderr
    assert "[[models]] entry 1 (name 'm'): url: put credentials in api_key" in proc.stderr
    assert URL_PASSWORD not in proc.stderr + proc.stdout and "url-user-file" not in proc.stderr + proc.stdout

    write(tmp_path / "models.toml", entry.format(url=upstream.url))
    gw = make_gateway({"config": path, "log_level": "info"}, environ=environ)
    write(tmp_path / "models.toml", entry.format(url="${CRED_URL}"))
    gw.signal(signal.SIGHUP)
    wait_for("the refusal", lambda: metric(gw, "ssegate_routing_reloads_total", result="refused") == 1)
    resp, events = stream(gw, "m", upstream.script(Script(deltas=["kept"])))
    assert resp.status_code == 200 and text(events) == "kept"
    assert resp.headers["x-ssegate-deployment"] == label(upstream)
    log = gw.log()
    assert "url: put credentials in api_key" in log
    assert URL_PASSWORD not in log and "url-user-file" not in log


# --- a group of two ------------------------------------------------------------------------------------------------
def test_a_group_spreads_streams_skips_a_dead_deployment_and_takes_it_back(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    answer = Script(deltas=["a", "b", "c", "d"], delay=0.1)
    with FakeUpstream(default=answer) as one, FakeUpstream(default=answer) as two:
        path = write(tmp_path / "models.toml", f"""
[[models]]
name = "fast"
provider = "openai"
url = "{one.url}"

[[models]]
name = "fast"
provider = "openai"
url = "{two.url}"
""")
        cooldown = 4.0
        gw = make_gateway({"config": path, "cooldown_failures": 2, "cooldown_window_s": 30,
                           "cooldown_s": cooldown, "commit_timeout_s": 5.0})
        marker = uuid.uuid4().hex

        async def burst(n: int) -> list[int]:
            async with httpx.AsyncClient(timeout=HANG) as client:
                async def one_stream(i: int) -> int:
                    async with client.stream("POST", gw.url + "/v1/chat/stream", content=body(
                            "fast", f"{marker} {i}"), headers={"content-type": "application/json"}) as resp:
                        events = list(sse_events([c async for c in resp.aiter_text()]))
                        assert text(events) == "abcd"
                        return resp.status_code
                return await asyncio.gather(*(one_stream(i) for i in range(n)))

        assert asyncio.run(burst(20)) == [200] * 20
        on_one, on_two = len(sent(one, marker)), len(sent(two, marker))
        assert on_one + on_two == 20
        assert min(on_one, on_two) >= 7, (on_one, on_two)  # least busy: about 10 each

        # the second deployment goes away: no client sees it
        port = two.port
        two.stop()
        quick = Script(deltas=["ok"])
        one.default = quick
        before_cooling = time.monotonic()
        for i in range(20):
            resp, events = stream(gw, "fast", f"dead {i}")
            assert resp.status_code == 200 and text(events) == "ok"
            assert resp.headers["x-ssegate-deployment"] == label(one)
            if metric(gw, "ssegate_deployment_cooling_down", model="fast", deployment=f"openai:127.0.0.1:{port}/v1"):
                break
            before_cooling = time.monotonic()
        else:
            raise AssertionError("the dead deployment never cooled down")
        dead = f"openai:127.0.0.1:{port}/v1"
        attempts = metric(gw, "ssegate_deployment_attempts_total", model="fast", deployment=dead)
        for i in range(6):  # while it cools down it is not even tried
            resp, events = stream(gw, "fast", f"cooling {i}")
            assert resp.status_code == 200 and text(events) == "ok"
        assert metric(gw, "ssegate_deployment_attempts_total", model="fast", deployment=dead) == attempts
        assert metric(gw, "ssegate_deployment_errors_total", model="fast", deployment=dead,
                      code="upstream_error") >= 2

        # back on the same port: after the cooldown a trial stream goes there, and then traffic again
        with FakeUpstream(default=quick, port=port) as back:
            marker = uuid.uuid4().hex
            deadline = time.monotonic() + cooldown + HANG
            while not sent(back, marker):
                assert time.monotonic() < deadline, "the deployment never got traffic again"
                resp, events = stream(gw, "fast", f"{marker} probe")
                assert resp.status_code == 200 and text(events) == "ok"
            assert time.monotonic() - before_cooling >= cooldown * 0.95
            wait_for("the cooldown closed",
                     lambda: not metric(gw, "ssegate_deployment_cooling_down", model="fast", deployment=dead))
            for i in range(6):
                resp, _ = stream(gw, "fast", f"{marker} after {i}")
                assert resp.status_code == 200
            assert len(sent(back, marker)) >= 3  # round-robin between the two again


# --- fallbacks across providers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def with_fallbacks(upstream: FakeUpstream, anthropic_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[GatewayProcess, FakeUpstream]]:
    from tests.conftest import FAST

    with FakeUpstream() as backup:
        path = write(tmp_path_factory.mktemp("fallbacks") / "models.toml", f"""
[[models]]
name = "fast"
provider = "openai"
url = "{upstream.url}"
upstream_model = "gpt-4o-mini"
fallbacks = ["claude", "backup"]

[[models]]
name = "claude"
provider = "anthropic"
url = "{anthropic_upstream.url}"
api_key = "${{KEY_C}}"
upstream_model = "claude-sonnet-4-5"

[[models]]
name = "backup"
provider = "openai"
url = "{backup.url}"
""")
        # the primary fails on purpose in every test here: it must not cool down between them
        with GatewayProcess({**FAST, "config": path, "cooldown_failures": 1000}, environ=KEYS) as gw:
            yield gw, backup


def test_fallback_to_another_provider_before_the_first_token(
    with_fallbacks: tuple[GatewayProcess, FakeUpstream], upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    gw, backup = with_fallbacks
    prompt = upstream.script(Script(status=503)) + " " + anthropic_upstream.script(Script(deltas=["from ", "claude"]))
    resp, events = stream(gw, "fast", prompt)
    assert resp.status_code == 200
    assert [e.event for e in events] == ["start", "message", "message", "done"]
    assert text(events) == "from claude"
    assert resp.headers["x-ssegate-model"] == "claude"
    assert resp.headers["x-ssegate-deployment"] == label(anthropic_upstream, "anthropic")
    assert [r.status for r in sent(upstream, prompt)] == [503, 503, 503]  # RETRY_ATTEMPTS, then the fallback
    [rec] = sent(anthropic_upstream, prompt)
    assert rec.request_json["model"] == "claude-sonnet-4-5"
    assert rec.headers["x-api-key"] == KEYS["KEY_C"]
    assert sent(backup, prompt) == []


def test_no_fallback_after_the_first_token(
    with_fallbacks: tuple[GatewayProcess, FakeUpstream], upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    """A failure mid-stream is a typed error event: a fallback would repeat what the client already has."""
    gw, backup = with_fallbacks
    prompt = upstream.script(Script(deltas=["one ", "two ", "three"], fault=Fault.RESET, fault_after=2))
    resp, events = stream(gw, "fast", prompt)
    assert resp.status_code == 200
    assert resp.headers["x-ssegate-model"] == "fast"
    assert [e.event for e in events] == ["start", "message", "message", "error"]
    assert text(events) == "one two "
    assert events[-1].json()["error"]["code"] == "upstream_error"
    assert len(sent(upstream, prompt)) == 1
    assert sent(anthropic_upstream, prompt) == [] and sent(backup, prompt) == []


def test_a_fallback_that_cannot_honour_the_request_is_skipped(
    with_fallbacks: tuple[GatewayProcess, FakeUpstream], upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    """``seed`` is relayed to OpenAI-compatible upstreams but refused by the Anthropic provider: the fallback to
    Claude is skipped, and the next one answers."""
    gw, backup = with_fallbacks
    prompt = upstream.script(Script(status=500)) + " " + backup.script(Script(deltas=["backup"]))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": prompt}], seed=7)
    assert raw.parse().choices[0].message.content == "backup"
    assert raw.headers["x-ssegate-model"] == "backup"
    assert sent(anthropic_upstream, prompt) == []
    [rec] = sent(backup, prompt)
    assert rec.request_json["model"] == "backup" and rec.request_json["seed"] == 7


# --- SIGHUP --------------------------------------------------------------------------------------------------------
class Background:
    """A stream read in a thread; ``first`` is set once its first delta arrived."""

    def __init__(self, gw: GatewayProcess, model: str, content: str) -> None:
        self.first = threading.Event()
        self.events: list[ServerSentEvent] = []
        self.headers: dict[str, str] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(gw, model, content), daemon=True)
        self.thread.start()

    def _run(self, gw: GatewayProcess, model: str, content: str) -> None:
        try:
            with httpx.stream("POST", gw.url + "/v1/chat/stream", content=body(model, content),
                              headers={"content-type": "application/json"}, timeout=HANG) as resp:
                self.headers = dict(resp.headers)
                for event in sse_events(resp.iter_text()):
                    self.events.append(event)
                    if event.event == "message":
                        self.first.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.first.set()

    def result(self) -> list[ServerSentEvent]:
        self.thread.join(HANG)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.events


ONE_TO_A = """
[[models]]
name = "one"
provider = "openai"
url = "{a}"
"""
TWO_TO_B = """
[[models]]
name = "two"
provider = "openai"
url = "{b}"
upstream_model = "two-upstream"
"""


def test_sighup_swaps_the_table_under_a_running_stream(make_gateway: MakeGateway, tmp_path: Path) -> None:
    slow = Script(deltas=[f"{i} " for i in range(12)], delay=0.15)
    with FakeUpstream(default=slow) as a, FakeUpstream() as b:
        path = tmp_path / "models.toml"
        write(path, ONE_TO_A.format(a=a.url))
        gw = make_gateway({"config": str(path)})
        running = Background(gw, "one", "a long answer")
        assert running.first.wait(HANG)

        write(path, TWO_TO_B.format(b=b.url))
        gw.signal(__import__("signal").SIGHUP)
        wait_for("the reload", lambda: metric(gw, "ssegate_routing_reloads_total", result="ok") == 1)
        prompt = b.script(Script(deltas=["new ", "table"]))
        resp, events = stream(gw, "two", prompt)
        assert resp.status_code == 200 and text(events) == "new table"
        assert resp.headers["x-ssegate-deployment"] == label(b)
        assert b.records(prompt)[0].request_json["model"] == "two-upstream"
        resp, _ = stream(gw, "one", "gone")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"

        events = running.result()  # the running stream finished where it started
        assert [e.event for e in events][-1] == "done"
        assert text(events) == "".join(slow.deltas)
        assert running.headers["x-ssegate-deployment"] == label(a)

        # a file that does not load is refused; the table stays
        write(path, TWO_TO_B.format(b=b.url) + 'colour = "red"\n')
        gw.signal(__import__("signal").SIGHUP)
        wait_for("the refusal", lambda: metric(gw, "ssegate_routing_reloads_total", result="refused") == 1)
        assert metric(gw, "ssegate_routing_reloads_total", result="ok") == 1
        resp, events = stream(gw, "two", b.script(Script(deltas=["still"])))
        assert resp.status_code == 200 and text(events) == "still"
        assert [m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=HANG).json()["data"]] == ["two"]
        assert gw.proc is not None and gw.proc.poll() is None


def test_sighup_reloads_every_worker(make_gateway: MakeGateway, tmp_path: Path) -> None:
    """``--workers 2``: the supervisor forwards SIGHUP to its workers, which reload in place (same processes), and
    a running stream is not cut (uvicorn's own SIGHUP would replace the workers, ending it after the grace)."""
    with RedisServer() as redis:
        path = tmp_path / "models.toml"
        write(path, '[[models]]\nname = "one"\nprovider = "demo"\n')
        gw = make_gateway({"config": str(path), "workers": 2, "redis_url": redis.url, "shutdown_grace_s": 0.5})
        assert gw.proc is not None
        def workers() -> set[int]:
            found = set()
            for child in psutil.Process(gw.proc.pid).children():  # type: ignore[union-attr]
                try:
                    if "spawn_main" in " ".join(child.cmdline()):
                        found.add(child.pid)
                except psutil.Error:  # exited (a zombie until reaped): not a worker any more
                    pass
            return found

        def handles_sighup(pid: int) -> bool:
            """The worker's gateway has installed its SIGHUP handler (bit 0 of SigCgt): before that, a starting
            worker dies of the signal and is replaced, by design (see ReloadingMultiprocess)."""
            status = Path(f"/proc/{pid}/status").read_text()
            caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
            return bool(caught & 1)

        wait_for("two workers", lambda: len(workers()) == 2)
        wait_for("both workers handle SIGHUP", lambda: all(handles_sighup(pid) for pid in workers()))
        before = workers()
        deltas = [f"{i} " for i in range(15)]
        running = Background(gw, "one", "/script " + orjson.dumps({"deltas": deltas, "delay": 0.2}).decode())
        assert running.first.wait(HANG)

        write(path, '[[models]]\nname = "two"\nprovider = "demo"\n')
        gw.signal(__import__("signal").SIGHUP)

        def all_reloaded() -> bool:
            for _ in range(20):  # a new connection each time: either worker may answer
                ids = [m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=HANG).json()["data"]]
                if ids != ["two"]:
                    return False
            return True

        wait_for("every worker serves the new table", all_reloaded)
        events = running.result()
        assert [e.event for e in events][-1] == "done"
        assert text(events) == "".join(deltas)
        assert workers() == before  # reloaded in place, not restarted
