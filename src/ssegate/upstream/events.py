"""Reading an upstream's event stream: POST the request, then parse its ``text/event-stream`` body as it arrives.

``post_stream`` sends a streaming request on the process's ``Pool`` and returns the ``200`` response, or raises
the upstream's error; from the moment the request is written the sink holds its ``abort``. ``read_events`` then
hands every SSE event of the body to the provider's parser inside the connection's read callback (no task switch
per token, see ``httpclient.py``), telling the sink of every read (``alive``), and of the bounds of a read that
holds several events (``begin_read``, ``end_read``: the parts of one read reach a client in one write).
``EventSplitter`` splits the body into ``(event, data)`` pairs at the byte level, without building an object per
line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from ..errors import UpstreamProtocolError, upstream_status_error
from .base import Sink
from .error_map import map_upstream_errors
from .httpclient import Pool, Response

__all__ = ["MAX_LINE", "EventSplitter", "check_models", "post_stream", "read_events"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_dumps: Final = orjson.dumps

MAX_LINE: Final = 8 << 20
"""Longest upstream SSE line accepted: a bound on what one endless line can make the gateway buffer."""


class EventSplitter:
    """Splits an SSE body into ``(event_name, data)`` pairs chunk by chunk (``event_name`` is b"" when unnamed).

    A plain object, not a coroutine: the provider's read loop calls ``feed`` on each chunk it awaits, so a
    token costs no extra generator switch. Lines may end with LF or CRLF (what upstream servers send);
    multi-line data is joined with LF; comments and fields other than ``event``/``data`` are skipped; a line
    longer than ``MAX_LINE`` is an ``UpstreamProtocolError``. A read that is exactly one event of one LF-ended data
    line, named or not (how OpenAI-compatible servers and Anthropic write each token), is taken without splitting
    it into lines.
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        n = len(chunk)
        if not self._buf and not self._data and n > 7 and chunk[n - 1] == 10 and chunk[n - 3] != 13:
            # the usual read, nothing pending: one event of one data line, LF-ended (``data: {...}\n\n``), or the
            # same after its name (``event: name\ndata: {...}\n\n``, Anthropic's)
            # (LF looked for as an int in a slice: ``bytes.find`` parses its arguments as a tuple, ~340 instructions)
            if chunk.startswith(b"data: "):
                if chunk[n - 2] == 10 and 10 not in chunk[6 : n - 2]:
                    event, self._event = self._event, b""
                    return [(event, chunk[6:-2])]
            elif chunk.startswith(b"event: "):
                i = chunk.find(b"\n", 7)
                if chunk[i - 1] != 13 and chunk.startswith(b"data: ", i + 1) and chunk[n - 2] == 10 \
                        and 10 not in chunk[i + 7 : n - 2]:
                    self._event = b""
                    return [(chunk[6:i].strip(), chunk[i + 7 : -2])]
        buf = self._buf + chunk if self._buf else chunk
        if 10 not in chunk:  # (LF as an int: ``in`` with a bytes object first fails to read it as one, raising)
            if len(buf) > MAX_LINE:
                raise UpstreamProtocolError(f"the upstream sent a line over {MAX_LINE >> 20} MiB")
            self._buf = buf
            return []
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[tuple[bytes, bytes]] = []
        data = self._data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    out.append((self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                    data = self._data = []
                self._event = b""
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
        return out

    def end(self) -> list[tuple[bytes, bytes]]:
        """At the end of the body: the last event, if its blank line never came."""
        data, self._data = self._data, []
        return [(self._event, data[0] if len(data) == 1 else b"\n".join(data))] if data else []


async def post_stream(
    pool: Pool, url: str, body: dict[str, Any], headers: dict[str, str], sink: Sink,
    error_message: Callable[[str], str],
) -> Response:
    """POST a streaming request; return the ``200`` response (the caller closes it), or close it and raise the
    upstream's error (``error_message`` reads the provider's error body)."""
    resp = await pool.request("POST", url, headers, _dumps(body), lambda r: sink.holding(r.cut))
    if resp.status != 200:
        try:
            detail = (await resp.read(4096)).decode("utf-8", "replace")
        finally:
            resp.close()
        raise upstream_status_error(resp.status, error_message(detail), resp.headers.get("retry-after"))
    return resp


async def read_events(resp: Response, sink: Sink, on_event: Callable[[bytes, bytes], None]) -> None:
    """Call ``on_event(event_name, data)`` for every event of an SSE body, from the connection's callback as the
    bytes arrive, until the body ends or ``on_event`` calls ``resp.stop()``; what ``on_event`` raises ends the
    read and is raised here."""
    split = EventSplitter()
    alive, begin, end = sink.alive, sink.begin_read, sink.end_read

    def on_body(chunk: bytes) -> None:
        alive()
        events = split.feed(chunk)
        n = len(events)
        if n == 1:  # the usual read: one event, out at once
            event, data = events[0]
            on_event(event, data)
            return
        if not n:
            return
        begin()  # several: out in one write, at their end (with the terminal entry, when they end the answer)
        try:
            for event, data in events:
                on_event(event, data)
        except BaseException:
            end(False)
            raise
        end(resp.stopped)

    resp.stream(on_body)
    await resp.finished()
    if resp.complete:
        for event, data in split.end():
            on_event(event, data)


async def check_models(pool: Pool, url: str, headers: dict[str, str]) -> None:
    """``/readyz``: the upstream answers its models endpoint with anything but a 5xx."""
    with map_upstream_errors():
        resp = await pool.request("GET", url, headers)
        try:
            await resp.read(64 << 10)
        finally:
            resp.close()
        if resp.status >= 500:
            raise upstream_status_error(resp.status, "models endpoint failed")
