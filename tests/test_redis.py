"""Redis mode (CONTRACT §6, issue 4): replicas sharing one real redis-server.

Cancel travels over pub/sub and closes the generating replica's upstream; a replica that is SIGKILLed leaves its
followers elsewhere a ``generation_lost`` error; detach grace counts followers on other replicas; the mirror to
Redis is batched; and Redis itself going away and coming back never hangs anybody. (Resume across replicas, with
and without disconnects, is in ``test_resume.py``, which runs every resume test in both modes.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from ssegate.sse import ServerSentEvent
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Script
from tests.support.gateway import GatewayProcess, chat_body, free_port, sse_events
from tests.support.redis import RedisServer
from tests.support.resume import assert_whole, auth, read, resume, script, start

LEASE_S = 1.0
COMMON: dict[str, Any] = {
    **FAST,
    "commit_timeout_s": 1.0,
    "first_token_timeout_s": 5.0,
    "idle_timeout_s": 5.0,
    "send_timeout_s": 2.0,
    "heartbeat_s": 0.5,
    "api_keys": "k1,k2",
    "token_secret": "one-secret-for-every-replica-0123456789",  # owners are key fingerprints under it
    "detach_grace_s": 1.0,
    "log_ttl_s": 30.0,
    "redis_lease_s": LEASE_S,
}
Pair = tuple[GatewayProcess, GatewayProcess]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def relay_settings(redis_server: RedisServer, upstream: FakeUpstream) -> dict[str, Any]:
    return {**COMMON, "redis_url": redis_server.url, "provider": "openai", "upstream_url": upstream.url, "model": "m"}


@pytest.fixture(scope="module")
def pair(relay_settings: dict[str, Any]) -> Iterator[Pair]:
    """Two replicas relaying the fake upstream, sharing the module's redis-server."""
    with GatewayProcess(relay_settings) as a, GatewayProcess(relay_settings) as b:
        yield a, b


def words(n: int, tag: str = "w") -> list[str]:
    return [f"{tag}{i} " for i in range(n)]


@contextmanager
def open_stream(url: str, prompt: str) -> Iterator[Iterator[ServerSentEvent]]:
    """A stream started on ``url``, read lazily; closing it is the client's disconnect."""
    with httpx.stream("POST", url + "/v1/chat/stream", content=chat_body(prompt), headers=auth(), timeout=15) as resp:
        assert resp.status_code == 200, resp.read()
        yield sse_events(resp.iter_text())


def take(events: Iterator[ServerSentEvent], n: int) -> list[ServerSentEvent]:
    return [next(events) for _ in range(n)]


def test_cancel_on_another_replica_closes_the_upstream(pair: Pair, upstream: FakeUpstream) -> None:
    a, b = pair
    prompt = upstream.script(Script(deltas=words(500), delay=0.02))
    with open_stream(a.url, prompt) as it:
        events = take(it, 4)
        sid = events[0].json()["stream_id"]
        with httpx.Client(headers=auth(), timeout=5) as client:  # built beforehand: measure the gateway only
            sent_at = time.monotonic()
            cancel = client.post(f"{b.url}/v1/streams/{sid}/cancel")
        assert cancel.status_code == 202 and cancel.json() == {"stream_id": sid, "status": "cancelling"}
        rec = upstream.wait_closed(prompt, timeout=5)
        events += list(it)
    assert rec.closed_at is not None and rec.closed_at - sent_at < 2.0, f"{rec.closed_at - sent_at:.3f}s"
    assert not rec.finished
    assert_whole(events, [e.json()["delta"] for e in events[1:-1]], finish_reason="cancelled")
    assert events[-1].json()["usage"]["completion_tokens"] == len(events) - 2
    # the cancelled stream reads the same from the other replica
    _, again = read("GET", f"{b.url}/v1/streams/{sid}", params={"after": 0})
    assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in events]


def test_a_follower_elsewhere_keeps_the_generation_past_the_detach_grace(pair: Pair, upstream: FakeUpstream) -> None:
    """The client leaves A and follows on B: A's grace (1 s) runs out, but B's follower still counts."""
    a, b = pair
    deltas = words(40)
    prompt = upstream.script(Script(deltas=deltas, delay=0.05))  # 2 s, well past the grace
    _, head = start(a.url, prompt, n=3)
    _, rest = resume(b.url, head[-1].id or "")
    assert_whole(head + rest, deltas)
    assert len(upstream.records(prompt)) == 1  # one upstream request, played to its end (the whole text)


