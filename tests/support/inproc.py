"""A real uvicorn server in a thread of the test process, for tests that must reach into the app they serve.

``ServerThread(app)`` serves ``app`` on a loopback socket bound to port 0, with uvicorn's httptools protocol or
``http=`` another (``BoundedRequestProtocol``: ``ssegate serve``'s own), lifespan on, and logging left as it is
(no access log, unless ``access_log=True``; any other ``uvicorn.Config`` setting by name).
The test talks to it over real sockets (``url``) and can read the objects the app holds (a response's counters,
a gateway's state) in the same process. The server stops, lifespan and all, when the ``with`` block ends.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["ServerThread"]


class ServerThread:
    def __init__(self, app: Any, *, http: Any = "httptools", **config: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, **{"http": http, "lifespan": "on", "log_config": None, "log_level": "warning",
                                        "access_log": False, "timeout_graceful_shutdown": 5, **config})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread ended before it started serving"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)  # polling another thread's start-up
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop"
