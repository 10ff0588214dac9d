"""``ssegate chat`` as a real subprocess against real gateways: output, Ctrl-C, exit codes, ``--json``."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ssegate.upstream.demo import compose_answer, tokenize
from tests.conftest import FAST
from tests.fakes import FakeUpstream, Fault, Script
from tests.support.gateway import ROOT, GatewayProcess, free_port
from tests.support.proxy import CuttingProxy
from tests.support.resume import assert_a_drop_cancels, ended

HANG = 30  # seconds: only catches a hang


def script(**spec: Any) -> str:
    return "/script " + json.dumps(spec)


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
    e["PYTHONUNBUFFERED"] = "1"
    return e


def chat(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ssegate chat``; stdout and stderr decoded as UTF-8 with no newline translation."""
    proc = subprocess.run(
        [sys.executable, "-m", "ssegate", "chat", *args, "--url", url],
        input=stdin.encode() if stdin is not None else None, capture_output=True, env=env(), cwd=ROOT, timeout=HANG,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.fixture(scope="module")
def relay_grace(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """The fake upstream behind a gateway with a resume grace: a closed connection alone does not stop
    the generation for 30 s, so an upstream closed sooner proves that the CLI sent the cancel."""
    settings = {**FAST, "provider": "openai", "upstream_url": upstream.url, "model": "fake-model",
                "detach_grace_s": 30, "shutdown_grace_s": 1}
    with GatewayProcess(settings) as gw:
        yield gw


def test_output_is_the_streamed_answer(demo_gateway: GatewayProcess) -> None:
    prompt = "How do servers stream tokens?"
    proc = chat(demo_gateway.url, prompt)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == compose_answer(prompt) + "\n"
    assert proc.stderr == ""  # no summary when stderr is not a terminal


def test_output_keeps_the_text_exactly(upstream: FakeUpstream, gateway: GatewayProcess) -> None:
    deltas = ["Line one,", "\nline two ", "with ünïcödé 日本 🙂", "\r\n", "  [bold]not markup[/]", " <b>&amp;</b>"]
    proc = chat(gateway.url, upstream.script(Script(deltas=deltas)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(deltas) + "\n"


def test_tokens_are_written_as_they_arrive(demo_gateway: GatewayProcess) -> None:
    """The first token is on stdout while the model is still generating the rest (a stall keeps it open)."""
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", script(deltas=["first"], stall=True), "--url", demo_gateway.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None
        try:
            assert read_some(proc.stdout.fileno(), "first") == "first"
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(HANG) == 130


def read_some(fd: int, until: str) -> str:
    """Read from ``fd`` until ``until`` was seen (fails after HANG seconds)."""
    got = b""
    deadline = time.monotonic() + HANG
    while until.encode() not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"no {until!r} on stdout after {HANG}s; got {got!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"stdout closed; got {got!r}"
            got += chunk
    return got.decode()


def test_ctrl_c_cancels_the_stream_on_the_server(upstream: FakeUpstream, relay_grace: GatewayProcess) -> None:
    deltas = [f"tok{i} " for i in range(400)]
    prompt = upstream.script(Script(deltas=deltas, delay=0.05))
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", prompt, "--url", relay_grace.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        partial = read_some(proc.stdout.fileno(), "tok2 ")
        proc.send_signal(signal.SIGINT)
        record = upstream.wait_closed(prompt, 10)
        assert record.closed_at is not None
        assert proc.wait(HANG) == 130
        rest = proc.stdout.read().decode()
        err = proc.stderr.read().decode()
    printed = (partial + rest).rstrip("\n")
    assert "".join(deltas).startswith(printed) and len(printed) < len("".join(deltas))
    assert "cancelled" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("spec", "code", "expected"),
    [
        ({"deltas": ["a"], "fail_at": 0, "error": "upstream_timeout"}, 3, "upstream_timeout"),
        ({"deltas": ["a", "b"], "fail_at": 1, "error": "upstream_error"}, 3, "upstream_error"),
        ({"deltas": ["a", "b"], "fail_at": 1, "error": "rate_limited"}, 3, "rate_limited"),
        ({"deltas": ["a"], "fail_at": 0, "error": "overloaded"}, 3, "overloaded"),
        ({"deltas": ["a"], "fail_at": 0, "error": "invalid_request"}, 2, "invalid_request"),
    ],
)
def test_exit_codes_for_errors(demo_gateway: GatewayProcess, spec: dict[str, Any], code: int, expected: str) -> None:
    proc = chat(demo_gateway.url, script(**spec))
    assert proc.returncode == code, proc.stderr
    assert f"error {expected}:" in proc.stderr and "Traceback" not in proc.stderr


def test_error_messages_are_printed_literally(demo_gateway: GatewayProcess) -> None:
    """A message that looks like rich markup is printed as it is (and does not crash the CLI)."""
    proc = chat(demo_gateway.url, script(deltas=["a"], fail_at=0, error="upstream_error", message="[/] [bold]x"))
    assert proc.returncode == 3
    assert "error upstream_error: [/] [bold]x" in proc.stderr


def test_exit_code_for_an_upstream_failure_mid_answer(upstream: FakeUpstream, gateway: GatewayProcess) -> None:
    prompt = upstream.script(Script(deltas=["one ", "two ", "three "], fault=Fault.RESET, fault_after=2))
    proc = chat(gateway.url, prompt)
    assert proc.returncode == 3
    assert proc.stdout == "one two \n"
    assert "error upstream_error:" in proc.stderr


def test_exit_codes_for_client_errors(make_gateway: Any) -> None:
    gw = make_gateway({"api_keys": "secret", "demo_ttft_s": 0.01})
    denied = chat(gw.url, "hello")
    assert denied.returncode == 2 and "error unauthorized:" in denied.stderr
    assert "--api-key" in denied.stderr and "SSEGATE_API_KEY" in denied.stderr  # what to do about it
    ok = chat(gw.url, script(deltas=["fine"]), "--api-key", "secret")
    assert (ok.returncode, ok.stdout) == (0, "fine\n")
    bad_script = chat(gw.url, "/script {not json", "--api-key", "secret")
    assert bad_script.returncode == 2 and "error invalid_request:" in bad_script.stderr


def test_exit_code_when_the_gateway_cannot_be_reached() -> None:
    proc = chat(f"http://127.0.0.1:{free_port()}", "hello")
    assert proc.returncode == 4
    assert "cannot reach the gateway" in proc.stderr
    assert "--url" in proc.stderr and "SSEGATE_URL" in proc.stderr  # what to do about it
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_json_prints_every_event(demo_gateway: GatewayProcess) -> None:
    proc = chat(demo_gateway.url, script(deltas=["Hel", "lo"]), "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    sid = lines[0]["data"]["stream_id"]
    assert [(e["id"], e["event"]) for e in lines] == [
        (f"{sid}:1", "start"), (f"{sid}:2", "message"), (f"{sid}:3", "message"), (f"{sid}:4", "done")]
    assert [e["data"].get("delta") for e in lines[1:3]] == ["Hel", "lo"]
    assert lines[-1]["data"]["usage"]["completion_tokens"] == 2


def test_ctrl_c_in_json_mode_ends_with_a_cancelled_line(upstream: FakeUpstream, relay_grace: GatewayProcess) -> None:
    """A program reading ``--json`` lines learns why they stopped: the last line is ``"event": "cancelled"``."""
    prompt = upstream.script(Script(deltas=[f"j{i} " for i in range(400)], delay=0.05))
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", prompt, "--json", "--url", relay_grace.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        partial = read_some(proc.stdout.fileno(), '"j2 "')
        proc.send_signal(signal.SIGINT)
        assert upstream.wait_closed(prompt, 10).closed_at is not None  # cancelled on the server
        assert proc.wait(HANG) == 130
        lines = [json.loads(line) for line in (partial + proc.stdout.read().decode()).splitlines()]
        assert "Traceback" not in proc.stderr.read().decode()
    sid = lines[0]["data"]["stream_id"]
    last_seq = max(int(e["id"].rsplit(":", 1)[1]) for e in lines if e["id"])
    assert lines[-1] == {"id": None, "event": "cancelled",
                         "data": {"stream_id": sid, "last_event_id": f"{sid}:{last_seq}", "acknowledged": True}}
    assert all(e["event"] in ("start", "message") for e in lines[:-1])


def test_regression_a_closed_pipe_printed_a_traceback(upstream: FakeUpstream, relay_grace: GatewayProcess) -> None:
    """``ssegate chat "..." | head -c 10``: once ``head`` had its bytes and closed the pipe, the next write raised
    BrokenPipeError: a traceback on stderr, exit status 1, and the generation went on for its resume grace. Now
    the answer is cancelled on the server and the command exits 0, quietly."""
    prompt = upstream.script(Script(deltas=[f"p{i} " for i in range(400)], delay=0.02))
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", prompt, "--url", relay_grace.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
    ) as chat_proc:
        assert chat_proc.stdout is not None and chat_proc.stderr is not None
        head = subprocess.run(["head", "-c", "10"], stdin=chat_proc.stdout, capture_output=True, timeout=HANG)
        chat_proc.stdout.close()  # only head reads the pipe: when it exits, the pipe has no reader
        assert chat_proc.wait(HANG) == 0
        err = chat_proc.stderr.read().decode()
    assert head.stdout == b"p0 p1 p2 p"
    assert err == ""
    assert upstream.wait_closed(prompt, 10).closed_at is not None  # cancelled, not left to the grace


def test_regression_chat_resume_relied_on_the_servers_grace(make_gateway: Any) -> None:
    """``ssegate chat`` asks for a resume grace of its own: against a gateway whose grace is 0 (the default), a
    connection dropped mid-answer still resumes the same generation, and the whole answer is printed once."""
    gw = make_gateway({"detach_grace_s": 0, "demo_ttft_s": 0.05, "shutdown_grace_s": 1})
    assert_a_drop_cancels(gw.url)  # the control: a request without a grace of its own loses its generation
    cancelled = ended(gw.url, "cancelled:disconnect")
    deltas = [f" w{i}-é日本" for i in range(120)]
    with CuttingProxy(gw.port) as proxy:
        proxy.cut_next(900)
        proc = chat(proxy.url, script(deltas=deltas, delay=0.005))
        cuts = [c.cut for c in proxy.conns]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(deltas) + "\n"
    assert cuts == [True, False]  # the first connection really ended mid-answer; the resume read the rest
    assert ended(gw.url, "cancelled:disconnect") == cancelled


def test_json_prints_the_error_event(demo_gateway: GatewayProcess) -> None:
    proc = chat(demo_gateway.url, script(deltas=["a", "b"], fail_at=1, error="upstream_timeout"), "--json")
    assert proc.returncode == 3
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["event"] == "error"
    assert last["data"]["error"]["code"] == "upstream_timeout" and last["data"]["error"]["retryable"] is True


def test_interactive_conversation_keeps_the_history(demo_gateway: GatewayProcess) -> None:
    first, second = "What is SSE?", "And what about proxies?"
    proc = chat(demo_gateway.url, "--json", stdin=f"{first}\n\n{second}\n")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    dones = [e["data"] for e in events if e["event"] == "done"]
    assert len(dones) == 2
    answer1 = compose_answer(first)

    def prompt_tokens(messages: list[str]) -> int:  # how the demo model counts its prompt
        return sum(len(tokenize(m)) + 4 for m in messages)

    assert dones[0]["usage"]["prompt_tokens"] == prompt_tokens([first])
    assert dones[1]["usage"]["prompt_tokens"] == prompt_tokens([first, answer1, second])


def test_a_terminal_gets_the_answer_and_nothing_else(demo_gateway: GatewayProcess) -> None:
    """On a terminal stdout holds the answer as it streams (through ``rich``), no banner or note: the summary is
    on stderr."""
    prompt = "What is a gateway?"
    master, slave = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", prompt, "--url", demo_gateway.url],
        stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**env(), "TERM": "xterm", "COLUMNS": "80"}, cwd=ROOT,
    ) as proc:
        os.close(slave)
        out = read_terminal(master)
        assert proc.wait(HANG) == 0
        assert proc.stderr is not None
        proc.stderr.read()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", out.decode()).replace("\r", "")
    assert text == compose_answer(prompt) + "\n"


def read_terminal(master: int) -> bytes:
    """Everything written to a pseudo-terminal until its other side is closed."""
    out = b""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out


def test_a_terminal_gets_the_answer_as_it_streams(demo_gateway: GatewayProcess) -> None:
    """On a TTY the output goes through ``rich``; the text is the same."""
    prompt = "Tell me about latency"
    master, slave = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", prompt, "--url", demo_gateway.url],
        stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env={**env(), "TERM": "xterm", "COLUMNS": "80"},
        cwd=ROOT,
    ) as proc:
        os.close(slave)
        out = b""
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        assert proc.wait(HANG) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", out.decode()).replace("\r", "")
    assert compose_answer(prompt) in text
    assert "tokens" in text  # the summary line on the terminal's stderr


