"""Redis mode's background loops run supervised (``cluster/supervise.py``).

A loop that fails on something it did not expect (a bug, a Redis reply it does not handle) is logged with its
traceback, started again with exponential backoff, and reported as down meanwhile: ``/readyz`` says which, and
new streams are refused while the writer or the lease is down. Before supervision such a loop ended its task
silently and for good: no more mirroring, no more lease, no more cancels heard, or a probe that never brought
Redis back, all while ``/readyz`` said ``ok``.

Three levels: the supervisor alone; each real loop (``RedisEventLog`` and ``Replicas`` inside the test's own
event loop, against a real redis-server) with a failure injected once; and two real ``ssegate serve`` replicas
whose Redis connections are killed from the server side.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis

from ssegate.cluster.redis_log import ctl_channel, events_key, replica_key
from ssegate.cluster.replicas import Replicas
from ssegate.cluster.supervise import Supervisor
from ssegate.core.entries import DELTA, START
from ssegate.errors import EventLogUnavailable
from ssegate.settings import Settings
from tests.fakes import FakeUpstream, Script
from tests.support.gateway import GatewayProcess, sse_events
from tests.support.redis import RedisServer
from tests.support.resume import assert_whole, auth, resume, start
from tests.test_redis import COMMON, open_stream, take, words

LEASE_S = 1.0
SUPERVISOR_LOG = "ssegate.cluster.supervise"


# --- the supervisor alone -----------------------------------------------------------------------------------
async def until(check: Callable[[], Any], what: str, within: float = 10.0) -> Any:
    """Poll ``check()`` until it is truthy; the bound only catches a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if result:
            return result
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.005)


async def test_a_failing_loop_restarts_with_doubling_backoff_reset_after_a_healthy_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = Supervisor(initial_s=0.02, max_s=0.08, healthy_after_s=0.4)
    loop = asyncio.get_running_loop()
    starts: list[tuple[float, float, dict[str, str]]] = []  # when, the backoff just waited, what was down then

    async def body() -> None:
        child = sup.child("x")
        assert child is not None
        starts.append((loop.time(), child.delay, sup.down))
        n = len(starts)
        if n <= 5:
            raise RuntimeError(f"failure {n}")
        if n == 6:
            await asyncio.sleep(0.5)  # longer than healthy_after_s, then fails again
            raise RuntimeError("failure after a healthy run")
        await asyncio.Event().wait()

    downs: list[dict[str, str]] = []
    with caplog.at_level(logging.ERROR, logger=SUPERVISOR_LOG):
        sup.spawn("x", body)
        sup.spawn("x", body)  # already running: nothing
        await until(lambda: downs.append(sup.down) or len(starts) == 7, "seven starts")
    delays = [round(d, 3) for _, d, _ in starts]
    assert delays == [0, 0.02, 0.04, 0.08, 0.08, 0.08, 0.02]
    for (before, _, _), (after, waited, _) in itertools.pairwise(starts):
        assert after - before >= waited
    assert starts[6][0] - starts[5][0] >= 0.5 + 0.02
    child = sup.child("x")
    assert child is not None and child.restarts == 6 and sup.down == {} and sup.running("x")
    assert {"x": "RuntimeError"} in downs  # down while waiting to restart; up again once restarted
    assert all(s[2] == {} for s in starts)
    failures = [r for r in caplog.records if r.name == SUPERVISOR_LOG]
    assert len(failures) == 6 and all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    await sup.stop()
    assert not sup.running("x") and sup.child("x") is None


async def test_a_loop_that_returns_ends_and_stop_cancels_one_waiting_to_restart() -> None:
    sup = Supervisor(initial_s=5.0)
    ran: list[str] = []

    async def once() -> None:
        ran.append("once")

    async def broken() -> None:
        raise ValueError("bug")

    sup.spawn("once", once)
    sup.spawn("broken", broken)
    await until(lambda: not sup.running("once") and sup.down, "the first to end, the second to fail")
    assert ran == ["once"] and sup.down == {"broken": "ValueError"}
    sup.spawn("once", once)  # ended: a new one starts
    await until(lambda: not sup.running("once"), "the second run to end")
    assert ran == ["once", "once"]
    async with asyncio.timeout(2):  # stops a loop sleeping out its 5 s backoff at once
        await sup.stop()
    assert sup.down == {} and not sup.running("broken")


