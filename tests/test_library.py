"""ssegate inside an application's own FastAPI app (CONTRACT §10): the README's example, ``examples/rag_app.py``,
under real uvicorn, three ways:

- ``middleware``: the example as it ships (``@app.middleware("http")``, i.e. ``BaseHTTPMiddleware``, GZip, CORS),
  with a pure-ASGI tracing middleware around it that wraps ``send`` the way OpenTelemetry's does;
- ``plain``: the example with no middleware, under plain uvicorn (every message through the framework's ``send``);
- ``fast``: the example with no middleware under ``ssegate serve``'s own server (its protocol, the server's
  ``send`` in the scope): the direct-to-transport fast path.

The same checks pass on each: the answer streams incrementally, the middleware saw it, a disconnect closes the
app's own generator at once (its ``finally`` records when), resume through the mounted router replays it exactly,
an error raised in the middle of it is a typed ``event: error`` (anything but a ``GatewayError`` is
``internal_error``, its message not sent). The apps run in a thread of the test process (``ServerThread``), so a
test can give the example a gateway of its own and read a response's counters: the fast path is used where it
is safe, and nowhere else. Latencies are measured by ``python -m bench.library``; the bounds here catch hangs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import orjson
import pytest
from examples import rag_app
from fastapi import FastAPI, Request, Response
from fastapi.middleware.gzip import GZipMiddleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import ssegate
from ssegate.http.response import EventStreamResponse
from ssegate.http.standalone import expose_server
from ssegate.http.uvicorn_glue import BoundedRequestProtocol
from ssegate.sse import ServerSentEvent
from tests.support.gateway import ROOT, free_port, sse_events
from tests.support.inproc import ServerThread

STACKS = ["middleware", "plain", "fast"]
TOKENS_PER_S = 100
SETTINGS = dict(demo_ttft_s=0.05, demo_tokens_per_s=TOKENS_PER_S, heartbeat_s=0.5, commit_timeout_s=0.5,
                send_timeout_s=2.0, demo_scripts=True)

FAULTS: dict[str, Callable[[], Exception]] = {
    "Which step took too long?": lambda: ssegate.UpstreamTimeout("the model took too long"),
    "What went wrong?": lambda: ValueError("a secret detail that must not leak"),
}


class FaultyGateway(ssegate.Gateway):
    """The example's gateway, except that a model call for one of ``FAULTS``' questions raises that exception
    after its third part: an exception in the middle of the app's own stream, out of its ``gate.complete`` loop.
    It keeps the responses it made, for a test to read which write path each took."""

    def __init__(self, settings: ssegate.Settings) -> None:
        super().__init__(settings)
        self.responses: list[EventStreamResponse] = []

    def follow(self, gen: Any, encoder: Any) -> EventStreamResponse:
        response = super().follow(gen, encoder)
        self.responses.append(response)
        return response

    async def complete(self, messages: Iterable[Mapping[str, Any]], *, model: str | None = None,
                       **fields: Any) -> AsyncIterator[ssegate.Part | ssegate.Finish]:
        messages = list(messages)
        fault = FAULTS.get(messages[-1]["content"])
        async with aclosing(super().complete(messages, model=model, **fields)) as parts:
            n = 0
            async for part in parts:
                if fault is not None and n == 3:
                    raise fault()
                n += 1
                yield part


class Tracing:
    """A pure-ASGI middleware that wraps ``send`` (as OpenTelemetry's ASGI instrumentation does) and marks the
    response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def traced_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-traced", b"1")]}
            await send(message)

        await self.app(scope, receive, traced_send)


class Example:
    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.gate = FaultyGateway(ssegate.Settings(**SETTINGS))
        app: Any = rag_app.create_app(self.gate, middleware=stack == "middleware")
        http: Any = "httptools"
        if stack == "middleware":
            app.add_middleware(Tracing)
        elif stack == "fast":
            app, http = expose_server(app), BoundedRequestProtocol
        self.server = ServerThread(app, http=http)
        self.url = self.server.url

    def answers(self, question: str) -> list[dict[str, Any]]:
        """What the example's ``finally`` recorded for ``question``."""
        found: list[dict[str, Any]] = httpx.get(self.url + "/answers", timeout=10).json()
        return [a for a in found if a["question"] == question]


@pytest.fixture(scope="module", params=STACKS)
def example(request: pytest.FixtureRequest) -> Iterator[Example]:
    ex = Example(request.param)
    with ex.server:
        yield ex


def read(resp: httpx.Response, n: int | None = None) -> list[tuple[float, ServerSentEvent]]:
    out = []
    for event in sse_events(resp.iter_text()):
        out.append((time.monotonic(), event))
        if n is not None and len(out) >= n:
            break
    return out


def ask(example: Example, question: str, n: int | None = None, **params: Any) -> list[ServerSentEvent]:
    with httpx.stream("POST", example.url + "/ask", params={"q": question, **params}, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        return [e for _, e in read(resp, n)]


def test_the_answer_streams_incrementally_through_the_middleware(example: Example) -> None:
    question = "How do proxies buffer a stream?"
    with httpx.stream("POST", example.url + "/ask", params={"q": question},
                      headers={"Origin": "https://app.example", "Accept-Encoding": "gzip"}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-encoding" not in resp.headers  # GZip leaves event streams alone
        if example.stack == "middleware":
            assert (resp.headers["x-app"], resp.headers["x-traced"]) == ("rag-example", "1")
            assert resp.headers["access-control-allow-origin"] == "*"
        else:
            assert "x-app" not in resp.headers
        events = read(resp)
    kinds = [e.event for _, e in events]
    n = kinds.count("message")
    assert kinds == ["start", "reasoning"] + ["message"] * n + ["done"] and n > 20
    assert events[1][1].json() == {"delta": "Found 2 notes about this. "}
    sid = events[0][1].json()["stream_id"]
    assert [e.id for _, e in events] == [f"{sid}:{i + 1}" for i in range(len(events))]
    # not buffered: the text arrived over the time the model took to write it, not all at the end
    spread = events[-2][0] - events[2][0]
    assert spread > 0.5 * (n - 1) / TOKENS_PER_S, f"{n} parts arrived within {spread:.3f}s"
    assert events[-1][1].json()["finish_reason"] == "stop"
    assert [a["ended"] for a in example.answers(question)] == ["done"]
    # the events went to the socket directly on ssegate serve's server only; through `send` everywhere else
    response = example.gate.responses[-1]
    assert response.fast_path is (example.stack == "fast")
    if example.stack == "fast":
        assert response.body_sends < n // 2, response.body_sends


def test_a_disconnect_closes_the_apps_generator_at_once(example: Example) -> None:
    question = f"Why do streams need heartbeats? ({time.monotonic_ns()})"
    with httpx.stream("POST", example.url + "/ask", params={"q": question, "grace": 0}, timeout=30) as resp:
        read(resp, 4)
        left = time.time()
    deadline = time.monotonic() + 10
    while not (record := example.answers(question)):
        assert time.monotonic() < deadline, "the app's generator was never closed"
        time.sleep(0.01)  # polling the app's record
    assert record[0]["ended"] == "stopped"
    assert record[0]["at"] - left < 1.0, f"closed {record[0]['at'] - left:.3f}s after the client left"


def test_resume_through_the_mounted_router_replays_exactly(example: Example) -> None:
    question = "What does a resumable stream keep?"
    whole = ask(example, question)
    with httpx.stream("POST", example.url + "/ask", params={"q": question, "grace": 30}, timeout=30) as resp:
        head = [e for _, e in read(resp, 6)]
    sid = head[0].json()["stream_id"]
    with httpx.stream("GET", f"{example.url}/llm/v1/streams/{sid}", headers={"Last-Event-ID": head[-1].id or ""},
                      timeout=30) as resp:
        assert resp.status_code == 200
        rest = [e for _, e in read(resp)]
    resumed = head + rest
    assert [e.id for e in resumed] == [f"{sid}:{i + 1}" for i in range(len(resumed))]

    def shape(events: list[ServerSentEvent]) -> list[tuple[str, Any]]:
        first = events[0].json()["stream_id"]
        return [(e.event, orjson.loads(e.data.replace(first, "SID"))) for e in events]

    assert shape(resumed) == shape(whole)
    assert [a["ended"] for a in example.answers(question)] == ["done", "done"]


@pytest.mark.parametrize(("question", "code", "message"), [
    ("Which step took too long?", "upstream_timeout", "the model took too long"),
    ("What went wrong?", "internal_error", "internal error")])
def test_an_error_in_the_middle_of_the_apps_stream_is_typed(example: Example, question: str, code: str,
                                                             message: str) -> None:
    events = ask(example, question)  # 200: committed at the first text, so the error comes as an event
    assert [e.event for e in events] == ["start", "reasoning", "message", "message", "message", "error"]
    error = events[-1].json()["error"]
    assert (error["code"], error["message"]) == (code, message)
    assert "secret" not in events[-1].data
    assert [a["ended"] for a in example.answers(question)] == ["failed"]


def test_the_gateway_api_is_mounted_too(example: Example) -> None:
    import openai

    with openai.OpenAI(base_url=example.url + "/llm/v1", api_key="x", max_retries=0) as sdk:
        out = sdk.chat.completions.create(model="ssegate-demo", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content
        with pytest.raises(openai.BadRequestError):  # an error answered by the route itself, in OpenAI's shape
            sdk.chat.completions.create(model="ssegate-demo", messages=[{"role": "user", "content": "hi"}], n=3)
    resp = httpx.post(example.url + "/llm/v1/chat/stream", json={"messages": []}, timeout=10)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"


# --- the fast path: where it is safe, and nowhere else ------------------------------------------------------
def _serve_app(middleware: str) -> FastAPI:
    settings = ssegate.Settings(**SETTINGS, cors_origins="https://app.example" if middleware == "cors" else "")
    app = ssegate.create_app(settings)
    if middleware == "BaseHTTPMiddleware":
        async def tag(request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

        app.add_middleware(BaseHTTPMiddleware, dispatch=tag)
    return app


def _own_app(middleware: str) -> FastAPI:
    gate = ssegate.Gateway(ssegate.Settings(**SETTINGS))
    app = FastAPI(lifespan=gate.lifespan)
    app.state.gateway = gate
    app.include_router(gate.router)
    if middleware == "GZipMiddleware":
        app.add_middleware(GZipMiddleware, minimum_size=10)
    return app


@pytest.mark.parametrize(("make", "middleware", "http", "fast", "pushed"), [
    pytest.param(_serve_app, "", BoundedRequestProtocol, True, True, id="ssegate-serve-app"),
    pytest.param(_serve_app, "cors", BoundedRequestProtocol, True, False, id="ssegate-serve-app+cors"),
    pytest.param(_serve_app, "BaseHTTPMiddleware", BoundedRequestProtocol, False, False,
                 id="ssegate-serve-app+basehttp"),
    pytest.param(_own_app, "", "httptools", False, False, id="own-app"),
    pytest.param(_own_app, "", BoundedRequestProtocol, False, False, id="own-app-on-ssegate-protocol"),
    pytest.param(_own_app, "GZipMiddleware", "httptools", False, False, id="own-app+gzip"),
])
def test_the_fast_path_is_taken_only_with_nothing_in_between(make: Callable[[str], FastAPI], middleware: str,
                                                              http: Any, fast: bool, pushed: bool) -> None:
    """Under ``ssegate serve``'s own app and protocol, with no middleware but the known-safe ones, a stream's
    events are written to the transport directly (few body messages through ``send`` for many events); with a
    middleware that wraps ``send`` (``BaseHTTPMiddleware``, GZip), or in an application's own app, every event
    goes through ``send`` and none around it. Where nothing at all stands between the response and the server
    (the direct routes: no CORS either), the status, headers and first event go out from a callback of the append
    that commits the stream (``start_pushed``); anywhere else the waiting task sends them."""
    app = make(middleware)
    gate = app.state.gateway
    responses: list[EventStreamResponse] = []
    follow = gate.follow

    def recording(*args: Any, **kwargs: Any) -> EventStreamResponse:
        response: EventStreamResponse = follow(*args, **kwargs)
        responses.append(response)
        return response

    gate.follow = recording
    script = {"deltas": [f"t{i} " for i in range(40)], "delay": 0.02}
    with ServerThread(app, http=http) as server, httpx.stream(
            "POST", server.url + "/v1/chat/stream", timeout=30,
            json={"messages": [{"role": "user", "content": "/script " + orjson.dumps(script).decode()}]}) as resp:
        assert resp.status_code == 200
        events = [e for _, e in read(resp)]
    assert [e.event for e in events] == ["start"] + ["message"] * 40 + ["done"]
    [response] = responses
    assert response.fast_path is fast
    assert response.start_pushed is pushed
    if fast:
        assert response.body_sends <= len(events) // 4, response.body_sends
    else:
        assert response.body_sends >= len(events) // 4, response.body_sends


# --- the example as the README runs it ---------------------------------------------------------------------
def test_the_example_runs_with_the_readmes_command() -> None:
    """``uvicorn examples.rag_app:app``: the module's own app, its gateway from the (empty) environment."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.rag_app:app", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the example did not start"
            try:
                httpx.get(url + "/docs", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the example did not start"
                time.sleep(0.05)  # polling a starting process
        with httpx.stream("POST", url + "/ask", params={"q": "Why do streams need heartbeats?"}, timeout=30) as resp:
            assert resp.status_code == 200 and resp.headers["x-app"] == "rag-example"
            events = [e for _, e in read(resp)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert events[1].event == "reasoning" and events[1].json()["delta"] == "Found 2 notes about this. "
    assert events[-1].event == "done" and sum(e.event == "message" for e in events) > 20


BAD_BODIES = [b"{not json", b"", b"[]", b'{"messages": []}', b'{"messages": [{"role": "user"}]}',
              b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', b'{"messages": "hi", "stop": 5}']


def test_the_standalone_apps_direct_routes_answer_as_the_framework_routes_do(demo_gateway: Any) -> None:
    """``ssegate serve`` answers the two streaming endpoints without FastAPI's routing (``direct_routes.py``); a
    mounted ``gate.router`` answers them through FastAPI. Bad bodies get the same status and the same words."""
    app = rag_app.create_app(ssegate.Gateway(ssegate.Settings(**SETTINGS)), middleware=False)
    headers = {"content-type": "application/json"}  # (other types: each app's own strict_content_type decides)
    with ServerThread(app) as mounted:
        for path in ("/v1/chat/stream", "/v1/chat/completions"):
            for raw in BAD_BODIES:
                direct = httpx.post(demo_gateway.url + path, content=raw, headers=headers, timeout=10)
                routed = httpx.post(mounted.url + "/llm" + path, content=raw, headers=headers, timeout=10)
                assert (direct.status_code, direct.json()) == (routed.status_code, routed.json()), (path, raw)


# --- import time -------------------------------------------------------------------------------------------
SERVER_SIDE = ("{'fastapi', 'starlette', 'uvicorn', 'redis', 'aiohttp', 'pydantic_settings', 'prometheus_client'}")
"""Top-level packages that the client side must not load."""


def test_the_client_imports_fast_and_alone() -> None:
    """``import ssegate.client`` loads neither the server nor FastAPI, Starlette, uvicorn, redis or aiohttp."""
    code = ("import sys, time; t = time.perf_counter(); import ssegate.client; dt = time.perf_counter() - t; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_SIDE} "
            "or m.startswith(('ssegate.http', 'ssegate.core', 'ssegate.upstream', 'ssegate.cluster'))); "
            "print(dt, bad)")
    best = 9.9
    for _ in range(3):  # the best of three: a loaded machine's noise is not the import's cost
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        seconds, bad = out.split(" ", 1)
        assert bad.strip() == "[]", bad
        best = min(best, float(seconds))
    assert best < 2.0, f"import ssegate.client took {best * 1000:.0f} ms"  # a hang; the figure: bench/import_time.py


def test_ssegate_chat_loads_no_server_side_package(demo_gateway: Any) -> None:
    """``ssegate chat`` (the console script's ``ssegate.cli:main``) streams an answer having loaded neither the
    server nor FastAPI, Starlette, uvicorn, redis or aiohttp: what was imported is listed at exit."""
    code = ("import atexit, runpy, sys\n"
            "def report():\n"
            f"    bad = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_SIDE} "
            "or m.startswith(('ssegate.http', 'ssegate.core', 'ssegate.upstream', 'ssegate.cluster', "
            "'ssegate.serve', 'ssegate.gateway')))\n"
            "    print('LOADED', bad, file=sys.stderr)\n"
            "atexit.register(report)\n"
            f"sys.argv = ['ssegate', 'chat', '--url', {demo_gateway.url!r}, 'Why do streams need heartbeats?']\n"
            "runpy.run_module('ssegate', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip()) > 20  # the answer
    assert proc.stderr.strip().splitlines()[-1] == "LOADED []", proc.stderr


def test_ssegate_serve_protocol_gives_the_app_the_addresses_uvicorn_would() -> None:
    """``BoundedRequestProtocol.connection_made`` reads the addresses from the transport (not uvicorn's helpers):
    ``scope["client"]`` and ``scope["server"]`` are still the connection's two ends, and the scheme http."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps({"client": scope["client"], "server": scope["server"], "scheme": scope["scheme"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    with ServerThread(app, http=BoundedRequestProtocol) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
            local = sock.getsockname()
    seen = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert seen == {"client": [local[0], local[1]], "server": ["127.0.0.1", port], "scheme": "http"}
