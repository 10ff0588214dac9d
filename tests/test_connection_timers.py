"""The deadlines of ``ssegate serve``'s connections (``http/uvicorn_glue.py``), kept on one timer per kind and server:
an idle kept-alive connection is closed uvicorn's ``timeout_keep_alive`` after its last response, each connection
at its own time, and a request on it starts the count again. (The read deadline: ``tests/test_hostile.py``.)"""

from __future__ import annotations

import socket
import time
from typing import Any

from ssegate.http.uvicorn_glue import BoundedRequestProtocol
from tests.support.inproc import ServerThread

KEEP_ALIVE_S = 1


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def ask(sock: socket.socket) -> None:
    """One request on a kept-alive connection; returns once its whole response is read."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before the response ended: {got!r}"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200")


def closed_after(sock: socket.socket, since: float) -> float:
    sock.settimeout(15)
    assert sock.recv(100) == b""  # closed by the server, nothing sent
    return time.monotonic() - since


def test_idle_connections_close_at_their_own_keep_alive_deadline() -> None:
    with ServerThread(app, http=BoundedRequestProtocol, timeout_keep_alive=KEEP_ALIVE_S) as server:
        port = int(server.url.rsplit(":", 1)[1])
        first = socket.create_connection(("127.0.0.1", port))
        ask(first)
        first_done = time.monotonic()
        time.sleep(0.5)
        second = socket.create_connection(("127.0.0.1", port))
        ask(second)
        second_done = time.monotonic()
        time.sleep(0.3)
        ask(second)  # a request on it: its count starts again
        second_done = time.monotonic()
        took = closed_after(first, first_done)
        assert 0.9 <= took < 8, f"the first idle connection closed {took:.2f}s after its response (1 s)"
        took = closed_after(second, second_done)
        assert 0.9 <= took < 8, f"the second closed {took:.2f}s after its last response (1 s)"
        first.close()
        second.close()
