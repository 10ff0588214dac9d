"""``obs/logs.py``'s JSON line: a line that names its stream is written as a kept head, its timestamp and its
fields (``JSONFormatter.line``); it must be the same text as the one object of all its keys that any other line
is, whatever its level, logger, message and fields hold."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import orjson
import pytest

from ssegate.obs import logs
from ssegate.obs.logs import JSONFormatter

CREATED = 1_764_000_000.25


def _whole(created: float, level: str, logger: str, msg: str, extra: dict[str, Any]) -> str:
    """The line as one object of all its keys, in their order (what the formatter wrote before heads were kept)."""
    ts = datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(timespec="milliseconds")
    return orjson.dumps({"ts": ts, "level": level.lower(), "logger": logger, "msg": msg, **extra},
                        default=str).decode()


CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("INFO", "ssegate.stream", "stream ended", {"stream_id": "s1", "model": "m", "tokens": 3, "ttft_ms": None}),
    ("WARNING", "ssegate.http", 'a "quoted"\nmessage \u00e9\U0001f600', {"stream_id": "s2", "x": [1, {"y": 2.5}]}),
    ("ERROR", 'odd"logger\\', "m", {"owner": "key:ab", "stream_id": "s3"}),
    ("INFO", "ssegate.stream", "stream ended", {"stream_id": "s4", "when": datetime.date(2026, 1, 2)}),  # default=str
    ("INFO", "ssegate.stream", "stream ended", {"stream_id": "s5", "msg": "theirs"}),  # a first key: set in place
    ("INFO", "ssegate.stream", "stream ended", {"stream_id": "s6", "ts": 1, "level": "x"}),
    ("DEBUG", "ssegate", "no stream", {"a": 1}),
    ("DEBUG", "ssegate", "nothing", {}),
]


@pytest.mark.parametrize(("level", "logger", "msg", "extra"), CASES)
def test_a_line_is_one_object_of_its_keys_in_order(level: str, logger: str, msg: str,
                                                  extra: dict[str, Any]) -> None:
    formatter = JSONFormatter(redact=[])
    for _ in range(2):  # the head made, then the head kept
        assert formatter.line(CREATED, level, logger, msg, extra) == _whole(CREATED, level, logger, msg, extra)


def test_redaction_covers_the_kept_head_and_the_fields() -> None:
    formatter = JSONFormatter(redact=["sekrit-value"])
    line = formatter.line(CREATED, "INFO", "ssegate.stream", "x sekrit-value", {"stream_id": "sekrit-value"})
    assert "sekrit-value" not in line and line.count(logs.REDACTED) == 2


def test_the_kept_heads_are_bounded() -> None:
    formatter = JSONFormatter(redact=[])
    before = dict(logs._heads)
    try:
        for i in range(400):
            msg = f"message {i}"
            assert formatter.line(CREATED, "INFO", "t", msg, {"stream_id": "s"}) == _whole(
                CREATED, "INFO", "t", msg, {"stream_id": "s"})
        assert len(logs._heads) == 256
    finally:
        logs._heads.clear()
        logs._heads.update(before)


def test_a_record_formats_as_its_fields_line() -> None:
    record = logging.LogRecord("ssegate.stream", logging.INFO, __file__, 1, "stream ended", None, None)
    record.created = CREATED
    record.stream_id = "s7"
    record.tokens = 9
    assert JSONFormatter(redact=[]).format(record) == _whole(CREATED, "INFO", "ssegate.stream", "stream ended",
                                                             {"stream_id": "s7", "tokens": 9})
