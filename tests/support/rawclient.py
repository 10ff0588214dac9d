"""A raw-socket HTTP/1.1 client for the client-side faults: hang up at an exact byte, with a FIN or a RST, stop
reading with a tiny receive buffer, or send half a request. Reads chunked event streams into SSE events."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

from ssegate.sse import ServerSentEvent, SSEDecoder

__all__ = ["RawStream", "raw_request"]


def raw_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    hdrs = dict(headers or {})
    if body or method == "POST":
        hdrs.setdefault("Content-Type", "application/json")
        hdrs["Content-Length"] = str(len(body))
    head += [f"{k}: {v}" for k, v in hdrs.items()]
    return b"\r\n".join(_wire(line) for line in head) + b"\r\n\r\n" + body


def _wire(line: str) -> bytes:
    """Header text as bytes: latin-1 when it fits (so ``"\\xb2"`` is the single byte 0xB2), else UTF-8."""
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode()


class RawStream:
    """One connection to ``port``; ``rcvbuf`` shrinks the kernel receive buffer (a client that reads slowly)."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, timeout: float = 15.0) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.events: list[ServerSentEvent] = []
        self.eof = False
        self._decoder = SSEDecoder()
        self._chunked = False
        self._pending = b""  # raw body bytes not yet de-chunked

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_head(self) -> int:
        """Until the status line and headers are in; the status (0 when the server closed first)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._recv():
                return 0
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "")
        return self.status

    def _dechunk(self) -> bool:
        """Move complete chunks from ``buf`` to the body and the decoder; False at the last chunk."""
        if not self._chunked:
            data, self.buf = self.buf, b""
            self._feed(data)
            length = self.headers.get("content-length")
            return length is None or len(self.body) < int(length)
        while True:
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                return True
            size = int(self.buf[:eol].split(b";")[0], 16)
            if size == 0:
                return False
            if len(self.buf) < eol + 2 + size + 2:
                return True
            self._feed(self.buf[eol + 2 : eol + 2 + size])
            self.buf = self.buf[eol + 2 + size + 2 :]

    def _feed(self, data: bytes) -> None:
        self.body += data
        self._pending += data
        try:
            text = self._pending.decode()
        except UnicodeDecodeError as exc:  # a character split across reads: keep its start for the next one
            text = self._pending[: exc.start].decode()
        self._pending = self._pending[len(text.encode()) :]
        self.events += self._decoder.feed(text)

    def iter_events(self, deadline_s: float = 30.0) -> Iterator[ServerSentEvent]:
        """Events as they arrive, until the body ends or the server hangs up."""
        if not self.status:
            self.read_head()
        seen = len(self.events)
        end = time.monotonic() + deadline_s
        more = self._dechunk()
        while True:
            while seen < len(self.events):
                seen += 1
                yield self.events[seen - 1]
            if not more or time.monotonic() > end or not self._recv():
                return
            more = self._dechunk()

    def read_all(self, deadline_s: float = 30.0) -> list[ServerSentEvent]:
        for _ in self.iter_events(deadline_s):
            pass
        return self.events

    def read_until(self, marker: bytes, deadline_s: float = 30.0) -> bool:
        """Read raw bytes until ``marker`` is among them (not de-chunked); False at EOF."""
        end = time.monotonic() + deadline_s
        while marker not in self.buf and time.monotonic() < end:
            if not self._recv():
                return False
        return marker in self.buf

    def close(self, *, rst: bool = False) -> None:
        """Hang up: FIN, or RST (SO_LINGER 0) as a killed process or a crashed tab does."""
        if rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
