"""The Redis event log (``SSEGATE_REDIS_URL``): every stream mirrored to a Redis Stream, so that any replica
can replay it, follow it live, and tell when the replica generating it died.

Keys (``S`` a stream id, ``R`` a replica id, random per process)::

    ssegate:stream:S:events     Redis Stream of chunks. A chunk is one or more consecutive entries: its id is
                                ``<seq of its first entry>-0``; fields ``n`` (how many entries), ``e`` (the entries,
                                a JSON list of ``[kind, payload]``), ``t`` when it ends with the terminal entry,
                                ``lost`` on a ``generation_lost`` tombstone written by another replica.
    ssegate:stream:S:meta       hash: owner, model, replica (the generating replica's id), grace (its resume grace, s),
                                history (what a later request continues from, ``StreamLog.history``; read only
                                when one asks for it).
    ssegate:stream:S:followers  sorted set: followers on other replicas, scored by when they stop counting (ms,
                                Redis server time), for ``DETACH_GRACE_S`` across replicas.
    ssegate:replica:R           the lease of replica R, renewed every ``REDIS_LEASE_S / 3``. It covers every
                                stream whose meta names R (one key per replica, not per stream, so renewing
                                costs one command however many streams run).
    ssegate:ctl:R               pub/sub channel of replica R: cancel and follower notices (``replicas.py``).
    ssegate:chat:O:C            the stream answering chat C of owner O (a hash of the owner) right now, for the
                                AI SDK's resume by chat id (``Replicas.set_chat``); expires like a live stream's keys.

Writing stays off the hot path. ``MirroredStreamLog.append`` (``mirrored.py``, compiled) is the in-process append
plus, on the first append after a flush, putting the log on the writer's list. One writer task per process sends
each listed log's new entries as one chunk (one ``XADD``, with ``MINID ~`` keeping about ``LOG_MAX_EVENTS``
entries), all logs in one round trip (one ``_WRITE`` script call, the whole batch in one argument, packed by the
writer and sent on a pooled connection without redis-py's command layer); entries appended while a round trip is in
flight go in the next one, so a busy stream costs one command per round trip, not per token. Chunk ids are seqs, so
a replayed write (after a reconnect) is refused by Redis instead of duplicated, and a ``generation_lost`` tombstone
fences out a replica that comes back.

The writer's pace follows who may be reading. While something pending is awaited elsewhere (a stream's first
chunk, which makes it resumable anywhere; a stream's end; any entry of a stream that a replica elsewhere follows
right now) it flushes every ``FLUSH_INTERVAL_S``; otherwise, every ``QUIET_FLUSH_S``. Nobody reads the middle of
a stream that no other replica follows until a client resumes it elsewhere, and that resume's follower notice
(``Replicas``: ``f:<id>`` on the control channel) switches the stream to the fast pace: the resumed client gets
the backlog one fast round trip after its replica asked.

Following a stream generated elsewhere: ``fetch`` copies it into a local ``StreamLog`` (which the ordinary
``EventStreamResponse`` follows) and ``follow`` keeps appending to that copy with ``XREAD BLOCK``. When a
blocking read times out with nothing new and the generating replica's lease is gone, a Lua script appends the
tombstone (``error``, code ``generation_lost``, retryable) unless the stream already ended.

As in memory mode (``core/log.py``), a finished log is kept as bytes until it expires, once Redis has it whole
(until then the writer needs the object); when Redis comes back empty, ``_resync`` rewrites the frozen ones from
their bytes too.

Background loops (the writer, the lease, the link's probe, and ``replicas.py``'s control listener) run under the
link's ``Supervisor`` (``supervise.py``): one that fails on something it did not expect is logged, restarted with
backoff, and reported as down meanwhile (``/readyz`` 503; new streams 503 while the writer or the lease is down).

Redis unreachable: ``RedisLink`` marks itself down and probes until Redis answers. Meanwhile this replica's
streams go on in memory (their clients notice nothing; the writer keeps its place), followers here of other
replicas' streams wait up to ``REDIS_LEASE_S`` and then have their responses closed without a terminal event (the
stream is not over, so none is invented): the client resumes like after any drop, gets 503 ``overloaded`` until
Redis is back, then the rest without a gap. When Redis answers again (perhaps restarted empty), each replica
renews its lease, rewrites from memory the streams Redis lost and flushes its backlog before it admits new
streams; for a moment after an outage a resume of a stream Redis does not have is 503, not 404.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.typing import EncodableT

from ..core.entries import ERROR, TERMINAL
from ..core.log import MemoryEventLog, StreamLog
from ..errors import EventLogUnavailable, GenerationLost, NotFound
from ..sse import dumps
from .keys import chat_key, ctl_channel, events_key, followers_key, meta_key, replica_key
from .mirrored import MirroredStreamLog
from .supervise import Supervisor

__all__ = [
    "REDIS_DOWN",
    "MirroredStreamLog",
    "RedisEventLog",
    "RedisLink",
    "RemoteCopy",
    "chat_key",
    "ctl_channel",
    "events_key",
    "followers_key",
    "map_redis_errors",
    "meta_key",
    "replica_key",
]

logger = logging.getLogger("ssegate.cluster.redis")

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError)
"""What redis-py (or the socket under it) raises when Redis cannot be reached in time."""


@contextmanager
def map_redis_errors() -> Iterator[None]:
    """Translate an unreachable Redis into ``EventLogUnavailable`` (503 ``overloaded``, retryable)."""
    try:
        yield
    except REDIS_DOWN as exc:
        raise EventLogUnavailable(
            f"the event log (Redis) is unreachable: {exc or type(exc).__name__}", retry_after=1.0
        ) from exc


_META_FIELDS = ("owner", "model", "replica", "grace")
"""The fields of a stream's meta hash that every reader needs (``history`` may be large: read when asked for)."""

