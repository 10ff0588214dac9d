"""``providers.http.EventSplitter``: the upstream SSE splitter gives the same events however the body is cut."""

from __future__ import annotations

import itertools
import random

import pytest

from ssegate.errors import UpstreamProtocolError
from ssegate.upstream.events import MAX_LINE, EventSplitter

BODY = (
    b": a comment\r\n"
    b"data: {\"a\": 1}\r\n\r\n"
    b"event: error\n"
    b"data: line one\n"
    b"data:line two\n"
    b"id: 7\n\n"
    b"retry: 10\n\n"
    b"data: [DONE]\n\n"
    b"data: no blank line at the end\n"
    b"data: a line cut off by the end of the body"
)
EXPECTED = [
    (b"", b'{"a": 1}'),
    (b"error", b"line one\nline two"),
    (b"", b"[DONE]"),
    (b"", b"no blank line at the end"),  # complete lines are kept at the end; the cut-off line is not
]


def split_all(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    s = EventSplitter()
    out = [ev for chunk in chunks for ev in s.feed(chunk)]
    return out + s.end()


def test_one_chunk() -> None:
    assert split_all([BODY]) == EXPECTED


def test_cut_anywhere_in_two() -> None:
    for cut in range(1, len(BODY)):
        assert split_all([BODY[:cut], BODY[cut:]]) == EXPECTED, cut


def test_byte_by_byte() -> None:
    assert split_all([BODY[i : i + 1] for i in range(len(BODY))]) == EXPECTED


def test_endless_line_is_refused() -> None:
    s = EventSplitter()
    s.feed(b"data: " + b"x" * (MAX_LINE // 2))
    with pytest.raises(UpstreamProtocolError, match="MiB"):
        s.feed(b"x" * (MAX_LINE // 2 + 10))


def reference_split(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The splitter's events, worked out line by line from the whole body (the SSE spec's rules, for our fields)."""
    out, event, data = [], b"", []
    for line in b"".join(chunks).split(b"\n")[:-1]:
        line = line[:-1] if line.endswith(b"\r") else line
        if not line:
            if data:
                out.append((event, b"\n".join(data)))
            event, data = b"", []
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip()
    return out + ([(event, b"\n".join(data))] if data else [])


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: {\"a\": 1}\n\n", b"data: [DONE]\n\n"],  # one event per read, as servers write tokens
        [b"event: error\n", b"data: {\"e\": 1}\n\n", b"data: next\n\n"],  # the name came in the read before
        [b"event: delta\ndata: {\"a\": 1}\n\n", b"event:  ping \ndata: {}\n\n", b"data: after\n\n"],  # named
        [b"event: a\r\ndata: x\n\n", b"event: b\ndata: y\r\n\n", b"event: c\ndata:z\n\n", b"event: d\n\n"],
        [b"event: a\ndata: \n\n", b"event: b\nid: 1\ndata: y\n\n", b"event: c\ndata: one\ndata: two\n\n"],
        [b"data: x\r\n\n", b"data: y\r\n\r\n", b"data: z\n\n"],  # a CR before the LF is part of the line end
        [b"data: \n\n", b"data:\n\n", b"data: a\n\n"],  # empty data is an event
        [b"data: one\n", b"data: two\n\n", b"data: three\n\n"],  # a data line pending: joined, not taken alone
        [b"data: par", b"tial\n\n", b"data: whole\n\n"],  # bytes pending from the read before
        [b"data: a\n\ndata: b\n\n", b"data: c\n\n"],  # two events in one read
        [b": comment\n\n", b"data: after a comment\n\n"],
        [b"data: a\nb\n\n", b"data: c\n\n"],  # a line that is not a field is skipped
    ],
)
def test_one_event_per_read_gives_what_the_lines_say(chunks: list[bytes]) -> None:
    assert split_all(chunks) == reference_split(chunks)


def test_random_reads_give_what_the_lines_say() -> None:
    rng = random.Random(7)
    pieces = [b"data: {\"t\": %d}\n\n", b"event: reasoning\n", b"data: x%d\r\n\r\n", b"data:%d\n\n", b": c\n",
              b"data: two\ndata: lines %d\n\n", b"\n", b"data: %d\n"]
    for _ in range(300):
        body = b"".join(rng.choice(pieces).replace(b"%d", str(i).encode()) for i in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 6))))
        bounds = [0, *cuts, len(body)]
        chunks = [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        events = body.split(b"\n\n")  # and one read per blank-line-ended block, the fast path's case
        blocks = [e + b"\n\n" for e in events[:-1]] + ([events[-1]] if events[-1] else [])
        for reads in (chunks, blocks):
            assert split_all(reads) == reference_split(reads), reads
