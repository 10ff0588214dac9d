"""The Vercel AI SDK's UI message stream at ``POST /api/chat`` (CONTRACT §11), end to end against real processes.

The real ``ai`` package (5.0.0, the newest 5.x and 6.x, from ``tests/npm``) reads the stream with its own
transport, parser and Chat class (``tests/npm/aisdk/``, run under ``node --test`` by the first test). The rest
pins the wire (chunk sequences, the field set per client version, provider data), the translation of UIMessages
into what an OpenAI-compatible or Anthropic upstream receives, resume by chat id, cancel, and refusals.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import FAST
from tests.fakes import FakeUpstream, Reasoning, Script, Text
from tests.support.gateway import ROOT, GatewayProcess, sse_events

NPM = ROOT / "tests" / "npm"
SDK_TESTS = NPM / "aisdk"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PNG = ("data:image/png;base64,"
       "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"u-{uuid.uuid4().hex[:12]}", "role": "user", "parts": [{"type": "text", "text": text}], **extra}


def scripted(**spec: Any) -> str:
    return "/script " + json.dumps(spec)


def body(messages: list[dict[str, Any]], chat_id: str = "chat-1", **fields: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": messages, "trigger": "submit-message", "messageId": None, **fields}


def read_chunks(resp: httpx.Response) -> Iterator[Any]:
    """The ``data:`` payloads of a UI message stream as they come: parsed chunks, and ``"[DONE]"``."""
    for event in sse_events(resp.iter_text()):
        yield event.data if event.data == "[DONE]" else event.json()


def chunks_of(resp: httpx.Response) -> list[Any]:
    return list(read_chunks(resp))


def take(chunks: Iterator[Any], n: int) -> list[Any]:
    return [next(chunks) for _ in range(n)]


def post(gw: GatewayProcess, payload: dict[str, Any], headers: dict[str, str] | None = None
         ) -> tuple[httpx.Response, list[Any]]:
    with httpx.stream("POST", gw.url + "/api/chat", json=payload, headers=headers or {}, timeout=30) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, chunks_of(resp)


def types(chunks: list[Any]) -> list[str]:
    return [c if isinstance(c, str) else c["type"] for c in chunks]


@pytest.fixture(scope="module")
def demo() -> Iterator[GatewayProcess]:
    with GatewayProcess({"demo_ttft_s": 0.05, "demo_tokens_per_s": 400, **FAST}) as gw:
        yield gw


# --- the real AI SDK ----------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_the_real_ai_sdk_reads_api_chat(demo: GatewayProcess) -> None:
    """``node --test tests/npm/aisdk/``: ai@5.0.0, the newest 5.x and 6.x send with ``DefaultChatTransport`` and
    assemble with ``readUIMessageStream`` and ``Chat``: text, reasoning and tool parts, a client-side tool loop,
    ``reconnectToStream`` and ``resumeStream`` mid-answer, failures in the SDK's error state, cancel."""
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (make system-deps)")
    for alias in ("ai5", "ai5latest", "ai6"):
        if not (NPM / "node_modules" / alias / "package.json").exists():
            missing(f"the npm package {alias} is not installed in tests/npm (run `make npm-deps`)")
    assert node is not None
    proc = subprocess.run([node, "--test", "--test-reporter=spec", str(SDK_TESTS)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "SSEGATE_URL": demo.url, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    assert "# fail 0" in proc.stdout or "fail 0" in proc.stdout


# --- the wire ----------------------------------------------------------------------------------------------
def test_text_answer_is_the_canonical_sequence(demo: GatewayProcess) -> None:
    resp, chunks = post(demo, body([user(scripted(deltas=["Hel", "lo"]))]))
    assert resp.status_code == 200
    assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["cache-control"] == "no-cache" and resp.headers["x-accel-buffering"] == "no"
    message_id = chunks[0]["messageId"]
    assert message_id.startswith("msg-")
    assert chunks == [
        {"type": "start", "messageId": message_id}, {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hel"}, {"type": "text-delta", "id": "text-1", "delta": "lo"},
        {"type": "text-end", "id": "text-1"}, {"type": "finish-step"}, {"type": "finish"}, "[DONE]",
    ]


def test_every_part_in_order_with_provider_data_on_the_last_closing_chunk(demo: GatewayProcess) -> None:
    parts = [{"reasoning": "Hmm"}, "Let me check.", {"reasoning": " ok"},
             {"tool_call": {"id": "c1", "name": "get_weather"}}, {"arguments": '{"city":'}, {"arguments": '"Oslo"}'},
             {"tool_call": {"id": "c2", "name": "get_time"}}]
    pd = {"anthropic": {"thinking": [{"type": "thinking", "thinking": "Hmm ok", "signature": "s1"}]}}
    resp, chunks = post(demo, body([user(scripted(parts=parts, finish_reason="tool_calls", provider_data=pd))]))
    assert resp.status_code == 200
    assert chunks[2:] == [
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Hmm"},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "text-start", "id": "text-2"}, {"type": "text-delta", "id": "text-2", "delta": "Let me check."},
        {"type": "text-end", "id": "text-2"},
        {"type": "reasoning-start", "id": "reasoning-3"},
        {"type": "reasoning-delta", "id": "reasoning-3", "delta": " ok"},
        {"type": "reasoning-end", "id": "reasoning-3"},
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "get_weather"},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"city":'},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '"Oslo"}'},
        {"type": "tool-input-start", "toolCallId": "c2", "toolName": "get_time"},
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool-input-available", "toolCallId": "c2", "toolName": "get_time", "input": {},
         "providerMetadata": {"ssegate": {"provider_data": pd}}},
        {"type": "finish-step"}, {"type": "finish"}, "[DONE]",
    ]


