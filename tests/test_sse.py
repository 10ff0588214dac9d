"""The wire format: the encoder's output parsed back by the spec-correct decoder."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ssegate.core.entries import DELTA, DONE, REASONING, START, TOOL_ARGS
from ssegate.http.encoders import NativeEncoder
from ssegate.sse import PING, SSEDecoder, dumps, scrub_text, split_event_id
from tests.support.entries import columns


def decode(data: bytes | str, chunk: int = 0) -> list:
    text = data.decode() if isinstance(data, bytes) else data
    dec = SSEDecoder()
    if not chunk:
        return list(dec.feed(text))
    out = []
    for i in range(0, len(text), chunk):
        out += dec.feed(text[i : i + chunk])
    return out


def test_native_encoder_frames_every_event_with_id_and_one_line_json() -> None:
    enc = NativeEncoder("sid", 2000)
    entries = [(START, {"stream_id": "sid", "model": "m"}), (DELTA, "Hel"), (DELTA, "lo")]
    body = enc.head() + enc.encode(1, *columns(entries))
    body += enc.encode(4, [DONE], [{"finish_reason": "stop", "usage": {"prompt_tokens": 1}}])
    assert body.startswith(b"retry: 2000\n")
    events = decode(body)
    assert [e.event for e in events] == ["start", "message", "message", "done"]
    assert [e.id for e in events] == ["sid:1", "sid:2", "sid:3", "sid:4"]
    assert "".join(e.json()["delta"] for e in events[1:3]) == "Hello"
    assert events[0].retry == 2000


HOSTILE = ["\n", "\r", "\r\n", "\n\nevent: error\ndata: {}", "data: x", "id: 9\n\n", "\u2028", "é", ":", "\x00"]


def test_hostile_text_cannot_break_framing_or_forge_events() -> None:
    enc = NativeEncoder("s", 1000)
    body = b"".join(enc.encode(i + 1, [DELTA], [t]) for i, t in enumerate(HOSTILE))
    events = decode(body)
    assert len(events) == len(HOSTILE)
    assert all(e.event == "message" for e in events)
    assert [e.json()["delta"] for e in events] == HOSTILE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=8), st.integers(min_value=1, max_value=7),
       st.sampled_from(["\n", "\r", "\r\n"]))
def test_round_trip_any_text_any_chunking_any_line_end(texts: list[str], chunk: int, eol: str) -> None:
    enc = NativeEncoder("sid", 2000)
    body = b"".join(enc.encode(i + 1, [DELTA], [t]) for i, t in enumerate(texts)).decode()
    body = body.replace("\n", eol)
    events = decode(body, chunk)
    assert [e.id for e in events] == [f"sid:{i + 1}" for i in range(len(texts))]
    got = [e.json()["delta"] for e in events]
    # lone surrogates cannot travel as UTF-8: they arrive as U+FFFD, everything else exactly
    assert got == [scrub_text(t) for t in texts]


def test_decoder_follows_the_spec() -> None:
    stream = "\ufeffdata: a\r\ndata:b\r\n\r\n: comment\n\nevent: x\nid: 7\ndata\n\nretry: abc\nid\n\nevent: only\n\n"
    events = decode(stream, 3)
    assert [(e.event, e.data, e.id) for e in events][:2] == [("message", "a\nb", None), ("x", "", "7")]
    assert len(events) == 2  # no data: not dispatched; an event with an empty id field resets nothing visible


def test_cr_split_across_chunks_is_one_line_end() -> None:
    dec = SSEDecoder()
    out = list(dec.feed("data: a\r")) + list(dec.feed("\ndata: b\r")) + list(dec.feed("\r"))
    assert [e.data for e in out] == ["a\nb"]


def test_ping_is_a_comment() -> None:
    dec = SSEDecoder()
    assert list(dec.feed(PING.decode())) == []
    assert dec.comments == 1


def test_split_event_id() -> None:
    assert split_event_id("abc:12") == ("abc", 12)
    assert split_event_id("a:b:3") == ("a:b", 3)
    for bad in ["", "abc", ":3", "abc:", "abc:-1", "abc:1e3", "x" * 200 + ":1", "a:" + "9" * 40]:
        assert split_event_id(bad) is None


def test_lone_surrogate_is_replaced_not_fatal() -> None:
    enc = NativeEncoder("s", 1)
    (ev,) = decode(enc.encode(1, [DELTA], ["a\ud800b"]))
    assert orjson.loads(ev.data)["delta"] == "a\ufffdb"


def test_native_events_written_most_are_the_bytes_of_their_framing() -> None:
    """``NativeEncoder`` joins a delta's, a reasoning piece's and a tool call's argument piece's event from fixed
    parts around the JSON of its payload (not a format, not a dict per event): the bytes are the framing's, alone
    and in a batch, whatever the text (a lone surrogate is U+FFFD, as ``dumps`` makes it)."""
    enc = NativeEncoder("sid", 2000)
    for text in ("Hel", "lo\n\nevent: error", "\u2028é", "\ud800x", ""):
        data = dumps({"delta": text})
        assert enc.encode(7, [DELTA], [text]) == b"id: sid:7\ndata: " + data + b"\n\n"
        assert enc.encode(12, [REASONING], [text]) == b"id: sid:12\nevent: reasoning\ndata: " + data + b"\n\n"
        args = {"index": 1, "arguments": text}
        framed = b"id: sid:3\nevent: tool_call_delta\ndata: " + dumps(args) + b"\n\n"
        assert enc.encode(3, [TOOL_ARGS], [args]) == framed
    assert dumps({"delta": "\ud800x"}) == '{"delta":"\ufffdx"}'.encode()
    batch = enc.encode(5, *columns([(DELTA, "a"), (REASONING, "b"), (TOOL_ARGS, {"index": 0, "arguments": "c"})]))
    assert batch == (b'id: sid:5\ndata: {"delta":"a"}\n\n' b'id: sid:6\nevent: reasoning\ndata: {"delta":"b"}\n\n'
                     b'id: sid:7\nevent: tool_call_delta\ndata: {"index":0,"arguments":"c"}\n\n')
