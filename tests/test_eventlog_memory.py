"""The in-process event log: seq numbering, bounds, expiry."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

from ssegate.core.entries import DELTA, DONE, REASONING, START, TOOL_ARGS, TOOL_CALL
from ssegate.core.log import FREEZE_MAX_TEXT, MemoryEventLog, StreamLog
from tests.support.entries import rows


def test_seq_numbering_and_since() -> None:
    log = StreamLog("s", "o", "m")
    assert log.append(START, {}) == 1
    assert log.append(DELTA, "a") == 2
    assert log.append(DELTA, "b") == 3
    assert log.since(1) == ([DELTA, DELTA], ["a", "b"])
    assert log.since(3) == ([], [])
    assert log.text() == "ab" and not log.finished
    log.append(DONE, {"finish_reason": "stop"})
    assert log.finished and log.terminal() == (DONE, {"finish_reason": "stop"})


def test_events_beyond_the_count_bound_are_dropped_oldest_first() -> None:
    log = StreamLog("s", "o", "m", max_events=10)
    for i in range(25):
        log.append(DELTA, str(i))
    assert log.last_seq == 25 and log.first_seq == 16 and len(log.kinds) == 10
    assert log.since(3) is None  # resuming before the kept window is impossible
    assert log.since(20) == ([DELTA] * 5, [str(i) for i in range(20, 25)])
    assert rows(log) == [(DELTA, str(i)) for i in range(15, 25)]


def test_text_beyond_the_byte_bound_is_dropped_so_memory_stays_bounded() -> None:
    log = StreamLog("s", "o", "m", max_bytes=10_000)
    for _ in range(1000):
        log.append(DELTA, "x" * 1000)
    assert log.size <= 10_000
    assert sum(len(p) for p in log.payloads) == log.size and len(log.kinds) == len(log.payloads)
    assert log.last_seq == 1000 and log.since(log.last_seq - 1) == ([DELTA], ["x" * 1000])


def test_an_event_appended_is_no_object_the_collector_counts() -> None:
    """A log keeps its entries' kinds and payloads in two lists: a text event adds no object that the garbage
    collector tracks (a ``(kind, payload)`` tuple each did: at 40,000 events a second, a young collection every half
    second, and every tenth of them walked every live stream's objects)."""
    log = StreamLog("s", "o", "m")
    log.append(START, {"stream_id": "s", "model": "m"})
    texts = [f"token {i}" for i in range(10_000)]
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for text in texts:
            log.append(DELTA if len(text) % 2 else REASONING, text)
        added = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert log.last_seq == 10_001 and added < 100, added


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
    got = reg.get("b")  # (a copy: a finished log is kept as bytes)
    assert len(reg) == 1 and got is not None and rows(got) == rows(later)  # the first ones' time has come
    await asyncio.sleep(max(0.0, later.finished_at + 1.2 - time.monotonic()))
    assert len(reg) == 0


async def test_a_finished_log_is_kept_as_bytes_and_read_back_whole() -> None:
    """A finished log is kept as bytes (nothing the garbage collector walks) and every reader gets it back as it
    was: entries (kinds and payloads), numbering, owner, model, history, resume grace, times. Whoever followed it
    keeps the object it had. A log whose payloads are not plain JSON stays the object it is."""
    reg = MemoryEventLog(ttl_s=60.0, max_events=4)
    log = reg.create("s", "owner", "model")
    log.history = b'{"messages": []}'
    log.grace_s = 30.0
    log.append(START, {"stream_id": "s", "model": "model"})
    log.append(REASONING, "think")
    log.append(TOOL_CALL, {"index": 0, "id": "c1", "name": "f"})
    log.append(TOOL_ARGS, {"index": 0, "arguments": '{"a": 1.5}'})
    log.append(DELTA, "é ✓")  # over max_events: the first entry is dropped, seq goes on
    log.append(DONE, {"finish_reason": "tool_calls", "usage": {"prompt_tokens": 9, "completion_tokens": 3},
                      "provider_data": {"signature": "x" * 100, "n": [1, None, True]}})
    reg.finished(log)
    assert reg._logs == {} and list(reg._frozen) == ["s"]
    gc.collect()
    assert not gc.is_tracked(reg._frozen["s"])
    got = reg.get("s")
    assert got is not None and got is not log
    assert rows(got) == rows(log) and type(got.kinds) is list and type(got.payloads) is list
    assert (got.first_seq, got.last_seq, got.finished, got.finished_at, got.created_at, got.size) == (
        log.first_seq, log.last_seq, True, log.finished_at, log.created_at, log.size)
    assert (got.owner, got.model, got.history, got.grace_s, got.max_events) == ("owner", "model", log.history, 30.0, 4)
    assert got.terminal() == log.terminal() and got.since(3) == log.since(3) and got.since(1) is None

    # the bytes kept are the JSON's size (orjson's own bytes keep its 4 KiB buffer: kept for ttl_s, that was
    # three times what the objects took)
    small = reg.create("small", "o", "m")
    small.append(DONE, {"finish_reason": "stop"})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reg.finished(small)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1024, kept
    reg.remove("small")

    long = reg.create("long", "o", "m")  # over FREEZE_MAX_TEXT: freezing and reading it back would stall the loop
    long.append(DELTA, "x" * (FREEZE_MAX_TEXT + 1))
    long.append(DONE, {"finish_reason": "stop"})
    reg.finished(long)
    assert reg.get("long") is long
    reg.remove("long")

    odd = reg.create("odd", "o", "m")
    odd.append(DONE, {"finish_reason": "stop", "usage": {1, 2}})  # a set: not JSON
    reg.finished(odd)
    assert reg.get("odd") is odd and len(reg) == 2
    reg.remove("s")
    assert reg.get("s") is None and len(reg) == 1