def test_a_call_s_input_is_available_at_the_end_whatever_follows_it(demo: GatewayProcess) -> None:
    """Text after a call (or pieces of two calls interleaved) cannot cut a call's input short: it is parsed whole,
    at the end."""
    parts = [{"tool_call": {"id": "c1", "name": "f"}}, {"arguments": '{"a":'},
             {"tool_call": {"id": "c2", "name": "g"}}, {"arguments": '{"b": 2}', "index": 1},
             {"arguments": " 1}", "index": 0}, "Calling."]
    resp, chunks = post(demo, body([user(scripted(parts=parts, finish_reason="tool_calls"))]))
    assert resp.status_code == 200
    assert types(chunks)[2:] == ["tool-input-start", "tool-input-delta", "tool-input-start", "tool-input-delta",
                                 "tool-input-delta", "text-start", "text-delta", "text-end", "tool-input-available",
                                 "tool-input-available", "finish-step", "finish", "[DONE]"]
    assert [c["input"] for c in chunks if isinstance(c, dict) and c["type"] == "tool-input-available"] == [
        {"a": 1}, {"b": 2}]


@pytest.mark.parametrize(("version", "finish", "bad_input"), [
    (None, {"type": "finish"}, {"type": "tool-input-available", "toolCallId": "c1", "toolName": "f",
                                "input": '{"a": '}),
    ("5.0.6", {"type": "finish"}, {"type": "tool-input-available", "toolCallId": "c1", "toolName": "f",
                                   "input": '{"a": '}),
    ("5.0.91", {"type": "finish"}, {"type": "tool-input-error", "toolCallId": "c1", "toolName": "f",
                                    "input": '{"a": ', "errorText": "the model's tool input is not valid JSON"}),
    ("6", {"type": "finish", "finishReason": "tool-calls"},
     {"type": "tool-input-error", "toolCallId": "c1", "toolName": "f", "input": '{"a": ',
      "errorText": "the model's tool input is not valid JSON"}),
], ids=["default", "5.0.6", "5.0.91", "6"])
def test_the_field_set_follows_the_client_version(demo: GatewayProcess, version: str | None,
                                                  finish: dict[str, Any], bad_input: dict[str, Any]) -> None:
    """ai@5.0.0 (and every client up to 5.0.216 / 6.0.230) rejects unknown keys: newer fields only when asked."""
    headers = {"X-AI-SDK-Version": version} if version else {}
    parts = [{"tool_call": {"id": "c1", "name": "f"}}, {"arguments": '{"a": '}]
    resp, chunks = post(demo, body([user(scripted(parts=parts, finish_reason="tool_calls"))]), headers)
    assert resp.status_code == 200
    assert chunks[-4:] == [bad_input, {"type": "finish-step"}, finish, "[DONE]"]


@pytest.mark.parametrize(("reason", "expected"), [("stop", "stop"), ("length", "length"),
                                                  ("content_filter", "content-filter"), ("odd", "other")])
def test_finish_reasons_in_the_sdk_s_names(demo: GatewayProcess, reason: str, expected: str) -> None:
    _, chunks = post(demo, body([user(scripted(deltas=["x"], finish_reason=reason))]), {"X-AI-SDK-Version": "5.0.92"})
    assert chunks[-2] == {"type": "finish", "finishReason": expected}


