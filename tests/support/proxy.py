"""A loopback TCP proxy that really cuts connections, for tests of resume after a dropped stream.

``CuttingProxy(target_port)`` forwards bytes both ways. ``cut_next(n)`` arms the next accepted connection:
once ``n`` bytes went from the server to the client, both sockets are closed, so the client sees its
response end in the middle of the body (httpx: ``RemoteProtocolError``) and the server sees its client go.
``target_port`` may be changed between connections; ``refuse()`` stops listening (connection refused).
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field

__all__ = ["CuttingProxy", "ProxiedConn"]


@dataclass
class ProxiedConn:
    cut_after: int | None
    down_bytes: int = 0
    cut: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.conns: list[ProxiedConn] = []
        self._cuts: deque[int] = deque()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_next(self, *after_bytes: int) -> None:
        """Cut the next connections after these many server→client bytes, one count per connection."""
        with self._lock:
            self._cuts.extend(after_bytes)

    def refuse(self) -> None:
        """Stop listening: new connections are refused."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                conn = ProxiedConn(self._cuts.popleft() if self._cuts else None)
                self.conns.append(conn)
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                conn.done.set()
                continue
            self._socks += [client, server]
            up = threading.Thread(target=self._pump, args=(client, server, conn, False), daemon=True)
            down = threading.Thread(target=self._pump, args=(server, client, conn, True), daemon=True)
            self._threads += [up, down]
            up.start()
            down.start()

    def _pump(self, src: socket.socket, dst: socket.socket, conn: ProxiedConn, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if downstream and conn.cut_after is not None:
                    room = conn.cut_after - conn.down_bytes
                    if len(data) >= room:
                        dst.sendall(data[:room])
                        conn.down_bytes += room
                        conn.cut = True
                        break
                dst.sendall(data)
                if downstream:
                    conn.down_bytes += len(data)
        except OSError:
            pass
        finally:
            # one direction ended: end the whole connection (a cut closes both sides at once)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if downstream:
                conn.done.set()

    def close(self) -> None:
        self.refuse()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)
        self._accepting.join(5)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
