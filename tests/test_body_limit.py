"""The default request body limit (``MAX_BODY_BYTES``, 20 MiB) fits images sent as data URLs, end to end.

A vision request carries its images inside the JSON body as base64 data URLs (a third larger than the image), so
the 1 MiB default that ssegate once had refused a single phone photo with ``413``. These tests run the session's
gateway (default settings but for short timeouts) in front of the fake OpenAI-compatible upstream, and check what
the upstream received: the image arrives byte for byte, a body of exactly the limit is accepted, one byte more is
a ``413 payload_too_large`` JSON error and nothing reaches the upstream.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from ssegate.settings import Settings
from tests.fakes import FakeUpstream, Script
from tests.support.gateway import GatewayProcess, collect_events

MiB = 1 << 20
DEFAULT_LIMIT = 20 * MiB
PATHS = ["/v1/chat/stream", "/v1/chat/completions"]


def data_url(raw_bytes: int) -> str:
    """A PNG-typed data URL of ``raw_bytes`` random bytes (incompressible, like a photo)."""
    return "data:image/png;base64," + base64.b64encode(os.urandom(raw_bytes)).decode()


def image_request(prompt: str, url: str) -> dict[str, Any]:
    image = {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
    return {"model": "fake-model", "messages": [
        {"role": "user", "content": [{"type": "text", "text": f"What is in this picture? {prompt}"}, image]}]}


def post(gw: GatewayProcess, path: str, body: bytes) -> httpx.Response:
    """POST ``body`` as it is (no re-encoding) and read the whole answer."""
    with httpx.stream("POST", gw.url + path, content=body, timeout=60,
                      headers={"content-type": "application/json"}) as resp:
        resp.read()
    return resp


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON followed by spaces (insignificant whitespace) up to exactly ``size`` bytes."""
    raw = orjson.dumps(body)
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


@pytest.fixture(scope="module")
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=60) as client:
        yield client


def test_the_default_limit_is_20_mib() -> None:
    assert Settings().max_body_bytes == DEFAULT_LIMIT


def test_a_2_mib_image_reaches_the_upstream_intact_through_the_sdk(sdk: openai.OpenAI,
                                                                  upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["A ", "cat."]))
    body = image_request(prompt, data_url(3 * MiB // 2))  # 2 MiB of base64
    out = sdk.chat.completions.create(**body)
    assert out.choices[0].message.content == "A cat."
    [rec] = upstream.records(prompt)
    assert len(rec.request_body) > 2 * MiB
    assert rec.images() == [body["messages"][0]["content"][1]]
    assert rec.request_json["messages"] == body["messages"]


def test_a_2_mib_image_reaches_the_upstream_intact_on_the_native_stream(gateway: GatewayProcess,
                                                                        upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["A ", "dog."]))
    body = image_request(prompt, data_url(3 * MiB // 2))
    with httpx.stream("POST", gateway.url + "/v1/chat/stream", content=orjson.dumps(body), timeout=60,
                      headers={"content-type": "application/json"}) as resp:
        assert resp.status_code == 200
        events = collect_events(resp)
    assert [e.event for e in events] == ["start", "message", "message", "done"]
    [rec] = upstream.records(prompt)
    assert rec.images() == [body["messages"][0]["content"][1]]


@pytest.mark.parametrize("path", PATHS)
def test_a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(gateway: GatewayProcess,
                                                                         upstream: FakeUpstream, path: str) -> None:
    """Both sides of the default limit, with the same request: an image of nearly 20 MiB, padded with JSON
    whitespace to exactly 20 MiB (relayed whole), then to 20 MiB + 1 (413, and the upstream never sees it)."""
    fits = upstream.script(Script(deltas=["ok"]))
    body = image_request(fits, data_url(DEFAULT_LIMIT * 3 // 4 - 64 * 1024))
    resp = post(gateway, path, padded(body, DEFAULT_LIMIT))
    assert resp.status_code == 200, resp.text[:300]
    [rec] = upstream.records(fits)
    assert rec.images() == [body["messages"][0]["content"][1]]

    over = upstream.script(Script(deltas=["never"]))
    body["messages"][0]["content"][0]["text"] = f"What is in this picture? {over}"
    resp = post(gateway, path, padded(body, DEFAULT_LIMIT + 1))
    assert resp.status_code == 413
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == "payload_too_large" and str(DEFAULT_LIMIT) in err["message"]
    if path == "/v1/chat/completions":
        assert err["type"] == "invalid_request_error"  # OpenAI's shape, which the SDKs read
    else:
        assert err["retryable"] is False
    assert upstream.records(over) == []


def _raw_exchange(gw: GatewayProcess, pieces: list[bytes], pause: float = 0.0) -> bytes:
    """Send ``pieces`` over one connection (``pause`` s apart: separate reads for the server; after the head of a
    request that expects ``100 Continue``, its interim answer first) and read until the server closes (every
    request here says ``Connection: close``)."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        got = b""
        for i, piece in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            if i and b"100-continue" in pieces[0].lower():
                while b"\r\n\r\n" not in got:
                    more = sock.recv(65536)
                    assert more, got
                    got += more
            sock.sendall(piece)
        while more := sock.recv(65536):
            got += more
        return got


@pytest.mark.parametrize("path", PATHS)
def test_a_body_that_arrives_with_its_head_is_read_whole_and_any_other_way_too(make_gateway: Any,
                                                                              upstream: FakeUpstream,
                                                                              path: str) -> None:
    """``ssegate serve``'s direct routes take a body that has all arrived with the head from the request cycle
    (``uvicorn_glue.whole_body``); a body still to come, or owed a ``100 Continue``, is read through ``receive``.
    Each way the request reaches the upstream whole, and a chunked body (no Content-Length) over the limit is a
    413 whichever way it came: checked by size after it is read, as ``receive``'s messages are counted."""
    gw = make_gateway({"provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                       "max_body_bytes": 2000})

    def request(marker: str, pad: int = 0, chunked: bool = False, expect: bool = False) -> tuple[bytes, bytes]:
        body = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": marker}]}) + b" " * pad
        framing = (b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % len(body))
        head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing
                + (b"Expect: 100-continue\r\n" if expect else b"") + b"Connection: close\r\n\r\n")
        return head, (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)

    for how in ("with the head", "after the head", "chunked with the head", "after 100 Continue"):
        marker = upstream.script(Script(deltas=["whole"]))
        head, body = request(marker, chunked=how.startswith("chunked"), expect=how.endswith("Continue"))
        pieces = [head + body] if how.endswith("the head") and how != "after the head" else [head, body]
        got = _raw_exchange(gw, pieces, pause=0.2)
        if how.endswith("Continue"):
            assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got[:200]
            got = got[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        assert got.startswith(b"HTTP/1.1 200 ") and b"whole" in got, (how, got[:300])
        [rec] = upstream.records(marker)
        assert rec.request_json["messages"] == [{"role": "user", "content": marker}], how

    for pieces_of in (lambda h, b: [h + b], lambda h, b: [h, b]):  # over the limit, with its head or after it
        marker = upstream.script(Script(deltas=["never"]))
        head, body = request(marker, pad=2100, chunked=True)
        got = _raw_exchange(gw, pieces_of(head, body), pause=0.2)
        assert got.startswith(b"HTTP/1.1 413 "), got[:300]
        assert b"payload_too_large" in got and upstream.records(marker) == []
