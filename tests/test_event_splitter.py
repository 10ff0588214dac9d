"""``providers.http.EventSplitter``: the upstream SSE splitter gives the same events however the body is cut."""

from __future__ import annotations

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