FLUSH_INTERVAL_S = 0.02
"""The writer's pace while a reader elsewhere may be waiting (a stream's first chunk or its end pending, or a
stream followed on another replica): what such a reader sees lags this process by at most this plus one round
trip. 20 ms is about one frame of a screen, a lag no reader of a resumed stream sees."""

QUIET_FLUSH_S = 0.1
"""The writer's pace when nothing pending is awaited elsewhere (the middle of streams that no other replica
follows). A round trip costs the gateway ~200 µs of CPU and Redis ~50 µs whatever it carries, and each stream in
it a few µs more on both sides: the longer the pace, the fewer round trips and the more entries per chunk
(docs/resume.md has the figures). What it costs: a resume elsewhere first reads a copy up to this much older (the
rest follows one fast round trip after its notice), and a replica that dies takes up to this much of an
unfollowed stream's end with it (its clients get ``generation_lost`` either way)."""

CATCH_UP_S = 0.25
"""How long a reader waits for Redis to catch up with what its client already has before it answers from what
Redis has: a stream started or ended a moment ago on another replica may not be there yet (the writer's pace,
at most ``QUIET_FLUSH_S``, plus a margin for a busy replica). Only what is missing waits: an unknown or expired
stream's 404 comes this much later."""


# KEYS: events, the generating replica's lease, meta, followers. ARGV: the tombstone chunk, who writes it, ttl ms.
# 0: the replica is alive or the stream already ended; 1: tombstone written; -1: the stream is gone.
_DECLARE_LOST = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top == 0 then return -1 end
local first = tonumber(string.match(top[1][1], '^%d+'))
local f = top[1][2]
local n = 0
for i = 1, #f, 2 do
  if f[i] == 't' then return 0 end
  if f[i] == 'n' then n = tonumber(f[i + 1]) end
