"""``ssegate serve`` as a real process: misconfiguration refused in one line, the port bound before anything
starts, the banner and text logs on a terminal, JSON logs when piped, several workers on one socket."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import ssegate
from ssegate.errors import InvalidRequest
from ssegate.obs.logs import JSONFormatter, TextFormatter
from ssegate.settings import Settings, check_query
from tests.support.gateway import ROOT, GatewayProcess, free_port
from tests.support.rawclient import RawStream, raw_request
from tests.support.redis import RedisServer

HANG = 30  # seconds: only catches a hang
QUICK = {"SSEGATE_DEMO_TTFT_S": "0.01", "SSEGATE_DEMO_TOKENS_PER_S": "2000", "SSEGATE_SHUTDOWN_GRACE_S": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GOOD_SECRET = "a-token-secret-that-is-long-enough-for-hmac"


def env(**settings: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("SSEGATE_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    e.update(QUICK)
    e.update(settings)
    e["PYTHONUNBUFFERED"] = "1"
    return e


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssegate", "serve", *args]


def run_serve(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``ssegate serve`` that is expected to exit by itself (a refusal)."""
    return subprocess.run(serve_cmd(*args), env=env(**settings), cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG)


def read_until(fd: int, pattern: str, got: bytes = b"", timeout: float = HANG) -> bytes:
    """Read ``fd`` until ``pattern`` (a regex) matches what was read; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, clean(got), re.M):
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} after {timeout}s; got {got.decode(errors='replace')!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                chunk = b""
            assert chunk, f"closed before {pattern!r}; got {got.decode(errors='replace')!r}"
            got += chunk
    return got


def drain(fd: int) -> bytes:
    """What is left to read on ``fd`` (a terminal whose process exited)."""
    got = b""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got


def clean(raw: bytes) -> str:
    """Terminal output as text: colours and carriage returns removed."""
    return ANSI.sub("", raw.decode(errors="replace")).replace("\r", "")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Stop ``ssegate serve`` with ``sig``; its exit status (after SIGTERM, uvicorn dies of the signal it got once it
    has shut down gracefully, as process managers expect: -15)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(HANG)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def one_stream(url: str, prompt: str = "hello") -> None:
    with httpx.stream("GET", url + "/chat", params={"q": prompt}, timeout=15) as resp:
        assert resp.status_code == 200
        assert "event: done" in resp.read().decode()


# --- refusals: one line, the variable or flag, exit status 2 -------------------------------------------------
REFUSALS = [
    pytest.param([], {"SSEGATE_PROVIDER": "foo"},
                 "SSEGATE_PROVIDER='foo' is not valid: expected one of demo, openai, anthropic", id="provider-env"),
    pytest.param(["--provider", "foo"], {},
                 "--provider 'foo' is not valid: expected one of demo, openai, anthropic", id="provider-flag"),
    pytest.param(["--port", "abc"], {}, "--port 'abc' is not valid: expected a whole number from 0 to 65535",
                 id="port-flag"),
    pytest.param([], {"SSEGATE_PORT": "80a"}, "SSEGATE_PORT='80a' is not valid: expected a whole number from 0 to "
                 "65535", id="port-env"),
    pytest.param(["--workers", "2"], {}, "--workers 2 needs SSEGATE_REDIS_URL", id="workers-flag"),
    pytest.param([], {"SSEGATE_WORKERS": "4"}, "SSEGATE_WORKERS=4 needs SSEGATE_REDIS_URL", id="workers-env"),
    pytest.param([], {"SSEGATE_TOKEN_SECRET": "hunter2-is-short"},
                 "SSEGATE_TOKEN_SECRET is too short (16 bytes): use at least 32 random bytes, e.g. "
                 'python -c "import secrets; print(secrets.token_urlsafe(32))"', id="short-secret"),
    pytest.param([], {"SSEGATE_REDIS_URL": "redis://127.0.0.1:1/0", "SSEGATE_API_KEYS": "k1"},
                 "SSEGATE_REDIS_URL with SSEGATE_API_KEYS needs SSEGATE_TOKEN_SECRET", id="redis-keys-no-secret"),
    pytest.param(["--upstream-url", "localhost:11434/v1", "--provider", "openai"], {},
                 "--upstream-url 'localhost:11434/v1' is not valid: expected a URL that starts with http:// or "
                 "https://", id="url-scheme"),
    pytest.param([], {"SSEGATE_REDIS_URL": "localhost:6379"}, "SSEGATE_REDIS_URL='localhost:6379' is not valid: "
                 "expected redis://HOST:PORT/DB", id="redis-url"),
    pytest.param(["--log-format", "pretty"], {}, "--log-format 'pretty' is not valid: expected one of auto, text, "
                 "json", id="log-format"),
    pytest.param([], {"SSEGATE_LOG_LEVEL": "loud"}, "SSEGATE_LOG_LEVEL='loud' is not valid: expected one of "
                 "debug, info, warning, error", id="log-level"),
    pytest.param([], {"SSEGATE_HEARTBEAT_S": "0"}, "SSEGATE_HEARTBEAT_S='0' is not valid: expected a number "
                 "above 0", id="heartbeat"),
    pytest.param([], {"SSEGATE_ALLOW_OPEN": "maybe"}, "SSEGATE_ALLOW_OPEN='maybe' is not valid: expected true or "
                 "false", id="bool"),
    pytest.param([], {"SSEGATE_MAX_QUERY_BYTES": "100"}, "SSEGATE_MAX_QUERY_BYTES='100' is not valid: expected a "
                 "whole number at least 8192", id="query-bytes"),
    pytest.param(["--host", "0.0.0.0"], {}, "refusing to serve on 0.0.0.0 without SSEGATE_API_KEYS",
                 id="public-open"),
    pytest.param(["--portt", "1"], {}, "unrecognized arguments: --portt 1 (see `ssegate --help`)",
                 id="unknown-flag"),
]


@pytest.mark.parametrize(("args", "settings", "message"), REFUSALS)
def test_a_wrong_setting_is_one_line_and_status_2(args: list[str], settings: dict[str, str], message: str) -> None:
    proc = run_serve(*args, **settings)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ssegate: ") and message in lines[0], lines[0]
    for noise in ("Traceback", "pydantic", "validation error", "usage:"):
        assert noise not in proc.stderr


def test_several_wrong_settings_share_the_one_line() -> None:
    proc = run_serve("--port", "x", SSEGATE_PROVIDER="foo")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "--port 'x'" in proc.stderr and "SSEGATE_PROVIDER='foo'" in proc.stderr


def test_a_refused_secret_is_never_printed() -> None:
    proc = run_serve(SSEGATE_TOKEN_SECRET="pa55word-pa55word")
    assert proc.returncode == 2
    assert "pa55word" not in proc.stderr


# --- the port: bound first -----------------------------------------------------------------------------------
@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "settings", "hint"),
    [
        pytest.param(["--port", "{port}"], {}, "(set --port)", id="one-worker-flag"),
        pytest.param([], {"SSEGATE_PORT": "{port}"}, "(set --port or SSEGATE_PORT)", id="one-worker-env"),
        pytest.param(["--port", "{port}", "--workers", "2"], {"SSEGATE_REDIS_URL": "redis://127.0.0.1:1/0"},
                     "(set --port)", id="two-workers"),
    ],
)
def test_a_port_in_use_is_said_before_anything_starts(
    busy_port: int, args: list[str], settings: dict[str, str], hint: str
) -> None:
    args = [a.format(port=busy_port) for a in args]
    settings = {k: v.format(port=busy_port) for k, v in settings.items()}
    proc = run_serve(*args, **settings)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"ssegate: port {busy_port} on 127.0.0.1 is already in use {hint}\n"


# --- a terminal: the banner and text logs -------------------------------------------------------------------
class OnTerminal:
    """``ssegate serve`` with stderr on a pseudo-terminal (as when a person runs it) and stdout on a pipe."""

    def __init__(self, *args: str, **settings: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            serve_cmd(*args), env={**env(**settings), "TERM": "xterm"}, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=slave,
        )
        os.close(slave)
        self.got = b""

    def wait_for(self, pattern: str) -> str:
        self.got = read_until(self.master, pattern, self.got)
        return clean(self.got)

    def close(self) -> tuple[int, bytes]:
        """Ctrl-C, as a person would; the exit status and stdout."""
        code = stop(self.proc, signal.SIGINT)
        self.got += drain(self.master)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.stdout.close()
        os.close(self.master)
        return code, out


@pytest.fixture
def terminal() -> Iterator[list[OnTerminal]]:
    started: list[OnTerminal] = []
    yield started
    for t in started:
        if t.proc.poll() is None:
            t.close()


def test_a_terminal_gets_the_banner_then_text_logs(terminal: list[OnTerminal]) -> None:
    t = OnTerminal("--port", "0")
    terminal.append(t)
    text = t.wait_for(r"startup complete")
    url = re.search(r"^  chat page (http://127\.0\.0\.1:\d+)/$", text, re.M)
    assert url is not None, text
    base = url.group(1)
    banner = text[: text.index("startup complete")]
    assert f"ssegate {ssegate.__version__}" in banner
    assert re.search(r"model\s+ssegate-demo\s+demo \(embedded, offline\)", banner)
    assert f"{base}/v1" in banner and f"{base}/docs" in banner and "ssegate --help" in banner
    assert "{" not in banner  # no JSON
    assert httpx.get(base + "/docs", timeout=10).status_code == 200  # the docs the banner points at

    one_stream(base)
    text = t.wait_for(r"stream ended")
    line = next(ln for ln in text.splitlines() if " stream ended " in ln)
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO stream ended id=[\w-]+ model=ssegate-demo owner=anonymous outcome=done "
                        r"tokens=\d+ .*ttft_ms=\d+", line), line
    code, stdout = t.close()
    assert code == 0
    assert stdout == b""  # the banner and the logs are on stderr
    assert "Finished server process" in clean(t.got)


def test_regression_ctrl_c_printed_a_traceback(terminal: list[OnTerminal]) -> None:
    """uvicorn shuts down gracefully on Ctrl-C, then raises SIGINT again once its handlers are restored: the
    person who pressed Ctrl-C got a KeyboardInterrupt traceback and exit status -2. Now: 0 and no traceback."""
    t = OnTerminal("--port", "0")
    terminal.append(t)
    t.wait_for(r"startup complete")
    code, _ = t.close()
    text = clean(t.got)
    assert code == 0
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def test_json_logs_on_a_terminal_have_no_banner(terminal: list[OnTerminal]) -> None:
    t = OnTerminal("--port", "0", "--log-format", "json")
    terminal.append(t)
    text = t.wait_for(r"startup complete")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    serving = next(r for r in records if r["msg"] == "serving")
    assert serving["upstreams"] == [{"model": "ssegate-demo", "provider": "demo", "url": "embedded, offline"}]
    compiled = any((ROOT / "src").glob("*__mypyc*.so"))  # make compile
    assert serving["compiled"] is compiled
    assert "chat page" not in text
    one_stream(serving["url"])
    text = t.wait_for(r'"msg":"stream ended"')
    assert all(json.loads(line) for line in text.splitlines() if line.strip())


def test_piped_logs_are_json_lines() -> None:
    """What a process manager or a container runtime sees: no banner, every line one JSON object."""
    with subprocess.Popen(serve_cmd("--port", "0"), env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        try:
            got = read_until(proc.stderr.fileno(), r"startup complete")
            url = next(json.loads(ln)["url"] for ln in got.decode().splitlines() if '"msg":"serving"' in ln)
            one_stream(url, "piped")
            got = read_until(proc.stderr.fileno(), r'"msg":"stream ended"', got)
        finally:
            assert stop(proc) in (0, -signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.stdout.read() == b""
    records = [json.loads(line) for line in (got + rest).decode().splitlines()]
    ended = next(r for r in records if r["msg"] == "stream ended")
    assert ended["outcome"] == "done" and ended["tokens"] > 0 and "stream_id" in ended
    assert {r["level"] for r in records} <= {"info", "warning"}


def test_text_logs_when_asked_for_on_a_pipe() -> None:
    proc = subprocess.Popen(serve_cmd("--port", "0", "--log-format", "text"), env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        got = clean(read_until(proc.stderr.fileno(), r"startup complete"))
    finally:
        stop(proc)
        proc.stderr.close()
    assert "  chat page http://127.0.0.1:" in got
    assert re.search(r"^\d\d:\d\d:\d\d INFO Application startup complete\.$", got, re.M)
    assert "\x1b[" not in got  # no colours into a file


# --- the upstream key warning ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        pytest.param({"SSEGATE_PROVIDER": "openai"}, "OPENAI_API_KEY", id="openai-default-url"),
        pytest.param({"SSEGATE_PROVIDER": "anthropic", "SSEGATE_UPSTREAM_URL": "https://llm.example/v1"},
                     "ANTHROPIC_API_KEY", id="anthropic"),
        pytest.param({"SSEGATE_PROVIDER": "openai", "SSEGATE_UPSTREAM_URL": "http://127.0.0.1:11434/v1"}, None,
                     id="local-server-needs-no-key"),
        pytest.param({"SSEGATE_PROVIDER": "openai", "OPENAI_API_KEY": "sk-from-the-environment"}, None,
                     id="key-from-environment"),
        pytest.param({}, None, id="demo"),
    ],
)
def test_an_upstream_without_a_key_is_one_warning(settings: dict[str, str], warned: str | None) -> None:
    with subprocess.Popen(serve_cmd("--port", "0"), env=env(SSEGATE_MODEL="m", **settings), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        assert proc.stderr is not None
        try:
            got = read_until(proc.stderr.fileno(), r"startup complete").decode()
        finally:
            stop(proc)
    warnings = [json.loads(ln) for ln in got.splitlines() if '"level":"warning"' in ln]
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warned in warnings[0]["msg"] and "SSEGATE_UPSTREAM_API_KEY" in warnings[0]["msg"]


# --- several workers, one socket -------------------------------------------------------------------------------
def test_workers_share_the_socket_bound_by_serve() -> None:
    with RedisServer() as redis:
        port = free_port()
        gw = GatewayProcess({"workers": 2, "redis_url": redis.url, "demo_ttft_s": 0.01, "demo_tokens_per_s": 2000,
                             "shutdown_grace_s": 1, "log_level": "info"}, port=port)
        with gw:
            for i in range(10):
                one_stream(gw.url, f"question {i}")
            busy = run_serve("--port", str(port))  # the workers' socket is taken ...
            assert busy.returncode == 1 and "already in use" in busy.stderr
            log = gw.log()
    assert log.count("Application startup complete") == 2  # ... by the two workers


# --- the request head and ?q= ---------------------------------------------------------------------------------
def get_raw(gw: GatewayProcess, path: str) -> RawStream:
    """``GET path`` on a raw socket (httpx refuses URLs over 64 KiB), read to its end."""
    with RawStream(gw.port) as c:
        c.send(raw_request("GET", path))
        c.read_head()
        c.read_all(15)
    return c


def test_a_query_over_max_query_bytes_is_431(make_gateway: Any) -> None:
    quick = {"demo_ttft_s": 0.01, "demo_tokens_per_s": 5000}
    default, small = make_gateway(quick), make_gateway({**quick, "max_query_bytes": 16 * 1024})
    for gw, q_bytes in ((small, 20_000), (default, 70_000), (default, 300_000)):
        refused = get_raw(gw, "/chat?q=" + "x" * q_bytes)
        assert refused.status == 431, (gw.settings, q_bytes)
        error = json.loads(refused.body)["error"]
        assert error["code"] == "invalid_request"
        assert "SSEGATE_MAX_QUERY_BYTES" in error["message"] and "POST /v1/chat/stream" in error["message"]
    served = get_raw(default, "/chat?q=" + "x" * 20_000)
    assert served.status == 200
    assert [e.event for e in served.events][-1] == "done"


def test_regression_a_whole_head_over_the_limit_reached_the_app(make_gateway: Any) -> None:
    """The head limit was only checked on a head still incomplete after a read: a request line and headers over
    it that arrived in one read went through to the app (and a URL over 64 KiB got uvicorn's "Invalid HTTP
    request"). Now every head over MAX_QUERY_BYTES is a 431 before the app runs, and the app saw no request."""
    gw = make_gateway({"max_query_bytes": 16 * 1024})
    with RawStream(gw.port) as c:
        c.send(raw_request("GET", "/chat?q=" + "y" * 17_000))  # one sendall: loopback delivers it in one read
        assert c.read_head() == 431
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert re.search(r"^ssegate_streams_started_total 0(\.0)?$", metrics, re.M), metrics


def test_check_query_refuses_a_long_q_with_414() -> None:
    settings = Settings(max_query_bytes=8192)
    check_query("é" * 4096, settings)  # 8192 bytes: the limit itself is fine
    with pytest.raises(InvalidRequest) as caught:
        check_query("é" * 4097, settings)
    assert caught.value.status == 414 and "SSEGATE_MAX_QUERY_BYTES" in caught.value.message


# --- log lines ---------------------------------------------------------------------------------------------------
def test_keys_are_redacted_in_both_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net of obs/logs.py: a configured key or the token secret never appears in a line, text or JSON."""
    monkeypatch.setenv("SSEGATE_API_KEYS", "sk-client-key-123456,sk-other-key-654321")
    monkeypatch.setenv("SSEGATE_TOKEN_SECRET", GOOD_SECRET)
    record = logging.LogRecord("ssegate.stream", logging.WARNING, __file__, 1, "saw %s", ("sk-client-key-123456",),
                               None)
    record.header = f"Bearer sk-other-key-654321 {GOOD_SECRET}"
    record.stream_id = "abc"
    text = TextFormatter().format(record)
    assert re.fullmatch(r'\d\d:\d\d:\d\d WARNING saw \[redacted\] header="Bearer \[redacted\] \[redacted\]" id=abc',
                        text), text
    line = json.loads(JSONFormatter().format(record))
    assert (line["msg"], line["header"]) == ("saw [redacted]", "Bearer [redacted] [redacted]")
