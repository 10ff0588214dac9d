"""The in-process event log (the default): every stream's entries in two lists, bounded, expiring.

``StreamLog`` is written on the hot path: ``append`` is two list appends plus telling the followers: a waiter future
is resolved, a listener (a live response) is called at once, so it can write the new event without a task switch.
While the entries of one upstream read are appended (``hold``, ``release``), the followers are told once, at the
end, so that a client gets them in one write. Followers read by seq. Per stream at most ``max_events`` entries and
``max_bytes`` of text are kept (older ones are dropped and resuming before them is ``not_found``); at most
``max_streams`` logs are kept in total (the oldest finished go first); a finished log expires ``ttl_s`` after its
terminal entry. A log also keeps what its request asked to keep for later requests (``history``,
the Responses API's conversation), for as long as its entries. A finished log is kept as bytes until it expires
(``MemoryEventLog``): out of the garbage collector's sight, whose pauses stop every stream.

Entries are kept as two lists side by side, ``kinds`` and ``payloads``, not as a list of ``(kind, payload)``
tuples: a tuple per event is an object the collector tracks, and 40,000 events a second of them ran a
young collection every half second, every tenth of which walked every live stream's objects (tens of
milliseconds at 1000 streams, measured in ``capacity``). A kind is a small int and a text payload a str,
neither of which the collector tracks. Followers read ``kinds`` and ``payloads`` from the same index.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Final

import orjson
from mypy_extensions import mypyc_attr

from .entries import DELTA, REASONING, TERMINAL, TOOL_ARGS, Entry, entry_size

__all__ = ["FREEZE_MAX_ENTRIES", "FREEZE_MAX_TEXT", "MemoryEventLog", "StreamLog"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_running_loop: Final = asyncio.get_running_loop
_dumps: Final = orjson.dumps
_monotonic: Final = time.monotonic


class StreamLog:
    __slots__ = (
        "_hold",
        "_listeners",
        "_waiters",
        "created_at",
        "finished",
        "finished_at",
        "first_seq",
        "grace_s",
        "history",
        "kinds",
        "max_bytes",
        "max_events",
        "model",
        "owner",
        "payloads",
        "size",
        "stream_id",
        "terminal_delivered",
    )

    def __init__(
        self, stream_id: str, owner: str, model: str, max_events: int = 100_000, max_bytes: int = 16 << 20
    ) -> None:
        self.stream_id = stream_id
        self.owner = owner
        self.model = model
        self.kinds: list[int] = []
        """Each entry's kind (``entries.py``), the entry of seq ``first_seq + i`` at index ``i``..."""
        self.payloads: list[Any] = []
        """... and its payload, at the same index."""
        self.first_seq = 1
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.size = 0
        self.finished = False
        self.finished_at = 0.0
        self.created_at = _monotonic()
        self.terminal_delivered = False
        self.grace_s = 0.0
        """The stream's resume grace (kept with its events, so that followers on other replicas know it)."""
        self.history: bytes | None = None
        """What a later request continues from (``ChatRequest.history``), kept as long as the events; not counted
        against ``max_bytes`` (who sets it bounds it: the Responses API at ``LOG_MAX_BYTES``)."""
        # followers, made on first use and dropped when the last one leaves: a finished log nobody follows (what
        # the log keeps for ``ttl_s``, thousands of them) holds no empty lists for the garbage collector to walk
        self._waiters: list[asyncio.Future[None]] | None = None
        self._listeners: list[Callable[[], None]] | None = None
        self._hold = 0
        """0, or while ``hold`` lasts: 1, and 2 once an append was kept from the followers."""

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.kinds) - 1

    @property
    def has_output(self) -> bool:
        """Something after ``start``: output, or the terminal entry."""
        return self.last_seq >= 2

    def append(self, kind: int, payload: Any) -> int:
        kinds = self.kinds
        kinds.append(kind)
        self.payloads.append(payload)
        if kind == DELTA or kind == REASONING:  # what an entry weighs: ``entry_size``, inline
            self.size += len(payload)
        elif kind == TOOL_ARGS:
            self.size += len(payload["arguments"])
        elif kind in TERMINAL:
            self.finished = True
            self.finished_at = _monotonic()
        if self.size > self.max_bytes:
            self._trim_bytes()
        if len(kinds) > self.max_events:
            drop = len(kinds) - self.max_events
            payloads = self.payloads
            self._drop(drop, sum(entry_size(kinds[i], payloads[i]) for i in range(drop)))
        if self._waiters or self._listeners:
            if self._hold:
                self._hold = 2
            else:
                self.wake()
        return self.first_seq + len(kinds) - 1

    def hold(self) -> None:
        """Until ``release``, appends wake no follower (the entries of one upstream read: ``Generation.begin_read``)."""
        self._hold = 1

    def release(self, wake: bool) -> None:
        """End ``hold``: the followers are woken for what was appended meanwhile when ``wake``; else that waits for
        the next append, which wakes them for all of it (a read that ended the answer: its terminal entry)."""
        held, self._hold = self._hold, 0
        if held == 2 and wake:
            self.wake()

    def _trim_bytes(self) -> None:
        """Drop the oldest entries until the text kept is under three quarters of ``max_bytes``."""
        kinds, payloads = self.kinds, self.payloads
        goal = self.max_bytes * 3 // 4
        weight = 0
        drop = 0
        while self.size - weight > goal and drop < len(kinds) - 1:
            weight += entry_size(kinds[drop], payloads[drop])
            drop += 1
        self._drop(drop, weight)

    def _drop(self, drop: int, weight: int) -> None:
        """Drop the oldest ``drop`` entries, whose ``entry_size`` together is ``weight``."""
        del self.kinds[:drop]
        del self.payloads[:drop]
        self.size -= weight
        self.first_seq += drop

    def wake(self) -> None:
        """Tell every follower to look again (after an append, or when the stream's state changed): the listeners
        first, which may write to their clients right here, then the waiters, whose tasks run later."""
        if self._listeners:
            for listener in self._listeners:
                listener()
        if self._waiters:
            waiters, self._waiters = self._waiters, None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` at every ``wake`` until ``unlisten``; it runs inside the appender and must not block
        or raise."""
        if self._listeners is None:
            self._listeners = [listener]
        else:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[], None]) -> None:
        listeners = self._listeners
        if listeners is not None and listener in listeners:
            listeners.remove(listener)
            if not listeners:
                self._listeners = None

    def waiter(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[None]:
        """A future (of ``loop``, else of the running loop) resolved at the next append (or ``wake``)."""
        fut: asyncio.Future[None] = (loop if loop is not None else _running_loop()).create_future()
        if self._waiters is None:
            self._waiters = [fut]
        else:
            self._waiters.append(fut)
        return fut

    def discard_waiter(self, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters
        if waiters is not None and fut in waiters:
            waiters.remove(fut)
            if not waiters:
                self._waiters = None

    def since(self, after: int) -> tuple[list[int], list[Any]] | None:
        """The kinds and payloads of the entries with seq > ``after``; ``None`` when some of them were already
        dropped."""
        if after + 1 < self.first_seq:
            return None
        start = after + 1 - self.first_seq
        return self.kinds[start:], self.payloads[start:]

    def text(self) -> str:
        kinds = self.kinds
        return "".join(p for i, p in enumerate(self.payloads) if kinds[i] == DELTA)

    def terminal(self) -> Entry | None:
        if self.finished and self.kinds:
            return self.kinds[-1], self.payloads[-1]
        return None


FREEZE_MAX_ENTRIES: Final = 10_000
"""A finished log with more entries than this stays an object (see ``MemoryEventLog``)..."""
FREEZE_MAX_TEXT: Final = 1 << 20
"""... and so does one with more text than this: freezing it costs up to ~1.5 ms in the event loop, reading it
back ~3 ms (10,000 entries, 1 MB); a log of 100,000 entries would take 25 ms to read back."""


def _freeze(log: StreamLog) -> tuple[bytes, bytes | None] | None:
    """A finished log as bytes (and its ``history``), or None when a payload is not plain JSON."""
    try:
        blob = _dumps((log.first_seq, log.kinds, log.payloads, log.owner, log.model, log.grace_s, log.created_at,
                             log.finished_at, log.size, log.max_events, log.max_bytes))
    except TypeError:  # (orjson.JSONEncodeError) a payload of another type: kept as it is
        return None
    # orjson's bytes keep the buffer it wrote into (4 KiB at least): kept for ttl_s, they are copied to their size
    return memoryview(blob).tobytes(), log.history


def _thaw(stream_id: str, frozen: tuple[bytes, bytes | None],
          make: Callable[[str, str, str, int, int], StreamLog] = StreamLog) -> StreamLog:
    """The log again, as ``make`` builds one (``StreamLog``'s arguments)."""
    blob, history = frozen
    (first, kinds, payloads, owner, model, grace_s, created_at, finished_at, size, max_events,
     max_bytes) = orjson.loads(blob)
    log = make(stream_id, owner, model, max_events, max_bytes)
    log.kinds = kinds
    log.payloads = payloads
    log.first_seq = first
    log.size = size
    log.grace_s = grace_s
    log.created_at = created_at
    log.finished = True
    log.finished_at = finished_at
    log.history = history
    return log


@mypyc_attr(allow_interpreted_subclasses=True)  # cluster/redis_log.py: RedisEventLog
class MemoryEventLog:
    """The registry of ``StreamLog``s of this process.

    A finished log is kept as bytes (``_frozen``: its entries as JSON, which they are by design, ``entries.py``)
    until it expires, and made a ``StreamLog`` again for each reader that asks for it (a resume, a later request
    that continues it). Kept as objects, the logs of the last ``ttl_s`` (thousands of objects a minute) were what
    the garbage collector walked at each pass, its pauses growing with traffic; as bytes they are nothing it
    looks at, in less than half the memory (a one-token stream: 585 bytes of RSS instead of 1,479; one of 100
    tokens: a fifth). Whoever already follows the log keeps the object it has. A very long log stays an object
    (``FREEZE_MAX_ENTRIES``, ``FREEZE_MAX_TEXT``): writing and reading it back would stall the event loop. A
    subclass may hold a finished log as an object for a while longer (``_holds``; ``RedisEventLog``: until Redis
    has it whole) and then freeze it (``_keep_frozen``)."""

    def __init__(
        self, *, ttl_s: float = 600.0, max_streams: int = 100_000, max_events: int = 100_000, max_bytes: int = 16 << 20
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.max_streams = max_streams
        self.max_events = max_events
        self._logs: OrderedDict[str, StreamLog] = OrderedDict()
        self._frozen: dict[str, tuple[bytes, bytes | None]] = {}
        """Finished logs as bytes, in the order they finished."""
        self._expiring: deque[tuple[float, str]] = deque()
        """Finished logs by when they expire: every log has the same ``ttl_s``, so the order they finished in."""
        self._sweep: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._logs) + len(self._frozen)

    def create(self, stream_id: str, owner: str, model: str) -> StreamLog:
        if len(self) >= self.max_streams:
            self._evict()
        log = self._new_log(stream_id, owner, model, self.max_events, self.max_bytes)
        self._logs[stream_id] = log
        return log

    def _new_log(self, stream_id: str, owner: str, model: str, max_events: int, max_bytes: int) -> StreamLog:
        """A log of this registry's own (``RedisEventLog``: one its writer mirrors)."""
        return StreamLog(stream_id, owner, model, max_events, max_bytes)

    def get(self, stream_id: str) -> StreamLog | None:
        log = self._logs.get(stream_id)
        if log is None:
            frozen = self._frozen.get(stream_id)
            if frozen is None:
                return None
            log = _thaw(stream_id, frozen)
        if log.finished and _monotonic() - log.finished_at > self.ttl_s:
            self.remove(stream_id)
            return None
        return log

    def finished(self, log: StreamLog) -> None:
        """Start the expiry clock of a finished log, and keep it as bytes from now on. One timer for all of them
        (``_expire``), not one each: a timer per stream would keep ``ttl_s`` × streams per second entries in the
        event loop's heap."""
        self._expiring.append((log.finished_at + self.ttl_s, log.stream_id))
        if self._sweep is None:
            self._sweep = _running_loop().call_later(self.ttl_s, self._expire)
        self._keep_frozen(log)

    def _keep_frozen(self, log: StreamLog) -> None:
        """Keep ``log`` (finished) as bytes from now on, unless it is too long, or gone, or ``_holds`` it."""
        sid = log.stream_id
        if (len(log.kinds) <= FREEZE_MAX_ENTRIES and log.size <= FREEZE_MAX_TEXT and self._logs.get(sid) is log
                and not self._holds(log)):
            frozen = _freeze(log)
            if frozen is not None:
                del self._logs[sid]
                self._frozen[sid] = frozen

    def _unfreeze(self, stream_id: str) -> StreamLog | None:
        """Keep the frozen log ``stream_id`` as an object again (``_new_log``'s), and return it; ``None`` when it
        is not frozen."""
        frozen = self._frozen.pop(stream_id, None)
        if frozen is None:
            return None
        log = self._logs[stream_id] = _thaw(stream_id, frozen, self._new_log)
        return log

    def _holds(self, log: StreamLog) -> bool:
        """Whether this registry still needs ``log``, finished, as an object (``RedisEventLog``: until Redis has
        it whole)."""
        return False

    def _expire(self) -> None:
        self._sweep = None
        now = _monotonic()
        expiring, logs, frozen = self._expiring, self._logs, self._frozen
        while expiring and expiring[0][0] <= now:
            _, sid = expiring.popleft()
            if frozen.pop(sid, None) is not None:
                continue
            log = logs.get(sid)
            if log is not None and log.finished and log.finished_at + self.ttl_s <= now:
                del logs[sid]
        if expiring:
            self._sweep = _running_loop().call_later(expiring[0][0] - now, self._expire)

    def remove(self, stream_id: str) -> None:
        self._logs.pop(stream_id, None)
        self._frozen.pop(stream_id, None)

    def _evict(self) -> None:
        if self._frozen:  # the one that finished first
            self._frozen.pop(next(iter(self._frozen)))
            return
        for sid, log in self._logs.items():
            if log.finished:
                self.remove(sid)
                return
        # every log is live: the cap on live streams is enforced by admission control, so this is rare;
        # drop the oldest anyway to keep memory bounded.
        sid = next(iter(self._logs))
        self.remove(sid)

    def clear(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._expiring.clear()
        self._logs.clear()
        self._frozen.clear()