end
redis.call('XADD', KEYS[1], string.format('%d-0', first + n), 'n', '1', 't', '1', 'lost', ARGV[2], 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
return 1
"""


# The writer's one command per round trip. ARGV[1]: the chunks, each a header line
# ``<flags> <chunk id> <MINID or -> <n> <len>...`` followed by the fields it announces, back to back:
# the events key, the entries, and on a stream's first chunk (flag ``f``) the meta hash's fields (owner, model,
# replica, grace, and history when there is one). Flag ``t``: the chunk ends with the terminal entry (``m``: more
# to come). ARGV[2]: a live stream's expiry (ms), ARGV[3]: an ended one's. The meta and followers keys are the
# events key's siblings (``events_key``, ``meta_key``, ``followers_key``).
# One argument for the whole batch: redis-py's cost is per argument (it packs each in Python), far above
# Redis's own. Per chunk: 1 written, or Redis's error text (a chunk id not above the last: a replay or a
# tombstone, resolved by the caller); a refused chunk changes nothing.
_WRITE = """
local blob, live_ttl, ttl = ARGV[1], ARGV[2], ARGV[3]
local match, sub, find, call = string.match, string.sub, string.find, redis.call
local head = '^(%a+) (%S+) (%S+) (%d+) (%d+) (%d+)([^\\n]*)\\n()'
local names = {'owner', 'model', 'replica', 'grace', 'history'}
local out, pos, size = {}, 1, #blob
while pos <= size do
  local flags, id, minid, n, klen, elen, more, at = match(blob, head, pos)
  local events = sub(blob, at, at + klen - 1)
  local base = sub(events, 1, -8)  -- the stream's keys without ':events'
  at = at + klen
  local entries = sub(blob, at, at + elen - 1)
  pos = at + elen
  local hset = nil
  if find(flags, 'f', 1, true) then  -- the meta hash's fields follow
    hset = {'HSET', base .. ':meta'}
    local i = 0
    for len in string.gmatch(more, '%d+') do
      i = i + 1
      hset[#hset + 1] = names[i]
      hset[#hset + 1] = sub(blob, pos, pos + len - 1)
      pos = pos + len
    end
  end
  local terminal = find(flags, 't', 1, true)
  local ok, err
  if not terminal and minid == '-' then  -- the usual chunk
    ok, err = pcall(call, 'XADD', events, id, 'n', n, 'e', entries)
  else
    local xadd = {'XADD', events}
    if minid ~= '-' then xadd[3] = 'MINID'; xadd[4] = '~'; xadd[5] = minid end
    for _, v in ipairs({id, 'n', n, 'e', entries}) do xadd[#xadd + 1] = v end
    if terminal then xadd[#xadd + 1] = 't'; xadd[#xadd + 1] = '1' end
    ok, err = pcall(call, unpack(xadd))
  end
  if ok then
    out[#out + 1] = 1
    if hset then
      call(unpack(hset))
      if not terminal then
        call('PEXPIRE', events, live_ttl)
        call('PEXPIRE', base .. ':meta', live_ttl)
      end
    end
    if terminal then
      call('PEXPIRE', events, ttl)
      call('PEXPIRE', base .. ':meta', ttl)
      call('PEXPIRE', base .. ':followers', ttl)
    end
  else
    out[#out + 1] = tostring(err.err or err)
  end
end
return out
"""


class RedisLink:
    """This process's Redis clients, and whether Redis answers right now.

    Every command has a timeout (``op_timeout``; blocking reads get theirs on top), and a pooled connection
    that died with a Redis restart is reconnected once; so a call fails fast instead of hanging. Whoever sees
    a connection error calls ``down()``; a probe then pings with backoff and, when Redis answers, awaits the
    ``before_up`` callbacks (which may fail: the probe goes on), sets ``healthy`` and runs the ``on_up`` ones.
    Its ``supervisor`` runs every background loop of Redis mode, the probe included.
    """

    def __init__(self, url: str, *, op_timeout: float = 1.0, block_s: float = 1.0) -> None:
        retry = Retry(NoBackoff(), 1, (RedisConnectionError,))
        self.redis: Redis = Redis.from_url(
            url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout, retry=retry
        )
        self.blocking: Redis = Redis.from_url(
            url, socket_timeout=block_s + op_timeout, socket_connect_timeout=op_timeout, retry=retry
        )
        self.healthy = False
        self.recovered_at: float | None = None
        """Loop time at which Redis answered again after an outage (``None``: never lost)."""
        self.before_up: list[Callable[[], Awaitable[None]]] = []
        self.on_up: list[Callable[[], None]] = []
        self.supervisor = Supervisor()
        self.address = _address(url)
        """Where Redis is (``host:port``, or a socket's path), for operators: never the URL, which may hold a
        password."""
        self._up = asyncio.Event()
        self._was_up = False

    async def start(self, wait_s: float) -> None:
        """Probe Redis, waiting up to ``wait_s`` for an answer (startup goes on without one: 503 until then)."""
        self._ensure_probe()
        if not await self.wait_up(wait_s):
            logger.warning("Redis is not reachable yet: new streams get 503 until it is")

    def down(self, exc: BaseException) -> None:
        self.recovered_at = None
        if self.healthy:
            logger.warning("Redis unreachable (%s): new streams get 503 until it is back", exc or type(exc).__name__)
        self.healthy = False
        self._up.clear()
        self._ensure_probe()

    def recovering(self, window_s: float) -> bool:
        """Whether Redis came back from an outage less than ``window_s`` ago (it may have restarted empty, and
        replicas may still be rewriting their streams into it)."""
        at = self.recovered_at
        return at is not None and asyncio.get_running_loop().time() - at < window_s

    async def wait_up(self, within_s: float | None = None) -> bool:
        """Whether Redis answers, waiting up to ``within_s`` (``None``: as long as it takes) for it to."""
        if self.healthy:
            return True
        try:
            async with asyncio.timeout(within_s):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    def _ensure_probe(self) -> None:
        self.supervisor.spawn("probe", self._probe_loop)

    async def _probe_loop(self) -> None:
        delay = 0.05
        while True:
            try:
                await self.redis.ping()
                for prepare in self.before_up:
                    await prepare()
            except (*REDIS_DOWN, RedisError) as exc:
                if not isinstance(exc, REDIS_DOWN):
                    logger.error("Redis answers, but getting ready failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            if self._was_up:
                self.recovered_at = asyncio.get_running_loop().time()
            self._was_up = True
            self.healthy = True
            self._up.set()
            logger.info("Redis is reachable")
            for callback in self.on_up:
                callback()
            return

    async def aclose(self) -> None:
        await self.supervisor.stop()
        await self.redis.aclose()
        await self.blocking.aclose()


def _address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class RemoteCopy:
    """A stream read back from Redis: who owns it, which replica generates it, and its entries so far."""

    owner: str
    origin: str
    log: StreamLog


def _apply(log: StreamLog, chunk_id: bytes, fields: dict[bytes, bytes]) -> bool:
    """Append one chunk to ``log``; on a gap (entries trimmed before they were read) end it with an error."""
    first = int(chunk_id.split(b"-", 1)[0])
    if first != log.last_seq + 1:
        err = NotFound("events were dropped before this replica read them; resume is not possible")
        log.append(ERROR, err.body())
        return False
    for kind, payload in orjson.loads(fields[b"e"]):
        log.append(kind, payload)
    return True


class RedisEventLog(MemoryEventLog):
    """The in-process log of this replica's streams, mirrored to Redis; and reads of other replicas' streams."""

    def __init__(
        self,
        link: RedisLink,
        replica: str,
        *,
        lease_s: float = 3.0,
        ttl_s: float = 600.0,
        max_streams: int = 100_000,
        max_events: int = 100_000,
        max_bytes: int = 16 << 20,
    ) -> None:
        super().__init__(ttl_s=ttl_s, max_streams=max_streams, max_events=max_events, max_bytes=max_bytes)
        self.link = link
        self.replica = replica
        self.lease_s = lease_s
        self.lease_ms = int(lease_s * 1000)
        self.block_ms = max(50, self.lease_ms // 3)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.live_ttl_ms = max(self.ttl_ms, 4 * self.lease_ms)
        """Expiry of a live stream's keys, renewed at half-life: if this replica dies, they still go away."""
        self.on_lost: Callable[[str], None] = lambda stream_id: None
        self.renewers: list[Callable[[Pipeline], None]] = []
        """Called with the pipeline of each lease renewal, to add commands (follower presence)."""
        self._dirty: list[MirroredStreamLog] = []
        self._live: dict[str, MirroredStreamLog] = {}
        self._wakeup: asyncio.Future[None] | None = None
        self._hurry = False
        """Something listed is awaited elsewhere: the next flush comes ``FLUSH_INTERVAL_S`` after the last."""
        self._drained = asyncio.Event()
        self._declare_lost = link.redis.register_script(_DECLARE_LOST)
        sha = link.redis.register_script(_WRITE).sha.encode()
        self._write_head = b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n0\r\n" % sha
        ttls = (b"%d" % self.live_ttl_ms, b"%d" % self.ttl_ms)
        self._write_tail = b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in ttls)
        link.before_up.append(self._resync)
        link.on_up.append(self._wake)

    # --- the registry (MemoryEventLog) ------------------------------------------------------------
    def create(self, stream_id: str, owner: str, model: str) -> StreamLog:
        log = cast(MirroredStreamLog, super().create(stream_id, owner, model))
        self._live[stream_id] = log
        return log

    def _new_log(self, stream_id: str, owner: str, model: str, max_events: int, max_bytes: int) -> StreamLog:
        return MirroredStreamLog(stream_id, owner, model, max_events, max_bytes, self._enqueue)

    def _holds(self, log: StreamLog) -> bool:
        """As in memory mode, a finished log is kept as bytes, but only once Redis has it whole (``_settled``):
        until then the writer, and ``_resync`` after Redis comes back empty, need the object."""
        return isinstance(log, MirroredStreamLog) and not log.orphaned and log.mirrored < log.last_seq

    def _settled(self, log: MirroredStreamLog) -> None:
        """Redis has ``log`` whole (or will never have it): no longer live; kept as bytes if it has ended (before
        or after ``finished``, which starts its expiry clock either way)."""
        self._live.pop(log.stream_id, None)
        if log.finished:
            self._keep_frozen(log)

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        supervisor = self.link.supervisor
        supervisor.spawn("writer", self._write_loop)
        # restarted within a renewal period: a lease outliving a failed renewal keeps this replica's streams alive
        supervisor.spawn("lease", self._renew_loop, max_s=self.lease_s / 3)

    async def close(self, flush_s: float = 2.0) -> None:
        """Flush what is pending (the terminal entries of streams ended at shutdown), give up the lease, stop."""
        if self.link.healthy and (self._dirty or not self._drained.is_set()):
            try:
                async with asyncio.timeout(flush_s):
                    await self._drained.wait()
            except TimeoutError:
                logger.warning("could not flush %d streams to Redis before stopping", len(self._dirty))
        await self.link.supervisor.stop("writer", "lease")
        if self.link.healthy:
            try:
                await self.link.redis.delete(replica_key(self.replica))
            except REDIS_DOWN:
                pass

    # --- the writer ---------------------------------------------------------------------------------
    def _enqueue(self, log: MirroredStreamLog) -> None:
        """List ``log`` for the next round trip (it has entries Redis lacks); hurry the writer when they are
        awaited elsewhere: its first chunk, its end, or any entry of a stream followed on another replica."""
        if not log.dirty:
            log.dirty = True
            self._dirty.append(log)
            self._drained.clear()
            if len(self._dirty) == 1:  # the writer may be waiting for work
                self._wake()
        if not self._hurry and (log.mirrored == 0 or log.finished or log.followed):
            self._hurry = True
            self._wake()

    def followed_elsewhere(self, stream_id: str) -> bool:
        """Whether a follower on another replica joined this replica's live stream ``stream_id``."""
        log = self._live.get(stream_id)
        return log is not None and log.followed

    def mark_followed(self, stream_id: str) -> None:
        """A follower on another replica joined this replica's stream: from now on its entries go at the fast
        pace, and what it has pending goes in the next fast round trip."""
        log = self._live.get(stream_id)
        if log is None:
            return
        log.followed = True
        if log.dirty:
            self._enqueue(log)

    def _wake(self) -> None:
        fut = self._wakeup
        if fut is not None:
            self._wakeup = None
            if not fut.done():
                fut.set_result(None)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_flush = 0.0
        self._requeue_unwritten()  # (re)started: a failure may have dropped a batch taken off the list
        while True:
            if not self._dirty or not self.link.healthy:
                if not self._dirty:
                    self._drained.set()
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            # at most one flush per FLUSH_INTERVAL_S, or per QUIET_FLUSH_S while nothing pending is awaited:
            # more entries per chunk, fewer round trips per event
            wait = last_flush + (FLUSH_INTERVAL_S if self._hurry else QUIET_FLUSH_S) - loop.time()
            if wait > 0:  # until then, or until something is awaited (``_enqueue``: the pace gets shorter)
                self._wakeup = woken = loop.create_future()
                timer = loop.call_later(wait, self._wake)
                try:
                    await woken
                finally:
                    timer.cancel()
                continue
            last_flush = loop.time()
            batch, self._dirty = self._dirty, []
            self._hurry = False
            for log in batch:
                log.dirty = False
            try:
                await self._flush(batch)
            except REDIS_DOWN as exc:
                self.link.down(exc)
                self._requeue(batch)
            except RedisError as exc:  # refused as a whole (e.g. out of memory): try again a little later
                logger.error("Redis refused a write: %s", exc)
                self._requeue(batch)
                await asyncio.sleep(0.5)

    def _requeue_unwritten(self) -> None:
        """Put back on the writer's list every live stream with entries Redis has not acknowledged."""
        for log in self._live.values():
            if not log.dirty and not log.orphaned and log.mirrored < log.last_seq:
                self._enqueue(log)

    def _requeue(self, batch: list[MirroredStreamLog]) -> None:
        for log in batch:
            if not log.dirty and not log.orphaned:
                self._enqueue(log)

    async def _flush(self, batch: list[MirroredStreamLog]) -> None:
        """One round trip for the batch: each stream's new entries as one chunk, all in one ``_WRITE`` call."""
        plan: list[tuple[MirroredStreamLog, int, bool]] = []  # log, last seq, terminal
        blob: list[bytes] = []
        max_events = self.max_events
        renew_at = asyncio.get_running_loop().time() + self.live_ttl_ms / 2000
        for log in batch:
            if log.orphaned:
                continue
            start = log.mirrored
            if start + 1 < log.first_seq:  # dropped from memory before Redis got them (a long outage): a gap
                start = log.first_seq - 1
            at = start + 1 - log.first_seq
            kinds = log.kinds[at:]
            if not kinds:
                continue
            n = len(kinds)
            last = start + n
            terminal = kinds[-1] in TERMINAL
            minid = b"%d-0" % (last - max_events + 1) if last > max_events else b"-"
            # a chunk's entries are ``[kind, payload]`` pairs (what ``_apply`` reads): made here, freed with the batch
            key, body = log.key, dumps(list(zip(kinds, log.payloads[at:], strict=True)))
            head = b"%d-0 %s %d %d %d" % (start + 1, minid, n, len(key), len(body))
            if log.mirrored == 0:  # its first chunk: the meta hash too
                meta = [log.owner.encode(), log.model.encode(), self.replica.encode(), repr(log.grace_s).encode()]
                if log.history is not None:
                    meta.append(log.history)
                sizes = " ".join(str(len(f)) for f in meta).encode()
                blob += (b"tf " if terminal else b"mf ", head, b" ", sizes, b"\n", key, body, *meta)
                log.renew_at = renew_at
            else:
                blob += (b"t " if terminal else b"m ", head, b"\n", key, body)
            plan.append((log, last, terminal))
        if not plan:
            return
        results = await self._call_write(b"".join(blob))
        conflicts: list[MirroredStreamLog] = []
        for (log, last, terminal), res in zip(plan, results, strict=True):
            if res != 1:
                text = res.decode(errors="replace") if isinstance(res, bytes) else str(res)
                if "equal or smaller" in text:
                    conflicts.append(log)
                else:
                    logger.error("Redis refused stream %s (%s): it is no longer mirrored", log.stream_id, text)
                    self._orphan(log)
                continue
            log.mirrored = last
            if terminal:
                self._settled(log)
        if conflicts:
            await self._resolve(conflicts)

    async def _call_write(self, blob: bytes) -> list[Any]:
        """One ``_WRITE`` call, packed here and sent on a connection of the link's pool.

        redis-py's command layer (packing each argument in Python, its retry wrapper, the command's bookkeeping)
        costs more CPU than the round trip itself: ~280 → ~170 µs per call (``EVALSHA`` with a 2 KB argument
        against a real redis-server, uvloop). What stays redis-py's: the connection (address, TLS, AUTH, SELECT),
        its timeouts, and a connection that failed mid-call being closed, not reused. As the client's own retry
        does, a connection found dead (Redis restarted) is replaced once; Redis that lost its scripts gets this
        one loaded again. Sending a round trip twice is safe: a chunk Redis already has is refused (``_resolve``)."""
        pool = self.link.redis.connection_pool
        command = b"%s$%d\r\n%s\r\n%s" % (self._write_head, len(blob), blob, self._write_tail)
        reconnected = loaded = False
        while True:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call,unused-ignore]
            try:
                await conn.send_packed_command(command, check_health=False)
                reply: list[Any] = await conn.read_response()
                return reply
            except RedisConnectionError:
                if reconnected:
                    raise
                reconnected = True
            except NoScriptError:
                if loaded:
                    raise
                loaded = True
                await self.link.redis.script_load(_WRITE)
            finally:
                await pool.release(conn)

    async def _resolve(self, conflicts: list[MirroredStreamLog]) -> None:
        """Chunks Redis already had: a replay after a reconnect (skip what is there), or a tombstone."""
        pipe = self.link.redis.pipeline(transaction=False)
        for log in conflicts:
            pipe.xrevrange(events_key(log.stream_id), "+", "-", count=1)
        tops = await pipe.execute()
        for log, top in zip(conflicts, tops, strict=True):
            if not top:
                self._orphan(log)
                continue
            chunk_id, fields = top[0]
            if b"lost" in fields:
                logger.warning("stream %s was declared lost by replica %s: cancelling it here",
                               log.stream_id, fields[b"lost"].decode(errors="replace"))
                self._orphan(log)
                self.on_lost(log.stream_id)
                continue
            log.mirrored = max(log.mirrored, int(chunk_id.split(b"-", 1)[0]) + int(fields[b"n"]) - 1)
            if b"t" in fields:
                self._settled(log)
            elif not log.dirty and log.mirrored < log.last_seq:
                self._enqueue(log)

    async def _resync(self) -> None:
        """Redis answers again, perhaps restarted empty: before new streams are admitted, renew the lease,
        rewrite the streams it lost (from memory, as far as memory still has them) and flush the backlog."""
        await self._renew()
        ids = [sid for sid, log in self._logs.items()
               if isinstance(log, MirroredStreamLog) and log.mirrored and not log.orphaned]
        ids += self._frozen  # finished, Redis had them whole
        if ids:
            pipe = self.link.redis.pipeline(transaction=False)
            for sid in ids:
                pipe.exists(meta_key(sid))
            for sid, exists in zip(ids, await pipe.execute(), strict=True):
                if exists:
                    continue
                log = self._logs.get(sid) or self._unfreeze(sid)  # (or expired meanwhile: gone)
                if not isinstance(log, MirroredStreamLog):
                    continue
                log.mirrored = 0
                self._live[sid] = log
                if not log.dirty:
                    self._enqueue(log)
        batch, self._dirty = self._dirty, []
        self._hurry = False
        for log in batch:
            log.dirty = False
        try:
            await self._flush(batch)
        except REDIS_DOWN:
            self._requeue(batch)
            raise

    def _orphan(self, log: MirroredStreamLog) -> None:
        log.orphaned = True
        self._settled(log)

    # --- the lease ----------------------------------------------------------------------------------
    async def _renew_loop(self) -> None:
        period = self.lease_s / 3
        while True:  # renews first: (re)started after a failure, the lease may be close to its end
            if not self.link.healthy:
                await self.link.wait_up()  # the probe renews (``_resync``) before it reports Redis back
            else:
                try:
                    await self._renew()
                except REDIS_DOWN as exc:
                    self.link.down(exc)
                except RedisError as exc:
                    logger.error("Redis refused a lease renewal: %s", exc)
            await asyncio.sleep(period)

    async def _renew(self) -> None:
        """Renew this replica's lease, the expiry of its live streams' keys when due, and followers' presence."""
        pipe = self.link.redis.pipeline(transaction=False)
        pipe.set(replica_key(self.replica), b"1", px=self.lease_ms)
        now = asyncio.get_running_loop().time()
        for log in self._live.values():
            if log.mirrored and now >= log.renew_at:
                pipe.pexpire(events_key(log.stream_id), self.live_ttl_ms)
                pipe.pexpire(meta_key(log.stream_id), self.live_ttl_ms)
                log.renew_at = now + self.live_ttl_ms / 2000
        for renew in self.renewers:
            renew(pipe)
        for res in await pipe.execute(raise_on_error=False):
            if isinstance(res, ResponseError):
                logger.error("Redis refused a lease renewal: %s", res)

    # --- reading streams of other replicas ----------------------------------------------------------
    async def fetch(self, stream_id: str, *, history: bool = False, seen: int = 0,
                    within_s: float = CATCH_UP_S) -> RemoteCopy | None:
        """The stream as Redis has it, or ``None`` when Redis does not know it (never existed, or expired); with
        ``history``, what its log keeps for later requests too (``StreamLog.history``).

        The generating replica writes to Redis a moment after its clients got the events (``FLUSH_INTERVAL_S``,
        ``QUIET_FLUSH_S``): when Redis does not know the stream yet, or its copy is short of ``seen`` (the last
        event the client already has) and not finished, this waits up to ``within_s`` for the rest (``XREAD
        BLOCK`` on the stream's events: it returns the moment they are written). Otherwise a client that resumed
        elsewhere at once would get 404 for a stream that exists, or a live stream for one that is over (and
        its terminal event again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        copy = await self._read(stream_id, history)
        if copy is None:
            if not await self.written(stream_id, within_s):
                return None
            copy = await self._read(stream_id, history)
            if copy is None:
                return None
        key = events_key(stream_id)
        log = copy.log
        while not log.finished and log.last_seq < seen and (left := deadline - loop.time()) > 0:
            reply: Any = await self.link.blocking.xread({key: f"{log.last_seq}-0"}, count=1024,
                                                        block=max(1, round(left * 1000)))
            if not reply:
                break
            for _key, chunks in reply:
                for chunk_id, fields in chunks:
                    if not _apply(log, chunk_id, fields):
                        return copy
        return copy

    async def written(self, stream_id: str, within_s: float = CATCH_UP_S) -> bool:
        """Whether Redis has the stream, or gets its first chunk within ``within_s``: a stream another replica
        started a moment ago may not be there yet (its first chunk and its meta are written together)."""
        reply: Any = await self.link.blocking.xread({events_key(stream_id): "0-0"}, count=1,
                                                    block=max(1, round(within_s * 1000)))
        return bool(reply)

    async def _read(self, stream_id: str, history: bool) -> RemoteCopy | None:
        """One read of the stream's meta and events (``fetch`` without the wait)."""
        fields = [*_META_FIELDS, "history"] if history else list(_META_FIELDS)
        pipe = self.link.redis.pipeline(transaction=False)
        pipe.hmget(meta_key(stream_id), fields)
        pipe.xrange(events_key(stream_id), "-", "+")
        values, chunks = await pipe.execute()
        meta: dict[str, bytes | None] = dict(zip(fields, values, strict=True))
        owner, model, replica = meta["owner"], meta["model"], meta["replica"]
        if owner is None or model is None or replica is None or not chunks:
            return None
        log = StreamLog(stream_id, owner.decode(), model.decode(), self.max_events, self.max_bytes)
        log.first_seq = int(chunks[0][0].split(b"-", 1)[0])
        log.grace_s = float(meta["grace"] or 0.0)
        log.history = meta.get("history")
        for chunk_id, fields in chunks:
            if not _apply(log, chunk_id, fields):
                break
        return RemoteCopy(log.owner, replica.decode(), log)

    async def follow(self, log: StreamLog, origin: str) -> None:
        """Append to ``log`` what replica ``origin`` writes to Redis, until the terminal entry."""
        sid = log.stream_id
        key = events_key(sid)
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        while not log.finished:
            try:
                reply: Any = await self.link.blocking.xread({key: f"{log.last_seq}-0"}, count=1024, block=self.block_ms)
                down_since = None
                if not reply:  # quiet for a while: is the generating replica still there?
                    lost = GenerationLost("the replica generating this stream stopped (its lease expired)").body()
                    keys = [key, replica_key(origin), meta_key(sid), followers_key(sid)]
                    args: list[EncodableT] = [dumps([[ERROR, lost]]), self.replica, self.ttl_ms]
                    if await self._declare_lost(keys=keys, args=args) < 0:
                        log.append(ERROR, lost)  # the stream's keys expired under us
                    continue
            except REDIS_DOWN as exc:
                self.link.down(exc)
                now = loop.time()
                if down_since is None:
                    down_since = now
                left = down_since + self.lease_s - now
                if left <= 0 or not await self.link.wait_up(left):
                    # The stream goes on elsewhere: inventing a terminal event (or an id) here would lie. End
                    # this copy without one, so the response closes like a dropped connection; the client's
                    # resume gets 503 until Redis is back, then the rest without a gap.
                    logger.warning("stream %s: no Redis for %.1fs, closing its followers here", sid, self.lease_s)
                    log.finished = True
                    log.wake()
                    return
                continue
            for _key, chunks in reply:
                for chunk_id, fields in chunks:
                    if not _apply(log, chunk_id, fields):
                        return