def test_keepalives_are_sse_comments(make_gateway: Any) -> None:
    gw = make_gateway({"heartbeat_s": 0.3, "commit_timeout_s": 0.2})
    with httpx.stream("POST", gw.url + "/api/chat", json=body([user(scripted(deltas=["late"], ttft=1.2))]),
                      timeout=30) as resp:
        raw = resp.read()
    assert raw.count(b": ping\n\n") >= 2
    assert b'"type":"ping"' not in raw
    assert raw.endswith(b'data: {"type":"finish"}\n\ndata: [DONE]\n\n')


# --- requests: UIMessages -> the upstream's messages ------------------------------------------------------------
def test_ui_messages_reach_an_openai_upstream_as_openai_messages(gateway: GatewayProcess,
                                                                 upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=["fine"]))
    history = [
        {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
        {"id": "u1", "role": "user", "parts": [
            {"type": "text", "text": "What is on these?"},
            {"type": "file", "mediaType": "image/png", "filename": "a.png", "url": PNG},
            {"type": "file", "mediaType": "image/jpeg", "url": "https://example.com/b.jpg"}]},
        {"id": "a1", "role": "assistant", "metadata": {"app": 1}, "parts": [
            {"type": "step-start"},
            {"type": "reasoning", "text": "Look first.", "state": "done"},
            {"type": "text", "text": "Let me look.", "state": "done"},
            {"type": "tool-get_weather", "toolCallId": "call_1", "state": "output-available",
             "input": {"city": "Oslo"}, "output": {"temp": -3}},
            {"type": "dynamic-tool", "toolName": "lookup", "toolCallId": "call_2", "state": "output-error",
             "input": {"q": "x"}, "errorText": "lookup is down"},
            {"type": "tool-get_time", "toolCallId": "call_3", "state": "input-streaming", "input": {"ci": 1}},
            {"type": "step-start"},
            {"type": "text", "text": "Snowy.", "state": "done"},
            {"type": "source-url", "sourceId": "s1", "url": "https://example.com"},
            {"type": "data-weather", "id": "d1", "data": {"any": "thing"}}]},
        user(f"And now? {prompt}"),
    ]
    resp, chunks = post(gateway, body(history, tools=[WEATHER], temperature=0.2, reasoning_effort="low"))
    assert resp.status_code == 200, resp.text
    assert "".join(c.get("delta", "") for c in chunks if isinstance(c, dict)) == "fine"
    [rec] = upstream.records(prompt)
    sent = rec.request_json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is on these?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}]},
        {"role": "assistant", "content": "Let me look.", "reasoning_content": "Look first.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":-3}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "lookup is down"},
        {"role": "assistant", "content": "Snowy."},
        {"role": "user", "content": f"And now? {prompt}"},
    ]
    assert sent["tools"] == [WEATHER] and sent["temperature"] == 0.2 and sent["reasoning_effort"] == "low"
    assert sent["model"] == "fake-model"


def test_provider_data_round_trips_through_the_ui_message(anthropic_upstream: FakeUpstream) -> None:
    """Anthropic's thinking signature comes out on the message's last part (providerMetadata.ssegate) and, sent
    back with the message, reaches the upstream as the thinking block it sent (the fake refuses anything else)."""
    turns = [Script(parts=[Reasoning("Think", signature="sig-1"), Text("Hi.")]), Script(deltas=["Again."])]
    prompt = anthropic_upstream.script(Script(turns=turns, require_signatures=True))
    settings = {"provider": "anthropic", "upstream_url": anthropic_upstream.url, "model": "claude-test",
                "upstream_api_key": "k", **FAST}
    with GatewayProcess(settings) as gw:
        first = user(f"Hello {prompt}")
        resp, chunks = post(gw, body([first]))
        assert resp.status_code == 200
        text_end = next(c for c in chunks if isinstance(c, dict) and c["type"] == "text-end")
        meta = text_end["providerMetadata"]
        assert meta["ssegate"]["provider_data"]["anthropic"]["thinking"][0]["signature"] == "sig-1"
        assistant = {"id": chunks[0]["messageId"], "role": "assistant", "parts": [
            {"type": "step-start"}, {"type": "reasoning", "text": "Think", "state": "done"},
            {"type": "text", "text": "Hi.", "state": "done", "providerMetadata": meta}]}
        resp, chunks = post(gw, body([first, assistant, user("More")]))
        assert resp.status_code == 200, resp.text
        assert [c.get("delta") for c in chunks if isinstance(c, dict) and c["type"] == "text-delta"] == ["Again."]
    second = anthropic_upstream.records(prompt)[-1].request_json
    assert second["messages"][1]["content"][0] == {"type": "thinking", "thinking": "Think", "signature": "sig-1"}


