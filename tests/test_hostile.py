"""Hostile input (issue 8): schemathesis against every operation of the OpenAPI schema, oversized heads and bodies,
slow senders, and Last-Event-IDs that are garbage, huge, or another key's — all against a real server."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from ssegate.http.standalone import create_app
from ssegate.settings import Settings
from ssegate.sse import SSEDecoder, split_event_id
from tests.support.gateway import GatewayProcess, chat_body
from tests.support.invariants import Invariants
from tests.support.rawclient import RawStream, raw_request

HOSTILE = "Hostile input"
DEMO = {"demo_ttft_s": 0.0, "demo_tokens_per_s": 100_000, "commit_timeout_s": 0.5, "heartbeat_s": 1.0,
        "send_timeout_s": 2.0, "request_read_timeout_s": 2.0}
KEYS = {"k1": {"Authorization": "Bearer k1"}, "k2": {"Authorization": "Bearer k2"}}


def matrix(scenario: str, expected: str) -> pytest.MarkDecorator:
    return pytest.mark.fault_matrix(group=HOSTILE, scenario=scenario, expected=expected)


@pytest.fixture(scope="module")
def open_gw() -> Iterator[GatewayProcess]:
    """No API keys (loopback), so that every operation is reachable. The body limit is set (1 MiB, not the default
    20 MiB), so that the oversized-body tests send a few MiB, not tens."""
    with GatewayProcess({**DEMO, "max_body_bytes": 1 << 20}) as g:
        yield g


@pytest.fixture(scope="module")
def keyed_gw() -> Iterator[GatewayProcess]:
    with GatewayProcess({**DEMO, "api_keys": "k1,k2"}) as g:
        yield g


@pytest.fixture(scope="module")
def open_inv(open_gw: GatewayProcess) -> Iterator[Invariants]:
    httpx.post(open_gw.url + "/v1/chat/stream", content=chat_body("warm up"), timeout=10)
    inv = Invariants(open_gw, None)
    inv.rebase()
    yield inv
    inv.close()


# --- schemathesis -------------------------------------------------------------------------------------------------

# The app's own schema, built in-process (no server needed at collection); the calls go to the real server. The
# operations are parametrized here rather than with ``schema.parametrize()``, whose items all share one node id
# under pytest 9.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CONSTRAINTS = {"maxLength", "minLength", "pattern", "maximum", "minimum", "enum", "anyOf", "maxItems"}


def takes_invalid_input(op: Any) -> bool:
    """A body, or a parameter with a constraint: something schemathesis can break (a free path string is not)."""
    params = op.definition.raw.get("parameters") or []
    return bool(op.body) or any(CONSTRAINTS & set(p.get("schema", {})) or (p.get("required") and p["in"] != "path")
                                for p in params)


CASES = [pytest.param(op, mode, id=f"{op.label}-{mode.value}") for op in OPERATIONS for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or takes_invalid_input(op)]
"""Every operation with valid input, and with invalid input where there is any."""


def assert_json_error(status: int, content_type: str, body: bytes, openai: bool) -> None:
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    err = httpx.Response(status, content=body).json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["code"], str) and err["code"]
    if not openai:
        assert isinstance(err["retryable"], bool)


@pytest.mark.parametrize(("operation", "mode"), CASES)
@matrix("schemathesis: schema-valid and schema-violating input on every operation",
        "never a 5xx; every error is a JSON error body (`{\"error\": {\"code\", \"message\", ...}}`), or "
        "`<code>: <message>` as text on the AI SDK's endpoints")
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_schemathesis(open_gw: GatewayProcess, operation: Any, mode: GenerationMode, data: st.DataObject) -> None:
    case = data.draw(operation.as_strategy(mode))
    resp = case.call(base_url=open_gw.url, timeout=30)
    assert resp.status_code < 500, (case.method, case.path, resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        ctype = resp.headers.get("content-type") or [""]  # schemathesis: a list of values per header
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        if case.path == "/api/chat" or (case.path.startswith("/api/chat/") and case.path.endswith("/stream")):
            # the AI SDK's transport shows the body text as the error: `<code>: <message>` (docs/protocols.md)
            assert ctype.startswith("text/plain") and re.fullmatch(r"[a-z_]+: .+", resp.text, re.S), resp.text
            return
        openai = case.path.startswith(("/v1/chat/completions", "/v1/models", "/v1/responses"))
        assert_json_error(resp.status_code, ctype, resp.content, openai)


def test_schemathesis_covers_every_operation() -> None:
    labels = {op.label for op in OPERATIONS}
    assert {"GET /chat", "POST /v1/chat/stream", "GET /v1/streams/{stream_id}", "POST /v1/streams/{stream_id}/cancel",
            "POST /v1/chat/completions", "GET /healthz", "POST /v1/responses", "GET /v1/responses/{response_id}",
            "POST /v1/responses/{response_id}/cancel"} <= labels


# --- heads and bodies ---------------------------------------------------------------------------------------------

@matrix("a 200 MiB header, sent as a stream", "`431` with a JSON error once the head passes MAX_QUERY_BYTES (64 KiB), "
        "the connection closed; RSS does not grow")
def test_huge_header_is_refused_without_buffering(open_gw: GatewayProcess, open_inv: Invariants) -> None:
    with RawStream(open_gw.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            for _ in range(200):
                c.send(b"a" * (1 << 20))
                sent += 1
        except OSError:
            pass  # the server closed the connection: the rest is refused
        assert sent < 200
        assert c.read_head() == 431
        c.read_all(5)
        assert_json_error(431, c.headers["content-type"], c.body, openai=False)
    open_inv.check()


@matrix("a 100 MiB request line", "`431` once past MAX_QUERY_BYTES (64 KiB); RSS does not grow")
def test_huge_url_is_refused_without_buffering(open_gw: GatewayProcess, open_inv: Invariants) -> None:
    with RawStream(open_gw.port) as c:
        c.send(b"GET /chat?q=")
        try:
            for _ in range(100):
                c.send(b"a" * (1 << 20))
        except OSError:
            pass
        assert c.read_head() == 431
    open_inv.check()


@pytest.mark.parametrize("raw", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                                 b"GET /chat?q=a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n"],
                         ids=["tls-hello", "control-char-in-target", "space-in-header-name"])
@matrix("bytes that do not parse as HTTP/1.1 (a TLS hello, a control character in the target, a bad header name)",
        "`400` with a JSON error body, the connection closed")
def test_regression_unparseable_http_gets_a_plain_text_400(open_gw: GatewayProcess, raw: bytes) -> None:
    """uvicorn answered these with its own ``text/plain`` "Invalid HTTP request received."; every error of the
    gateway is a JSON error body (found by schemathesis with a 1 MB ``q`` full of control characters)."""
    with RawStream(open_gw.port) as c:
        c.send(raw)
        assert c.read_head() == 400
        c.read_all(5)
        assert_json_error(400, c.headers["content-type"], c.body, openai=False)


@pytest.mark.parametrize("size", [8_000, 60_000])
@matrix("big but sane headers (8 KB, 60 KB: cookies, JWTs)", "served normally")
def test_big_but_sane_headers_are_served(open_gw: GatewayProcess, size: int) -> None:
    resp = httpx.get(open_gw.url + "/healthz", headers={"X-Big": "a" * size}, timeout=10)
    assert resp.status_code == 200


@matrix("5000 headers", "served, or refused with `431`; never a crash")
def test_many_headers(open_gw: GatewayProcess, open_inv: Invariants) -> None:
    with RawStream(open_gw.port) as c:
        c.send(raw_request("GET", "/healthz", headers={f"X-H{i}": "v" for i in range(5000)}))
        assert c.read_head() in (200, 431)
    open_inv.check()


@pytest.mark.parametrize("path", ["/v1/chat/stream", "/v1/chat/completions"])
@matrix("body over MAX_BODY_BYTES: declared (Content-Length: 100 MB) and undeclared (chunked 3 MiB)",
        "`413 payload_too_large` as JSON (OpenAI shape on `/v1/chat/completions`), nothing read beyond the limit")
def test_oversized_bodies(open_gw: GatewayProcess, open_inv: Invariants, path: str) -> None:
    openai = path == "/v1/chat/completions"
    with RawStream(open_gw.port) as c:
        c.send(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: 100000000\r\n\r\n{{".encode())
        assert c.read_head() == 413
        c.read_all(5)
        assert_json_error(413, c.headers["content-type"], c.body, openai)

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(48):
            yield b"x" * 65536

    resp = httpx.post(open_gw.url + path, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 413
    assert_json_error(413, resp.headers["content-type"], resp.content, openai)
    open_inv.check()


@matrix("deeply nested JSON body (200 000 levels)", "`400 invalid_request` as JSON; no crash")
def test_deeply_nested_json(open_gw: GatewayProcess) -> None:
    body = b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    for path in ("/v1/chat/stream", "/v1/chat/completions"):
        resp = httpx.post(open_gw.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code in (400, 422)
        assert_json_error(resp.status_code, resp.headers["content-type"], resp.content, path.endswith("completions"))


@matrix("slowloris sender: connects and sends nothing, or half a head, or half a body",
        "the connection is closed after REQUEST_READ_TIMEOUT_S (2 s here); no generation starts")
def test_slow_senders_are_cut_off(open_gw: GatewayProcess, open_inv: Invariants) -> None:
    before = open_inv.snapshot()
    body = chat_body("hello")
    full = raw_request("POST", "/v1/chat/stream", body)
    partials = [b"", full[:25], full[: len(full) - len(body) + 5]]  # nothing, half a head, half a body
    socks = [socket.create_connection(("127.0.0.1", open_gw.port)) for _ in partials]
    t0 = time.monotonic()
    for s, data in zip(socks, partials, strict=True):
        s.sendall(data)
        s.settimeout(10)
    for s in socks:
        try:
            rest = s.recv(65536)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", rest[:100]  # closed without an answer
        s.close()
    waited = time.monotonic() - t0
    assert 1.5 < waited < 10
    assert open_inv.check().started == before.started


# --- Last-Event-ID ------------------------------------------------------------------------------------------------

GARBAGE_IDS = {
    "no-colon": "abc", "colons": ":::", "negative": "x:-1", "exponent": "x:1e3", "40-digits": "x:" + "9" * 40,
    "long-id": "a" * 200 + ":1", "superscript-2": "x:\xb2", "arabic-digit": "x:\u0661", "trailing-space": "x:1 ",
    "6-KB": "x:1" * 2000, "latin-1": "\u00ff\u00fe:1",
}


def get(gw: GatewayProcess, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """A GET over a raw socket (header values are latin-1, as a hostile client may send any byte)."""
    with RawStream(gw.port) as c:
        c.send(raw_request("GET", path, headers=headers))
        status = c.read_head()
        c.read_all(10)
        return status, c.headers.get("content-type", ""), c.body


@pytest.mark.parametrize("last_id", GARBAGE_IDS.values(), ids=GARBAGE_IDS.keys())
@matrix("garbage Last-Event-ID on `GET /chat` and `GET /v1/streams/{id}` (bad syntax, unicode digits, 6 KB)",
        "`400 invalid_request` or `404 not_found` as JSON; never a 5xx")
def test_garbage_last_event_id(keyed_gw: GatewayProcess, last_id: str) -> None:
    for path in ("/chat?q=hi", "/v1/streams/abc"):
        status, ctype, body = get(keyed_gw, path, {**KEYS["k1"], "Last-Event-ID": last_id})
        assert status in (400, 404), (path, status, body)
        assert_json_error(status, ctype, body, openai=False)


@matrix("huge Last-Event-ID (60 KB)", "`400 invalid_request` as JSON")
def test_huge_last_event_id(keyed_gw: GatewayProcess) -> None:
    status, ctype, body = get(keyed_gw, "/chat?q=hi", {**KEYS["k1"], "Last-Event-ID": "x" * 60_000 + ":1"})
    assert status == 400
    assert_json_error(status, ctype, body, openai=False)


@matrix("another key's Last-Event-ID (two API keys): resume via `GET /chat` and `GET /v1/streams/{id}`, and cancel",
        "`404 not_found`, the same as an unknown stream (nothing tells that the stream exists); the owner can still "
        "resume")
def test_another_keys_last_event_id(keyed_gw: GatewayProcess) -> None:
    with httpx.stream("POST", keyed_gw.url + "/v1/chat/stream", content=chat_body("tell me about proxies"),
                      headers=KEYS["k1"], timeout=30) as resp:
        assert resp.status_code == 200
        dec = SSEDecoder()
        events = [ev for chunk in resp.iter_text() for ev in dec.feed(chunk)]
    last = events[1].id
    assert last is not None
    sid = split_event_id(last)
    assert sid is not None
    for path, headers in [("/chat?q=hi", {"Last-Event-ID": last}), (f"/v1/streams/{sid[0]}", {"Last-Event-ID": last}),
                          (f"/v1/streams/{sid[0]}?after=1", {})]:
        status, ctype, body = get(keyed_gw, path, {**KEYS["k2"], **headers})
        assert status == 404, (path, status, body)
        assert_json_error(status, ctype, body, openai=False)
    resp2 = httpx.post(f"{keyed_gw.url}/v1/streams/{sid[0]}/cancel", headers=KEYS["k2"], timeout=10)
    assert resp2.status_code == 404
    unknown = httpx.post(f"{keyed_gw.url}/v1/streams/{'A' * 22}/cancel", headers=KEYS["k2"], timeout=10)
    assert unknown.json() == resp2.json()
    status, _, body = get(keyed_gw, f"/v1/streams/{sid[0]}", {**KEYS["k1"], "Last-Event-ID": last})
    assert status == 200 and b"event: done" in body


# --- regressions --------------------------------------------------------------------------------------------------

def test_regression_unicode_digit_last_event_id_is_500(keyed_gw: GatewayProcess) -> None:
    """A Last-Event-ID whose seq was a non-ASCII digit (``x:²``, latin-1 ``\\xb2`` in the header) passed
    ``str.isdigit()`` in ``sse.split_event_id`` and then crashed ``int()``: a 500 from ``GET /chat`` and
    ``GET /v1/streams/{id}``. Only ASCII digits are a seq now: 400."""
    for path in ("/chat?q=hi", "/v1/streams/x"):
        status, ctype, body = get(keyed_gw, path, {**KEYS["k1"], "Last-Event-ID": "x:\xb2"})
        assert status == 400, body
        assert_json_error(status, ctype, body, openai=False)
    assert split_event_id("x:\u0663") is None


def test_regression_unicode_digit_retry_field_crashes_the_decoder() -> None:
    """``SSEDecoder`` (used by the Python client and ``ssegate chat``) took ``retry: ²`` for a number and raised
    ValueError on it, so a hostile or broken server could crash the client. The spec says ASCII digits only."""
    dec = SSEDecoder()
    events = list(dec.feed("retry: \u00b2\ndata: x\n\nretry: 15\ndata: y\n\n"))
    assert [(e.data, e.retry) for e in events] == [("x", None), ("y", 15)]


def test_regression_huge_request_head_is_buffered_whole(open_gw: GatewayProcess, open_inv: Invariants) -> None:
    """uvicorn's httptools protocol buffers a request line or header of any size: one 200 MiB header took the
    process from 70 to 370 MiB of RSS, and it stayed there. ``BoundedRequestProtocol`` (http/uvicorn_glue.py)
    answers 431 once an incomplete head passes ``MAX_QUERY_BYTES``."""
    before = open_inv.snapshot().rss
    for _ in range(3):
        with RawStream(open_gw.port) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):
                    c.send(b"a" * (1 << 20))
            except OSError:
                pass
            assert c.read_head() == 431
    assert open_inv.snapshot().rss - before < 16 * 1024 * 1024


def test_each_slow_sender_is_cut_off_at_its_own_read_deadline(open_gw: GatewayProcess) -> None:
    """The connections' read deadlines share one timer: a slow sender that connected 1 s after another is cut
    off REQUEST_READ_TIMEOUT_S (2 s) after its own connect, not with the first one (1 s after its connect)."""
    first = socket.create_connection(("127.0.0.1", open_gw.port))
    first.sendall(b"GET /heal")
    time.sleep(1.0)
    second = socket.create_connection(("127.0.0.1", open_gw.port))
    second.sendall(b"GET /heal")
    t1 = time.monotonic()
    for s in (first, second):
        s.settimeout(10)
        try:
            assert s.recv(100) == b""  # closed by the server
        except ConnectionResetError:
            pass
    waited = time.monotonic() - t1
    first.close()
    second.close()
    assert 1.5 < waited < 10, f"the second slow sender was cut off {waited:.2f}s after it connected (2 s)"


def test_regression_slowloris_holds_connections_forever(open_gw: GatewayProcess) -> None:
    """uvicorn closes an idle kept-alive connection, but not one that never completes its request: a client that
    sent half a head (or nothing) held its socket and its protocol object forever, so enough of them exhaust the
    file descriptors. ``BoundedRequestProtocol`` (http/uvicorn_glue.py) closes them after ``REQUEST_READ_TIMEOUT_S``."""
    s = socket.create_connection(("127.0.0.1", open_gw.port))
    s.sendall(b"GET /heal")
    s.settimeout(10)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed by the server
    assert time.monotonic() - t0 < 10
    s.close()
