"""The in-process event log: seq numbering, bounds, expiry."""

from __future__ import annotations

import asyncio
import time

from ssegate.core.entries import DELTA, DONE, START
from ssegate.core.log import MemoryEventLog, StreamLog


def test_seq_numbering_and_since() -> None:
    log = StreamLog("s", "o", "m")
    assert log.append(START, {}) == 1
    assert log.append(DELTA, "a") == 2
    assert log.append(DELTA, "b") == 3
    assert log.since(1) == [(DELTA, "a"), (DELTA, "b")]
    assert log.since(3) == []
    assert log.text() == "ab" and not log.finished
    log.append(DONE, {"finish_reason": "stop"})
    assert log.finished and log.terminal() == (DONE, {"finish_reason": "stop"})


def test_events_beyond_the_count_bound_are_dropped_oldest_first() -> None:
    log = StreamLog("s", "o", "m", max_events=10)
    for i in range(25):
        log.append(DELTA, str(i))
    assert log.last_seq == 25 and log.first_seq == 16 and len(log.entries) == 10
    assert log.since(3) is None  # resuming before the kept window is impossible
    assert log.since(20) == [(DELTA, str(i)) for i in range(20, 25)]


def test_text_beyond_the_byte_bound_is_dropped_so_memory_stays_bounded() -> None:
    log = StreamLog("s", "o", "m", max_bytes=10_000)
    for _ in range(1000):
        log.append(DELTA, "x" * 1000)
    assert log.size <= 10_000
    assert sum(len(p) for _, p in log.entries) == log.size
    assert log.last_seq == 1000 and log.since(log.last_seq - 1) == [(DELTA, "x" * 1000)]


async def test_finished_logs_expire_and_the_registry_is_bounded() -> None:
    reg = MemoryEventLog(ttl_s=0.05, max_streams=3)
    logs = [reg.create(f"s{i}", "o", "m") for i in range(3)]
    logs[0].append(DONE, {})
    reg.finished(logs[0])
    reg.create("s3", "o", "m")  # at the cap: the finished one goes first
    assert reg.get("s0") is None and reg.get("s1") is logs[1]
    logs[1].append(DONE, {})
    reg.finished(logs[1])
    await asyncio.sleep(0.1)  # the expiry clock itself is what is under test
    assert reg.get("s1") is None and len(reg) == 2


async def test_finished_logs_expire_in_turn_with_one_timer() -> None:
    """Expiry is one sweep over the logs in the order they finished (not a timer per log in the loop's heap):
    each goes ``ttl_s`` after its own end, a log evicted meanwhile is skipped, and later ones wait their turn.
    (Checked at 0.2 s past each expiry, with the later log ending at least 0.5 s after the first ones: a loaded
    machine's late wake-ups up to 0.3 s change nothing.)"""
    reg = MemoryEventLog(ttl_s=1.0)
    first = [reg.create(f"a{i}", "o", "m") for i in range(3)]
    for log in first:
        log.append(DONE, {})
        reg.finished(log)
    reg.remove("a1")
    await asyncio.sleep(0.5)
    later = reg.create("b", "o", "m")
    later.append(DONE, {})
    reg.finished(later)
    await asyncio.sleep(max(0.0, first[0].finished_at + 1.2 - time.monotonic()))
    assert len(reg) == 1 and reg.get("b") is later  # the first ones' time has come, not the later one's
    await asyncio.sleep(max(0.0, later.finished_at + 1.2 - time.monotonic()))
    assert len(reg) == 0
