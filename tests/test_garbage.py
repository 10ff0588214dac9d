"""A finished stream (or a request refused before one) leaves no reference cycles behind: what it held is freed
by reference counting when it ends, not left for the garbage collector, whose pauses stop every stream of the
process.

A cycle per request (uvicorn's request cycle held the scope, the scope held the cycle's own ``send``) left ~20
objects per stream for the collector: with ``ssegate serve``'s thresholds, a pause of ~10 ms every ~700 streams
and one of ~150 ms every ~35,000 (``python -m bench --only gc --targets ssegate-probed`` times the pauses; this
counts the objects). A refused request left its exception's traceback, which held the frame that kept the
exception (ours in ``direct_routes.py``, FastAPI's behind ``Gateway.router``). The app runs in a thread of the test
process (``ServerThread``) with automatic collection off while the requests run, so that one ``gc.collect()``
afterwards finds every cycle they left.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

import ssegate
from ssegate.http.standalone import expose_server
from ssegate.http.uvicorn_glue import BoundedRequestProtocol
from tests.support.gateway import chat_body
from tests.support.inproc import ServerThread
from tests.support.rawclient import RawStream, raw_request

STREAMS = 60
SETTINGS = dict(demo_ttft_s=0.0, demo_tokens_per_s=1000, demo_scripts=True)
SCRIPT = "/script " + orjson.dumps({"deltas": ["a ", "b ", "c"]}).decode()


def _serve_app() -> tuple[Any, Any]:
    """``ssegate serve``'s app on its protocol."""
    app = ssegate.create_app(ssegate.Settings(**SETTINGS))
    return app, app


def _own_app() -> tuple[Any, Any]:
    """An application's own app with the gateway's router, exposed to the fast path (``expose_server``)."""
    gate = ssegate.Gateway(ssegate.Settings(**SETTINGS))
    app = FastAPI(lifespan=gate.lifespan)
    app.state.gateway = gate
    app.include_router(gate.router)
    return expose_server(app), app


def _stream(port: int, path: str) -> None:
    if path == "bad body":  # a 422 (a field of the wrong type): an error answered before any stream
        with RawStream(port) as c:
            c.send(raw_request("POST", "/v1/chat/stream", b'{"messages": "hi"}', {"Connection": "close"}))
            assert c.read_head() == 422
        return
    extra = {"stream": True} if path == "/v1/chat/completions" else {}
    with RawStream(port) as c:
        c.send(raw_request("POST", path, chat_body(SCRIPT, **extra), {"Connection": "close"}))
        assert c.read_head() == 200
        c.read_all()
        assert c.eof or c.events


@pytest.mark.parametrize("make", [_serve_app, _own_app], ids=["ssegate-serve-app", "own-app-exposed"])
@pytest.mark.parametrize("path", ["/v1/chat/stream", "/v1/chat/completions", "bad body"])
def test_finished_streams_leave_no_reference_cycles(make: Callable[[], tuple[Any, Any]], path: str) -> None:
    served, app = make()
    gate = app.state.gateway
    with ServerThread(served, http=BoundedRequestProtocol) as server:
        port = int(server.url.rsplit(":", 1)[1])
        for _ in range(5):  # first requests build what every later one reuses (caches, pools)
            _stream(port, path)
        gc.collect()
        gc.disable()
        try:
            for _ in range(STREAMS):
                _stream(port, path)
            deadline = time.monotonic() + 10
            while (gate.hub.live or server.server.server_state.connections) and time.monotonic() < deadline:
                time.sleep(0.01)  # polling the server thread: the last generation and connection to wind down
            assert not gate.hub.live and not server.server.server_state.connections
            time.sleep(0.1)  # the callbacks that follow a connection's close
            found = gc.collect()
        finally:
            gc.enable()
    # before: ~20 objects per stream (request cycle, transport, flow control, events, contexts)
    assert found < STREAMS, f"{found} objects in reference cycles after {STREAMS} streams"