def test_when_the_last_follower_elsewhere_leaves_the_grace_runs_then_the_upstream_closes(
    pair: Pair, upstream: FakeUpstream
) -> None:
    a, b = pair
    prompt = upstream.script(Script(deltas=words(500), delay=0.02))
    _, head = start(a.url, prompt, n=3)
    _, more = resume(b.url, head[-1].id or "", n=60)  # 1.2 s: A's own grace has run out meanwhile
    left_at = time.monotonic()
    assert len(more) == 60 and not upstream.records(prompt)[0].closed_at
    rec = upstream.wait_closed(prompt, timeout=10)
    assert rec.closed_at is not None and not rec.finished
    waited = rec.closed_at - left_at
    assert 1.0 - 0.05 <= waited < 1.0 + 1.0, f"closed {waited:.3f}s after the last follower left (grace 1.0s)"
    _, rest = resume(a.url, more[-1].id or "")
    events = head + more + rest
    assert events[-1].event == "done" and events[-1].json()["finish_reason"] == "cancelled"
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]


def test_sigkill_of_the_generating_replica_gives_its_followers_generation_lost(
    relay_settings: dict[str, Any], pair: Pair, upstream: FakeUpstream
) -> None:
    _, b = pair
    doomed = GatewayProcess(relay_settings).start()
    try:
        prompt = upstream.script(Script(deltas=words(500), delay=0.02))
        _, head = start(doomed.url, prompt, n=3)
        with httpx.stream("GET", f"{b.url}/v1/streams/{head[0].json()['stream_id']}", headers=auth(), timeout=15,
                          params={"after": 3}) as resp:
            it = sse_events(resp.iter_text())
            events = head + take(it, 5)
            doomed.kill()
            killed_at = time.monotonic()
            events += list(it)
            ended_after = time.monotonic() - killed_at
    finally:
        doomed.kill()
    sid = events[0].json()["stream_id"]
    assert [e.id for e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    assert all(e.event == "message" for e in events[1:-1])
    assert events[-1].event == "error"
    assert events[-1].json()["error"]["code"] == "generation_lost" and events[-1].json()["error"]["retryable"] is True
    assert ended_after < 1.5 * LEASE_S + 2.5, f"generation_lost after {ended_after:.2f}s"
    assert upstream.wait_closed(prompt, timeout=5).closed_at is not None  # the kernel closed A's connection
    # everybody agrees: a resume anywhere replays the same end, and then it is over
    _, again = resume(b.url, head[-1].id or "")
    assert [e.data for e in again] == [e.data for e in events[len(head):]]
    assert resume(b.url, events[-1].id or "")[0].status_code == 204


def test_a_client_ahead_of_redis_when_its_replica_dies_still_gets_generation_lost(
    relay_settings: dict[str, Any], pair: Pair, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """The client read further from the generating replica than Redis got (the writer's quiet pace) when that
    replica was SIGKILLed. Its resume elsewhere replays nothing, and the ``generation_lost`` tombstone lands at a
    seq the client already has; it still gets that terminal event, numbered after its last id, not a stream that
    ends without one."""
    _, b = pair
    r = redis.Redis.from_url(redis_server.url)

    def in_redis(sid: str) -> int:
        """The last seq of ``sid`` that Redis holds."""
        top = r.xrevrange(f"ssegate:stream:{sid}:events", "+", "-", count=1)
        return int(top[0][0].split(b"-")[0]) + int(top[0][1][b"n"]) - 1 if top else 0

    try:
        for _attempt in range(3):  # the kill must land while Redis is behind the client (almost always)
            doomed = GatewayProcess(relay_settings).start()
            try:
                prompt = upstream.script(Script(deltas=words(500), delay=0.02))
                with open_stream(doomed.url, prompt) as it:
                    events = take(it, 5)
                    sid = events[0].json()["stream_id"]
                    while int((events[-1].id or "").rpartition(":")[2]) < in_redis(sid) + 2:
                        events.append(next(it))
                    doomed.kill()
                    last_seq = int((events[-1].id or "").rpartition(":")[2])
            finally:
                doomed.kill()
            if last_seq > in_redis(sid):
                break
        else:
            pytest.fail("Redis caught up with the client before each kill")
        t0 = time.monotonic()
        resp, after = resume(b.url, events[-1].id or "")
        assert resp.status_code == 200
        assert [e.event for e in after] == ["error"], [(e.id, e.event) for e in after]
        assert after[0].json()["error"]["code"] == "generation_lost"
        assert after[0].id == f"{sid}:{last_seq + 1}"
        assert time.monotonic() - t0 < 1.5 * LEASE_S + 2.5
    finally:
        r.close()


def test_the_mirror_is_batched_and_expires_after_the_end(pair: Pair, upstream: FakeUpstream,
                                                       redis_server: RedisServer) -> None:
    """Not one Redis round trip per token: a fast stream of 2000 deltas takes far fewer XADDs."""
    a, _ = pair
    r = redis.Redis.from_url(redis_server.url)
    try:
        r.config_resetstat()
        deltas = words(2000)
        _, events = start(a.url, upstream.script(Script(deltas=deltas, delay=0)))
        assert_whole(events, deltas)
        sid = events[0].json()["stream_id"]
        xadds = int(r.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0))
        assert 1 <= xadds < len(events) / 4, f"{xadds} XADDs for {len(events)} events"
        for key in (f"ssegate:stream:{sid}:events", f"ssegate:stream:{sid}:meta"):
            ttl = r.pttl(key)
            assert 0 < ttl <= COMMON["log_ttl_s"] * 1000, (key, ttl)
    finally:
        r.close()


# --- Redis going away ----------------------------------------------------------------------------------
def _until(check: Any, what: str, within: float = 10.0) -> Any:
    """Poll ``check()`` until it returns something truthy; the bound only catches a hang."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _status(answer: tuple[httpx.Response, list[ServerSentEvent]], status: int, events: bool = False) -> Any:
    """``answer`` (as a tuple, or just the response) when its status is ``status``, else ``None``."""
    resp, got = answer
    if resp.status_code != status:
        return None
    return (resp, got) if events else resp


def test_redis_outage_clear_errors_streams_go_on_and_everything_recovers() -> None:
    with RedisServer() as server:
        settings = {**COMMON, "redis_url": server.url}
        with GatewayProcess(settings) as a, GatewayProcess(settings) as b:
            deltas = words(50)
            with open_stream(a.url, script(deltas, delay=0.04)) as it_a:  # 2 s
                head = take(it_a, 4)
                sid = head[0].json()["stream_id"]
                with httpx.stream("GET", f"{b.url}/v1/streams/{sid}", params={"after": 4}, headers=auth(),
                                  timeout=15) as resp_b:
                    it_b = sse_events(resp_b.iter_text())
                    on_b = take(it_b, 2)
                    server.stop()
                    stopped_at = time.monotonic()
                    # B cannot follow any more: its response ends without inventing a terminal event
                    on_b += list(it_b)
                    assert time.monotonic() - stopped_at < LEASE_S + 3
                assert all(e.event == "message" for e in on_b)
                # new streams, and resumes that need Redis, get a clear 503 quickly
                refused = _until(lambda: _status(start(a.url, script(["x"])), 503),
                                 "503 for a new stream while Redis is down")
                assert refused.json()["error"]["code"] == "overloaded" and refused.headers["retry-after"]
                gone, _ = resume(b.url, on_b[-1].id or "")
                assert gone.status_code == 503 and gone.json()["error"]["code"] == "overloaded"
                ready = httpx.get(a.url + "/readyz", timeout=5)
                assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unreachable"
                # the stream running on A goes on from memory, to its end
                rest_a = list(it_a)
            assert_whole(head + rest_a, deltas)
            # Redis comes back (restarted, empty): new streams work again ...
            server.start()
            _until(lambda: start(a.url, script(["ok"]))[0].status_code == 200, "a new stream after Redis is back")
            assert httpx.get(a.url + "/readyz", timeout=5).status_code == 200
            # ... and the stream that ran through the outage resumes on B without a gap (A rewrote it)
            _, rest_b = _until(lambda: _status(resume(b.url, on_b[-1].id or ""), 200, events=True),
                               "a resume on B after Redis is back")
            assert_whole(head + on_b + rest_b, deltas)


def test_a_gateway_started_without_redis_refuses_streams_then_recovers() -> None:
    port = free_port()
    server = RedisServer(port=port)
    with GatewayProcess({**COMMON, "redis_url": server.url}) as gw:
        resp, _ = start(gw.url, script(["x"]))
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "overloaded"
        assert resp.headers["retry-after"]
        with server:
            _until(lambda: start(gw.url, script(["y"]))[0].status_code == 200, "a stream once Redis is up")


def _chunk(flags: str, chunk_id: str, minid: str, n: int, *fields: bytes) -> bytes:
    """One chunk as the writer puts it in ``_WRITE``'s argument."""
    return f"{flags} {chunk_id} {minid} {n} {' '.join(str(len(f)) for f in fields)}\n".encode() + b"".join(fields)


async def test_the_write_script_answers_each_chunk_on_its_own(redis_server: RedisServer) -> None:
    """The writer sends every chunk of a round trip in one ``_WRITE`` call: a chunk Redis refuses (an id not above
    the stream's top: a replay, or a tombstone already there) must not stop the others, must change nothing, and
    must come back as Redis's own error text so that the writer resolves it like a refused ``XADD``. A stream's
    first chunk writes its meta hash (history included) and a live expiry; its last one the ended expiry on all
    three keys."""
    from redis.asyncio import Redis

    from ssegate.cluster.redis_log import _WRITE

    r = Redis.from_url(redis_server.url)
    a, b, c, d = (f"ssegate:stream:{x}:events" for x in "abcd")
    try:
        await r.delete(a, b, c, d, "ssegate:stream:d:meta", "ssegate:stream:c:meta")
        await r.xadd(a, {"n": 1, "e": "[]"}, id="1-0")
        await r.xadd(b, {"n": 3, "e": "[]"}, id="1-0")
        await r.xadd(b, {"n": 1, "e": "[]"}, id="4-0")
        await r.zadd("ssegate:stream:c:followers", {"x": 1})
        history = b'{"binary \n safe": "\xff"}'
        blob = b"".join([
            _chunk("m", "2-0", "-", 2, a.encode(), b'[[1,"x"]]'),
            _chunk("m", "2-0", "-", 1, b.encode(), b"[]"),
            _chunk("tf", "5-0", "3-0", 1, c.encode(), b"[[9,{}]]", b"own", b"mod", b"rep", b"0.0"),
            _chunk("mf", "1-0", "-", 1, d.encode(), b"[]", b"own", b"mod", b"rep", b"2.5", history),
        ])
        out = await r.eval(_WRITE, 0, blob, 600_000, 60_000)
        assert out[0] == 1 and out[2] == 1 and out[3] == 1
        assert b"equal or smaller" in out[1]
        assert [i for i, _ in await r.xrange(a)] == [b"1-0", b"2-0"]
        assert (await r.xrange(a, "2-0", "2-0"))[0][1] == {b"n": b"2", b"e": b'[[1,"x"]]'}
        assert [i for i, _ in await r.xrange(b)] == [b"1-0", b"4-0"]  # the refused chunk changed nothing
        assert await r.xrange(c) == [(b"5-0", {b"n": b"1", b"e": b"[[9,{}]]", b"t": b"1"})]  # MINID given
        assert await r.hgetall("ssegate:stream:c:meta") == {
            b"owner": b"own", b"model": b"mod", b"replica": b"rep", b"grace": b"0.0"}
        assert (await r.hgetall("ssegate:stream:d:meta"))[b"history"] == history
        for key in (c, "ssegate:stream:c:meta", "ssegate:stream:c:followers"):
            assert 0 < await r.pttl(key) <= 60_000, key  # ended
        for key in (d, "ssegate:stream:d:meta"):
            assert 60_000 < await r.pttl(key) <= 600_000, key  # live
        assert await r.pttl(a) == -1  # a later chunk leaves the expiry to the lease's renewal
    finally:
        await r.aclose()


async def test_the_writer_survives_a_dead_connection_and_lost_scripts(redis_server: RedisServer,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The writer packs its ``_WRITE`` call itself and sends it on a pooled connection (not through redis-py's
    command layer), so it must do what that layer did: a pooled connection Redis closed (a restart) is replaced
    once, and Redis without the script (a restart, ``SCRIPT FLUSH``) gets it loaded again; the round trip then
    lands as if nothing happened: no error, nothing lost, nothing doubled."""
    from redis.asyncio import Redis

    from ssegate.cluster.redis_log import RedisEventLog, RedisLink, events_key
    from ssegate.core.entries import DELTA

    link = RedisLink(redis_server.url)
    admin = Redis.from_url(redis_server.url)
    try:
        await link.start(5)
        log = RedisEventLog(link, "writer-test")
        stream = log.create("w1", "owner", "model")
        await admin.delete(events_key("w1"), "ssegate:stream:w1:meta")
        stream.append(DELTA, "one")
        await log._flush([stream])
        ours = {c["id"] for c in await admin.client_list()} - {str(await admin.client_id())}
        for client in ours:  # every connection of the link's pool: Redis closes them all
            await admin.client_kill_filter(_id=client)
        await admin.script_flush()
        caplog.clear()
        stream.append(DELTA, "two")
        stream.append(DELTA, "three")
        await log._flush([stream])
        chunks = await admin.xrange(events_key("w1"))
        assert [(i, f[b"n"], f[b"e"]) for i, f in chunks] == [
            (b"1-0", b"1", b'[[1,"one"]]'), (b"2-0", b"2", b'[[1,"two"],[1,"three"]]')]
        assert stream.mirrored == stream.last_seq
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert link.healthy
    finally:
        await admin.aclose()
        await link.aclose()


async def test_the_writer_hurries_only_for_what_is_awaited_elsewhere(redis_server: RedisServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's pace: a stream's first chunk, its end, and every entry of a stream followed on another replica
    reach Redis at the fast pace; the middle of a stream nobody elsewhere follows waits for the quiet pace (here
    1 s, far from the fast 20 ms, so a writer that flushed everything fast, or everything slowly, fails)."""
    from redis.asyncio import Redis

    from ssegate.cluster import redis_log
    from ssegate.cluster.redis_log import RedisEventLog, RedisLink, events_key
    from ssegate.core.entries import DELTA, DONE, START

    monkeypatch.setattr(redis_log, "QUIET_FLUSH_S", 1.0)
    link = RedisLink(redis_server.url)
    admin = Redis.from_url(redis_server.url)

    async def landed(sid: str, entries: int, within: float) -> float:
        """Seconds until Redis holds ``entries`` entries of ``sid`` (the bound only catches a hang)."""
        t0 = time.monotonic()
        while True:
            chunks = await admin.xrange(events_key(sid))
            if sum(int(f[b"n"]) for _, f in chunks) >= entries:
                return time.monotonic() - t0
            assert time.monotonic() - t0 < within, f"{sid}: {entries} entries never landed"
            await asyncio.sleep(0.01)

    async def until_mirrored(stream: Any, seq: int) -> None:
        """Until the writer has read Redis's answer (a stream whose first chunk is unanswered is still hurried)."""
        t0 = time.monotonic()
        while stream.mirrored < seq:
            assert time.monotonic() - t0 < 3.0, "the writer never read the answer"
            await asyncio.sleep(0.005)

    try:
        await link.start(5)
        log = RedisEventLog(link, "pace-test")
        await log.start()
        quiet = log.create("q1", "owner", "model")
        quiet.append(START, {"stream_id": "q1"})
        assert await landed("q1", 1, 3.0) < 0.5  # the first chunk: the stream becomes resumable anywhere
        await until_mirrored(quiet, 1)
        quiet.append(DELTA, "middle")
        t0 = time.monotonic()
        await asyncio.sleep(0.4)
        assert len(await admin.xrange(events_key("q1"))) == 1  # the middle waits for the quiet pace
        assert 0.5 < 0.4 + await landed("q1", 2, 5.0) < 3.0, time.monotonic() - t0

        await until_mirrored(quiet, 2)
        quiet.append(DELTA, "pending")  # listed for the quiet pace...
        await asyncio.sleep(0.05)
        log.mark_followed("q1")  # ...when a follower on another replica joins: what is pending goes now
        assert log.followed_elsewhere("q1")
        assert await landed("q1", 3, 3.0) < 0.5
        await until_mirrored(quiet, 3)
        quiet.append(DELTA, "followed")  # and every entry after it at the fast pace
        assert await landed("q1", 4, 3.0) < 0.5

        ending = log.create("q2", "owner", "model")
        ending.append(START, {"stream_id": "q2"})
        await landed("q2", 1, 3.0)
        await until_mirrored(ending, 1)
        ending.append(DELTA, "last words")  # listed for the quiet pace...
        await asyncio.sleep(0.05)
        ending.append(DONE, {"finish_reason": "stop"})  # ...and hurried by its end
        assert await landed("q2", 3, 3.0) < 0.5
        assert not log.followed_elsewhere("q2")
    finally:
        await admin.aclose()
        await link.supervisor.stop("writer", "lease")
        await link.aclose()


async def test_finished_logs_are_kept_as_bytes_once_redis_has_them_and_rewritten_after_a_restart(
        redis_server: RedisServer) -> None:
    """As in memory mode, a finished log is kept as bytes (out of the garbage collector's sight), but only once
    Redis has it whole: until then the writer needs the object. Redis restarted empty: ``_resync`` rewrites the
    frozen logs from their bytes, and they are kept as bytes again once written."""
    import gc

    from redis.asyncio import Redis

    from ssegate.cluster.redis_log import MirroredStreamLog, RedisEventLog, RedisLink, events_key
    from ssegate.core.entries import DELTA, DONE, START

    link = RedisLink(redis_server.url)
    admin = Redis.from_url(redis_server.url)

    async def until(check: Any, what: str) -> None:
        t0 = time.monotonic()
        while not check():
            assert time.monotonic() - t0 < 5.0, what  # a hang, not a timing
            await asyncio.sleep(0.005)

    async def entries_in_redis(sid: str) -> list[Any]:
        return [e for _, f in await admin.xrange(events_key(sid)) for e in json.loads(f[b"e"])]

    try:
        await link.start(5)
        reg = RedisEventLog(link, "freeze-test")
        await reg.start()
        log = reg.create("f1", "owner", "model")
        assert isinstance(log, MirroredStreamLog)
        log.grace_s = 2.5
        log.history = b'{"kept": true}'
        for kind, payload in [(START, {"stream_id": "f1"}), (DELTA, "hello "), (DELTA, "world"),
                              (DONE, {"finish_reason": "stop"})]:
            log.append(kind, payload)
        reg.finished(log)
        assert reg._logs.get("f1") is log and "f1" not in reg._frozen  # Redis does not have its end yet
        await until(lambda: "f1" in reg._frozen, "the log was never frozen after its end reached Redis")
        assert reg._logs.get("f1") is None
        gc.collect()  # (a tuple of bytes is untracked at its first collection)
        assert not gc.is_tracked(reg._frozen["f1"])
        whole = [[START, {"stream_id": "f1"}], [DELTA, "hello "], [DELTA, "world"], [DONE, {"finish_reason": "stop"}]]
        assert await entries_in_redis("f1") == whole
        back = reg.get("f1")
        assert back is not None and back.finished and back.text() == "hello world" and back.last_seq == 4
        assert (back.owner, back.grace_s, back.history) == ("owner", 2.5, b'{"kept": true}')

        # a stream that is still running stays an object, and is written whole too
        live = reg.create("f2", "owner", "model")
        live.append(START, {"stream_id": "f2"})
        await until(lambda: reg._live["f2"].mirrored == 1, "the live stream never reached Redis")

        await admin.flushall()  # Redis restarted empty
        await reg._resync()
        assert await entries_in_redis("f1") == whole and await entries_in_redis("f2") == [[START, {"stream_id": "f2"}]]
        assert (await admin.hgetall("ssegate:stream:f1:meta"))[b"history"] == b'{"kept": true}'
        assert "f1" in reg._frozen and reg._logs.get("f1") is None  # kept as bytes again once written
        assert "f2" in reg._logs and "f2" not in reg._frozen
        await reg.close()
    finally:
        await admin.aclose()
        await link.supervisor.stop("writer", "lease")
        await link.aclose()