# --- reasoning and tool calls --------------------------------------------------------------------------------
REASONING = ["Two cities, ", "so two calls."]
PARTS_SCRIPT = script(parts=[
    {"reasoning": REASONING[0]}, {"reasoning": REASONING[1]}, "Checking ", "both.",
    {"tool_call": {"id": "call_w", "name": "get_weather"}}, {"arguments": '{"city": '}, {"arguments": '"Paris"}'},
    {"tool_call": {"id": "call_t", "name": "get_time"}}, {"arguments": "{}"},
], finish_reason="tool_calls")
TOOL_LINES = ['→ tool call get_weather({"city": "Paris"})  call_w', "→ tool call get_time({})  call_t"]


def test_reasoning_and_tool_calls_go_to_stderr_one_line_each(demo_gateway: GatewayProcess) -> None:
    """stdout holds only the answer's text; the reasoning (after ``thinking:``) and one line per tool call, with
    its whole arguments and id, go to stderr."""
    proc = chat(demo_gateway.url, PARTS_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Checking both.\n"
    assert proc.stderr.splitlines() == ["thinking: " + "".join(REASONING), *TOOL_LINES]


def test_a_terminal_shows_reasoning_dimmed_and_one_line_per_tool_call(demo_gateway: GatewayProcess) -> None:
    """On a terminal the reasoning is printed dimmed on stdout as it streams (every piece under an SGR 2 "faint"
    attribute), then the answer, then a line per tool call."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "ssegate", "chat", PARTS_SCRIPT, "--url", demo_gateway.url],
        stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**env(), "TERM": "xterm", "COLUMNS": "200"}, cwd=ROOT,
    ) as proc:
        os.close(slave)
        raw = read_terminal(master).decode()
        assert proc.wait(HANG) == 0
        assert proc.stderr is not None
        proc.stderr.read()
    for piece in REASONING:
        assert re.search(r"\x1b\[(?:\d+;)*2(?:;\d+)*m" + re.escape(piece), raw), (piece, raw)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", raw).replace("\r", "")
    assert text.splitlines() == ["thinking: " + "".join(REASONING), "Checking both.", *TOOL_LINES]