# --- each loop, in this event loop, against a real redis-server ----------------------------------------------
@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Replicas]:
    reps = Replicas(Settings(redis_url=redis_server.url, redis_lease_s=LEASE_S))
    await reps.start()
    assert reps.healthy
    yield reps
    await reps.stop()


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def fail_once(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> asyncio.Event:
    """Make ``obj.name`` raise ``RuntimeError("injected")`` on its next call only; the event is set then."""
    real = getattr(obj, name)
    failed = asyncio.Event()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return failed


class Readiness:
    """Samples ``Replicas``' readiness every few ms, in the background: what it was while a loop was down."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas
        self.seen: list[tuple[str, bool, bool]] = []  # readiness word, healthy, whether require() refused
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Readiness:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._sample_once()

    def _sample_once(self) -> None:
        try:
            self.replicas.require()
            refused = False
        except EventLogUnavailable:
            refused = True
        state = (self.replicas.readiness()[0], self.replicas.healthy, refused)
        if not self.seen or self.seen[-1] != state:
            self.seen.append(state)

    async def _sample(self) -> None:
        while True:
            self._sample_once()
            await asyncio.sleep(0.002)


def assert_logged(caplog: pytest.LogCaptureFixture, loop_name: str) -> None:
    records = [r for r in caplog.records if r.name == SUPERVISOR_LOG and loop_name in r.getMessage()]
    assert records, f"no error logged for the {loop_name}"
    exc = records[0].exc_info
    assert exc is not None and isinstance(exc[1], RuntimeError) and str(exc[1]) == "injected"


async def test_the_writer_runs_again_after_an_unexpected_error(
    replicas: Replicas, r: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an exception the writer did not expect ended its task silently: nothing reached Redis any
    more, and new streams were still admitted (this test fails on the code before supervision)."""
    eventlog = replicas.eventlog
    failed = fail_once(monkeypatch, eventlog, "_flush")
    sid = "sup-" + secrets.token_hex(6)
    async with Readiness(replicas) as readiness:
        log = eventlog.create(sid, "owner", "m")
        log.append(START, {"stream_id": sid, "model": "m"})
        log.append(DELTA, "a")
        await asyncio.wait_for(failed.wait(), 5)
        # the batch the failure dropped is written by the restarted writer, and what came after it too
        log.append(DELTA, "b")

        async def in_redis() -> int:
            return sum(int(fields[b"n"]) for _, fields in await r.xrange(events_key(sid)))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await in_redis() < 3:
            assert loop.time() < deadline, "the writer never wrote again"
            await asyncio.sleep(0.01)
    assert ("down: writer", False, True) in readiness.seen  # not ready, and new streams refused, while down
    assert readiness.seen[0] == readiness.seen[-1] == ("ok", True, False)
    assert_logged(caplog, "writer")


async def test_the_lease_loop_runs_again_after_an_unexpected_error(
    replicas: Replicas, r: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an exception the lease loop did not expect ended it for good: the lease lapsed and followers
    on other replicas declared this replica's streams lost (this test fails on the code before supervision)."""
    failed = fail_once(monkeypatch, replicas.eventlog, "_renew")
    async with Readiness(replicas) as readiness:
        await asyncio.wait_for(failed.wait(), 5)
        await r.delete(replica_key(replicas.replica))  # before the restart (0.1 s): only a renewal brings it back
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await r.exists(replica_key(replicas.replica)):
            assert loop.time() < deadline, "the lease was never renewed again"
            await asyncio.sleep(0.01)
    assert ("down: lease", False, True) in readiness.seen
    assert readiness.seen[-1] == ("ok", True, False)
    assert_logged(caplog, "lease")


async def test_the_control_listener_runs_again_after_an_unexpected_error(
    replicas: Replicas, r: Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an exception the control listener did not expect ended it for good: cancels sent from other
    replicas were never heard again (this test fails on the code before supervision)."""
    heard: list[bytes] = []
    monkeypatch.setattr(replicas, "_on_message", heard.append)
    failed = fail_once(monkeypatch, replicas, "_on_message")
    channel = ctl_channel(replicas.replica)
    async with Readiness(replicas) as readiness:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await r.pubsub_numsub(channel))[0][1] < 1:  # the listener subscribes in the background
            assert loop.time() < deadline, "the listener never subscribed"
            await asyncio.sleep(0.02)
        assert await r.publish(channel, b"u:first") == 1
        await asyncio.wait_for(failed.wait(), 5)
        deadline = loop.time() + 10
        while not heard:  # pub/sub does not queue: publish until the restarted listener hears one
            assert loop.time() < deadline, "the listener never heard a message again"
            await r.publish(channel, b"u:again")
            await asyncio.sleep(0.02)
    assert heard[0] == b"u:again"
    assert ("down: listener", True, False) in readiness.seen  # not ready; new streams do not need the listener
    assert readiness.seen[-1] == ("ok", True, False)
    assert_logged(caplog, "listener")


async def test_the_probe_runs_again_after_an_unexpected_error(
    replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an exception the probe did not expect (a bug in getting ready, after Redis answered) ended it
    for good: Redis was never reported back and every new stream got 503 until a restart (this test fails on the
    code before supervision)."""
    failed = asyncio.Event()

    async def prepare() -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected")

    link = replicas.link
    link.before_up.append(prepare)
    async with Readiness(replicas) as readiness:
        link.down(ConnectionError("the test says so"))  # what a loop does when a command finds Redis gone
        await asyncio.wait_for(failed.wait(), 5)
        assert await link.wait_up(10), "Redis was never reported back"
    assert ("down: probe", False, True) in readiness.seen
    assert readiness.seen[-1] == ("ok", True, False) and replicas.healthy
    assert_logged(caplog, "probe")


async def test_the_probe_is_not_started_twice_while_it_waits_to_restart(replicas: Replicas) -> None:
    """``RedisLink.down`` from many places at once (every loop that sees Redis gone) makes one probe."""
    link = replicas.link
    for _ in range(10):
        link.down(ConnectionError("the test says so"))
    assert [t.get_name() for t in asyncio.all_tasks()].count("ssegate-redis-probe") == 1
    assert await link.wait_up(10)
    await until(lambda: not link.supervisor.running("probe"), "the probe to end once Redis answers")


# --- real replicas whose Redis connections are killed by the server -----------------------------------------
def _until(check: Callable[[], Any], what: str, within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def assert_replicas_cooperate(a: GatewayProcess, b: GatewayProcess, upstream: FakeUpstream) -> None:
    """Cancel elsewhere, resume elsewhere, and the writer (a new stream on B read back from A) all work."""
    # cancel on B of a stream generated on A: the pub/sub listener on A hears it, A closes the upstream
    prompt = upstream.script(Script(deltas=words(500), delay=0.02))
    with open_stream(a.url, prompt) as it:
        sid = take(it, 3)[0].json()["stream_id"]
        cancel = httpx.post(f"{b.url}/v1/streams/{sid}/cancel", headers=auth(), timeout=5)
        assert cancel.status_code == 202, cancel.text
        rec = upstream.wait_closed(prompt, timeout=5)
        assert rec.closed_at is not None and not rec.finished
        assert list(it)[-1].json()["finish_reason"] == "cancelled"
    # resume on A of a stream generated on B (B's writer put it in Redis; A follows it live)
    deltas = words(30)
    resp, head = start(b.url, upstream.script(Script(deltas=deltas, delay=0.02)), n=4)
    assert resp.status_code == 200
    resp, rest = resume(a.url, head[-1].id or "")
    assert resp.status_code == 200
    assert_whole(head + rest, deltas)


@pytest.fixture
def pair_on_own_redis(upstream: FakeUpstream) -> Iterator[tuple[GatewayProcess, GatewayProcess, RedisServer]]:
    with RedisServer() as server:
        settings = {**COMMON, "redis_url": server.url, "provider": "openai", "upstream_url": upstream.url,
                    "model": "m"}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            yield a, b, server


def test_replicas_cooperate_after_redis_kills_their_connections(
    pair_on_own_redis: tuple[GatewayProcess, GatewayProcess, RedisServer], upstream: FakeUpstream
) -> None:
    """``CLIENT KILL`` of every ordinary and every pub/sub connection, while idle and while streams run: the pooled
    clients reconnect and the subscription is renewed. (A guard: this passed before supervision too; the test
    below is the one that did not.)"""
    a, b, server = pair_on_own_redis
    assert_replicas_cooperate(a, b, upstream)
    admin = redis.Redis.from_url(server.url)
    try:
        for kind in ("normal", "pubsub"):
            assert admin.execute_command("CLIENT", "KILL", "TYPE", kind) >= 1
        assert_replicas_cooperate(a, b, upstream)
        # and while a stream runs on A and is followed on B
        deltas = words(60)
        _, head = start(a.url, upstream.script(Script(deltas=deltas, delay=0.03)), n=4)
        with httpx.stream("GET", f"{b.url}/v1/streams/{head[0].json()['stream_id']}", params={"after": 4},
                          headers=auth(), timeout=15) as follow:
            assert follow.status_code == 200
            it = sse_events(follow.iter_text())
            rest = take(it, 5)
            for kind in ("normal", "pubsub"):
                admin.execute_command("CLIENT", "KILL", "TYPE", kind)
            rest += list(it)
        assert_whole(head + rest, deltas)
        assert_replicas_cooperate(a, b, upstream)
        for gw in (a, b):
            assert httpx.get(gw.url + "/readyz", timeout=10).json()["checks"]["redis"] == "ok"
    finally:
        admin.close()


def test_a_refused_subscription_is_retried_and_reported_until_it_works_again(
    pair_on_own_redis: tuple[GatewayProcess, GatewayProcess, RedisServer], upstream: FakeUpstream
) -> None:
    """Regression: with its pub/sub connection killed and the new subscription refused (here an ACL taking the
    channels away; Redis then also drops subscribed clients itself), the control listener raised a Redis error it
    did not handle and ended for good: ``/readyz`` still said ok, and cancels from other replicas were lost from
    then on, after Redis allowed the channels again (this test fails on the code before supervision)."""
    a, b, server = pair_on_own_redis
    admin = redis.Redis.from_url(server.url)
    try:
        admin.execute_command("ACL", "SETUSER", "default", "resetchannels")
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

        def listener_down() -> httpx.Response | None:
            resp = httpx.get(a.url + "/readyz", timeout=10)
            return resp if resp.status_code == 503 and resp.json()["checks"]["redis"] == "down: listener" else None

        ready = _until(listener_down, "/readyz saying the listener is down")
        assert ready.json()["status"] == "unavailable" and "detail" not in ready.json()
        assert str(server.port) not in ready.text and "redis://" not in ready.text
        # an operator (a valid API key) learns where and what, still without the URL
        detailed = httpx.get(a.url + "/readyz", headers=auth(), timeout=10).json()
        if detailed["checks"]["redis"] != "ok":  # (it may be between two attempts)
            assert detailed["detail"]["redis"].startswith(f"127.0.0.1:{server.port}: listener restarting after ")
        # new streams do not need the listener: still admitted
        resp, events = start(a.url, upstream.script(Script(deltas=["x"])))
        assert resp.status_code == 200 and events[-1].event == "done"
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "allchannels")
        admin.close()
    for gw in (a, b):  # the backoff (at most 5 s) runs out, the listener subscribes again
        _until(lambda gw=gw: httpx.get(gw.url + "/readyz", timeout=10).status_code == 200, "ready again")
    assert_replicas_cooperate(a, b, upstream)
    assert "listener" in a.log() and "NoPermissionError" in a.log()  # logged with its traceback