def test_a_continuation_names_the_assistant_message_it_continues(demo: GatewayProcess) -> None:
    """After a client-side tool's output the last message is the assistant's: the answer goes on in it (the
    SDK appends to the message whose id ``start`` names; another id would duplicate it)."""
    assistant = {"id": "msg-app-7", "role": "assistant", "parts": [
        {"type": "step-start"},
        {"type": "tool-get_weather", "toolCallId": "call_demo_0", "state": "output-available",
         "input": {"city": "Paris"}, "output": "21 C"}]}
    resp, chunks = post(demo, body([user("Weather in Paris?"), assistant], tools=[WEATHER]))
    assert resp.status_code == 200
    assert chunks[0] == {"type": "start", "messageId": "msg-app-7"}
    assert "21 C" in "".join(c.get("delta", "") for c in chunks if isinstance(c, dict))


@pytest.mark.parametrize(("payload", "status", "says"), [
    ({"webSearch": True}, 422, "webSearch: Extra inputs are not permitted"),
    ({"messages": []}, 422, "messages: List should have at least 1 item"),
    ({"id": "a/b"}, 422, "id: String should match pattern"),
    ({"trigger": "resume-stream"}, 422, "trigger: Input should be"),
    ({"messages": [{"role": "user", "parts": [{"type": "file", "mediaType": "application/pdf",
                                                "url": "data:application/pdf;base64,AA=="}]}]},
     400, "messages.0.parts.0.mediaType: only image files"),
    ({"messages": [user("hi"), {"role": "assistant", "parts": [
        {"type": "tool-f", "toolCallId": "c9", "state": "input-available", "input": {}}]}]},
     400, "messages.1.parts.0.state: tool call 'c9' (f) has no output yet"),
    ({"messages": [{"role": "user", "parts": [{"type": "mystery"}]}]}, 400, "messages.0.parts.0.type: 'mystery'"),
    ({"messages": [{"role": "tool", "parts": []}]}, 422, "messages.0.role"),
    ({"messages": [{"role": "user", "parts": [{"type": "step-start"}]}]}, 400, "messages: nothing to send"),
    ({"tool_choice": "required"}, 400, "tool_choice is set, but tools is empty"),
    ({"resume_grace_s": -1}, 422, "resume_grace_s: Input should be greater than or equal to 0"),
])
def test_what_cannot_be_honoured_is_refused_in_the_sdk_s_error_text(demo: GatewayProcess, payload: dict[str, Any],
                                                                    status: int, says: str) -> None:
    """The transport throws ``new Error(await response.text())``: a plain ``<code>: <message>`` naming the field."""
    resp, _ = post(demo, {**body([user("hi")]), **payload})
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert resp.text.startswith("invalid_request: ") and says in resp.text, resp.text
    assert resp.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(("value", "says"), [("banana", "is not a version"), ("4.3.19", "ai 4 is not supported")])
def test_a_bad_version_header_is_refused(demo: GatewayProcess, value: str, says: str) -> None:
    resp, _ = post(demo, body([user("hi")]), {"X-AI-SDK-Version": value})
    assert resp.status_code == 400 and says in resp.text and "x-ai-sdk-version" in resp.text


