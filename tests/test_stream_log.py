"""``obs/stream_log.py``: the ``stream ended`` line's record is a copy of a template, and must read exactly like
the record an ordinary ``logger.info(..., extra=...)`` call makes, to every filter, handler and formatter."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from ssegate.core.outcome import Outcome
from ssegate.obs import stream_log as module
from ssegate.obs.stream_log import StreamLogger, stream_log

OUTCOME = Outcome("s1", "key:ab12", "m", "openai:http://up/v1", "*", "done", None, 3, 0.012, 0.5, 1, None)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Keep]:
    handler = Keep()
    level = stream_log.level
    stream_log.addHandler(handler)
    stream_log.setLevel(logging.INFO)
    module._templates.clear()
    try:
        yield handler
    finally:
        stream_log.removeHandler(handler)
        stream_log.setLevel(level)


@pytest.mark.parametrize("srcfile", [True, False])
def test_the_end_line_reads_like_an_ordinary_record(kept: Keep, srcfile: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attribute but the time is the ordinary call's (the source too, whether or not the logging module
    collects it); the time is now, and consistent across ``created``, ``msecs`` and ``relativeCreated``."""
    if not srcfile:
        monkeypatch.setattr(logging, "_srcfile", None)
    logger = StreamLogger()
    logger.ended(OUTCOME)  # makes the template
    before = time.time()
    logger.ended(OUTCOME)
    after = time.time()
    copied = kept.records[-1]
    names = ("stream_id", "model", "owner", "outcome", "tokens", "duration_ms", "upstream_attempts", "model_entry",
             "deployment", "ttft_ms")
    extra = {k: copied.__dict__[k] for k in names}
    stream_log.info("stream ended", extra=extra)  # the ordinary record, from the ordinary call
    ordinary = kept.records[-1]
    assert type(copied) is type(ordinary) is logging.LogRecord and copied is not kept.records[0]
    timing = {"created", "msecs", "relativeCreated"}
    source = {"pathname", "filename", "module", "lineno", "funcName"}
    assert list(copied.__dict__) == list(ordinary.__dict__)  # same attributes, in the same order (extra last)
    for key, value in ordinary.__dict__.items():
        if key not in timing | source:
            assert copied.__dict__[key] == value, key
    if srcfile:
        assert (copied.filename, copied.funcName) == ("stream_log.py", "ended")
    else:
        assert (copied.pathname, copied.lineno, copied.funcName) == (
            ordinary.pathname, ordinary.lineno, ordinary.funcName) == ("(unknown file)", 0, "(unknown function)")
    assert before <= copied.created <= after
    assert copied.msecs == int((copied.created - int(copied.created)) * 1000)
    assert copied.relativeCreated == pytest.approx((copied.created - logging._startTime) * 1000, abs=1.0)
    assert copied.getMessage() == "stream ended" and copied.stream_id == "s1" and copied.tokens == 3


def test_a_custom_record_factory_gets_the_line(kept: Keep) -> None:
    class Mine(logging.LogRecord):
        pass

    old = logging.getLogRecordFactory()
    logging.setLogRecordFactory(Mine)
    try:
        StreamLogger().ended(OUTCOME)
    finally:
        logging.setLogRecordFactory(old)
    assert type(kept.records[-1]) is Mine and kept.records[-1].stream_id == "s1"


def test_each_line_is_its_own_record(kept: Keep) -> None:
    """A filter that changes one record changes nothing in the next (they are copies, not one shared object)."""

    def stamp(record: logging.LogRecord) -> bool:
        record.stamped = True
        record.msg = "changed"
        return True

    stream_log.addFilter(stamp)
    try:
        StreamLogger().ended(OUTCOME)
        stream_log.removeFilter(stamp)
        StreamLogger().ended(OUTCOME)
    finally:
        stream_log.removeFilter(stamp)
    first, second = kept.records[-2:]
    assert first.msg == "changed" and second.msg == "stream ended" and not hasattr(second, "stamped")


def test_plain_stream_handlers_get_the_line_as_the_logging_module_would_give_it() -> None:
    """The end line goes to a plain ``StreamHandler`` without the logging module's handler calls (``_handle``),
    and still by its rules: each handler's level, the handler's filters, ``propagate``, a disabled logger, and the
    formatter of each handler (none: the default one)."""
    import io

    parent = logging.getLogger("ssegate")
    saved = (parent.handlers[:], parent.propagate, stream_log.level, stream_log.propagate, stream_log.handlers[:])
    quiet, loud, mine, dropped = io.StringIO(), io.StringIO(), io.StringIO(), io.StringIO()
    over_warning = logging.StreamHandler(quiet)
    over_warning.setLevel(logging.WARNING)
    formatted = logging.StreamHandler(loud)
    formatted.setFormatter(logging.Formatter("%(levelname)s|%(message)s|%(tokens)s"))
    filtered = logging.StreamHandler(dropped)
    filtered.addFilter(lambda record: False)
    try:
        parent.handlers[:] = [over_warning, formatted, filtered]
        parent.propagate = False
        stream_log.handlers[:] = [logging.StreamHandler(mine)]
        stream_log.propagate = True
        stream_log.setLevel(logging.INFO)
        module._templates.clear()
        StreamLogger().ended(OUTCOME)
        assert quiet.getvalue() == "" and dropped.getvalue() == ""
        assert loud.getvalue() == "INFO|stream ended|3\n"
        assert mine.getvalue() == "stream ended\n"  # no formatter: the logging module's default one
        stream_log.propagate = False  # the parent's handlers no longer get it
        StreamLogger().ended(OUTCOME)
        assert loud.getvalue() == "INFO|stream ended|3\n" and mine.getvalue() == "stream ended\n" * 2
        stream_log.disabled = True
        StreamLogger().ended(OUTCOME)
        assert mine.getvalue() == "stream ended\n" * 2
    finally:
        stream_log.disabled = False
        parent.handlers[:], parent.propagate, level, stream_log.propagate, stream_log.handlers[:] = saved
        stream_log.setLevel(level)