def test_bad_json_is_refused_in_plain_text(demo: GatewayProcess) -> None:
    resp = httpx.post(demo.url + "/api/chat", content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.text == "invalid_request: request body is not valid JSON"
    resp = httpx.post(demo.url + "/api/chat", json=[1, 2])
    assert resp.status_code == 400 and "JSON object" in resp.text


# --- resume and cancel by chat id ------------------------------------------------------------------------------
def test_resume_replays_from_the_start_byte_for_byte_then_204(make_gateway: Any) -> None:
    gw = make_gateway({"demo_ttft_s": 0.05})
    deltas = [f"w{i} " for i in range(40)]
    prompt = scripted(parts=[{"reasoning": "Plan."}, *deltas], delay=0.03)
    with httpx.stream("POST", gw.url + "/api/chat", json=body([user(prompt)], "c-resume", resume_grace_s=10),
                      timeout=30) as first:
        head = take(read_chunks(first), 6)  # then the connection drops
    with httpx.stream("GET", gw.url + "/api/chat/c-resume/stream", timeout=30) as again:
        assert again.status_code == 200 and again.headers["x-vercel-ai-ui-message-stream"] == "v1"
        whole = chunks_of(again)
    assert whole[:6] == head  # the same start (same messageId), the same block ids: no gap, no duplicate
    assert types(whole)[:5] == ["start", "start-step", "reasoning-start", "reasoning-delta", "reasoning-end"]
    assert "".join(c["delta"] for c in whole if isinstance(c, dict) and c["type"] == "text-delta") == "".join(deltas)
    assert whole[-1] == "[DONE]"
    assert httpx.get(gw.url + "/api/chat/c-resume/stream").status_code == 204
    assert httpx.get(gw.url + "/api/chat/never-seen/stream").status_code == 204


def test_chats_are_per_api_key(make_gateway: Any) -> None:
    gw = make_gateway({"api_keys": "k1,k2", "demo_ttft_s": 0.05})
    prompt = scripted(deltas=[f"x{i} " for i in range(60)], delay=0.03)
    with httpx.stream("POST", gw.url + "/api/chat", json=body([user(prompt)], "shared-id"),
                      headers={"Authorization": "Bearer k1"}, timeout=30) as resp:
        assert resp.status_code == 200
        reading = read_chunks(resp)
        take(reading, 3)
        other = httpx.get(gw.url + "/api/chat/shared-id/stream", headers={"Authorization": "Bearer k2"})
        assert other.status_code == 204  # not k2's chat
        assert httpx.post(gw.url + "/api/chat/shared-id/cancel",
                          headers={"Authorization": "Bearer k2"}).status_code == 204
        denied = httpx.get(gw.url + "/api/chat/shared-id/stream")
        assert denied.status_code == 401 and denied.text.startswith("unauthorized: ")
        rest = list(reading)
    assert rest[-2:] == [{"type": "finish"}, "[DONE]"]  # k2's cancel did nothing


def test_a_new_message_in_the_chat_cancels_the_answer_still_running(gateway: GatewayProcess,
                                                                   upstream: FakeUpstream) -> None:
    """With a resume grace, ``stop()`` leaves the answer running; the next message of the chat ends it."""
    slow = upstream.script(Script(deltas=[f"s{i} " for i in range(500)], delay=0.02))
    with httpx.stream("POST", gateway.url + "/api/chat", json=body([user(slow)], "c-next", resume_grace_s=30),
                      timeout=30) as resp:
        take(read_chunks(resp), 4)
    upstream.wait_request(slow, timeout=5)
    quick = upstream.script(Script(deltas=["ok"]))
    t0 = time.monotonic()
    resp, chunks = post(gateway, body([user(slow), user(quick)], "c-next"))
    assert resp.status_code == 200 and chunks[-2:] == [{"type": "finish"}, "[DONE]"]
    rec = upstream.wait_closed(slow, timeout=5)
    assert rec.closed_at is not None and not rec.finished and rec.closed_at - t0 < 5


def test_cancel_by_chat_id_ends_the_stream_with_abort(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    prompt = upstream.script(Script(deltas=[f"c{i} " for i in range(500)], delay=0.02))
    with httpx.stream("POST", gateway.url + "/api/chat", json=body([user(prompt)], "c-cancel", resume_grace_s=30),
                      timeout=30) as resp:
        reading = read_chunks(resp)
        head = take(reading, 4)
        cancelled = httpx.post(gateway.url + "/api/chat/c-cancel/cancel")
        assert cancelled.status_code == 202
        assert cancelled.json() == {"chat_id": "c-cancel", "stream_id": resp.headers["x-stream-id"],
                                    "status": "cancelling"}
        rest = list(reading)
    assert types(head + rest)[-4:] == ["text-end", "finish-step", "abort", "[DONE]"]
    rec = upstream.wait_closed(prompt, timeout=5)
    assert not rec.finished
    assert httpx.post(gateway.url + "/api/chat/c-cancel/cancel").status_code == 204


def test_cors_lets_a_browser_app_send_the_version_header(make_gateway: Any) -> None:
    gw = make_gateway({"cors_origins": "https://app.example"})
    pre = httpx.options(gw.url + "/api/chat", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-ai-sdk-version"})
    assert pre.status_code == 200
    assert "x-ai-sdk-version" in pre.headers["access-control-allow-headers"].lower()