def test_json_handlers_get_the_formatters_line_without_a_record() -> None:
    """Where every handler the line goes to is a plain ``StreamHandler`` with ``JSONFormatter`` (``ssegate serve``'s
    stderr), the line is written without a record (no template is made) and is the one the formatter makes of the
    ordinary record: same fields in the same order, redacted the same; any other handler among them gets a record."""
    import io
    import json

    from ssegate.obs.logs import JSONFormatter

    parent = logging.getLogger("ssegate")
    saved = (parent.handlers[:], parent.propagate, stream_log.level, stream_log.propagate, stream_log.handlers[:])
    out, other = io.StringIO(), io.StringIO()
    formatter = JSONFormatter(redact=["key:ab12"])
    json_handler = logging.StreamHandler(out)
    json_handler.setFormatter(formatter)
    try:
        stream_log.handlers[:] = [json_handler]
        stream_log.propagate = False
        stream_log.setLevel(logging.INFO)
        module._templates.clear()
        StreamLogger().ended(OUTCOME)
        assert module._templates == {}  # no record was made
        written = out.getvalue()
        assert written.endswith("\n") and written.count("\n") == 1 and "key:ab12" not in written
        extra = {"stream_id": "s1", "model": "m", "owner": "key:ab12", "outcome": "done", "tokens": 3,
                 "duration_ms": 500, "upstream_attempts": 1, "model_entry": "*",
                 "deployment": "openai:http://up/v1", "ttft_ms": 12}
        record = stream_log.makeRecord(stream_log.name, logging.INFO, "f", 0, "stream ended", (), None,
                                       extra=extra)
        ours, theirs = json.loads(written), json.loads(formatter.format(record))
        assert abs(time.time() - time.mktime(time.strptime(ours.pop("ts")[:19], "%Y-%m-%dT%H:%M:%S"))
                   + time.timezone) < 60
        theirs.pop("ts")
        assert list(ours.items()) == list(theirs.items())
        assert ours["owner"] == "[redacted]" and ours["tokens"] == 3 and ours["level"] == "info"

        text_handler = logging.StreamHandler(other)  # another kind of handler: a record for everyone
        text_handler.setFormatter(logging.Formatter("%(message)s|%(tokens)s"))
        stream_log.handlers[:] = [json_handler, text_handler]
        StreamLogger().ended(OUTCOME)
        assert list(module._templates) == [(logging.INFO, "stream ended")]
        assert other.getvalue() == "stream ended|3\n"
        second = json.loads(out.getvalue().splitlines()[1])
        second.pop("ts")
        assert list(second.items()) == list(theirs.items())
    finally:
        parent.handlers[:], parent.propagate, level, stream_log.propagate, stream_log.handlers[:] = saved
        stream_log.setLevel(level)


class _Counting:
    """A stream that counts its writes and flushes."""

    def __init__(self) -> None:
        self.text = ""
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.text += text
        self.writes += 1
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


def test_a_loops_lines_of_one_pass_are_written_together_at_its_next() -> None:
    """In a running loop, the record-less lines of one pass of the loop go out together at its next pass: one write
    and one flush for many streams' lines, each line as it would have been alone, none lost; outside a loop, at
    once. Lines whose loop never runs again are written at the interpreter's exit (``_write_unwritten``)."""
    import asyncio
    import json

    from ssegate.obs.logs import JSONFormatter

    saved = (stream_log.level, stream_log.propagate, stream_log.handlers[:])
    out = _Counting()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JSONFormatter(redact=[]))
    try:
        stream_log.handlers[:] = [handler]
        stream_log.propagate = False
        stream_log.setLevel(logging.INFO)
        StreamLogger().ended(OUTCOME)  # no loop: at once
        assert (out.writes, out.text.count("\n")) == (1, 1)
        alone = json.loads(out.text)

        async def burst() -> tuple[int, int]:
            for _ in range(50):
                StreamLogger().ended(OUTCOME)
            before = out.writes, out.text.count("\n")
            await asyncio.sleep(0)  # the loop's next pass
            await asyncio.sleep(0)
            return before

        assert asyncio.run(burst()) == (1, 1)  # nothing written in the pass that logged them
        assert (out.writes, out.flushes) == (2, 2)
        lines = out.text.splitlines()
        assert len(lines) == 51 and out.text.endswith("\n")
        for line in lines[1:]:
            seen = json.loads(line)
            assert seen.pop("ts")[:4].isdigit()
            assert seen == {k: v for k, v in alone.items() if k != "ts"}

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.sleep(0))

            async def log_and_leave() -> None:
                StreamLogger().ended(OUTCOME)
                loop.stop()  # the loop stops before its next pass

            task = loop.create_task(log_and_leave())
            loop.run_forever()
            assert task.done()
        finally:
            loop.close()
        assert out.text.count("\n") == 51
        module._write_unwritten()  # (atexit's)
        assert out.text.count("\n") == 52 and out.writes == 3
    finally:
        stream_log.setLevel(saved[0])
        stream_log.propagate = saved[1]
        stream_log.handlers[:] = saved[2]
