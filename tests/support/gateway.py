"""A real ``ssegate serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from ssegate.sse import ServerSentEvent, SSEDecoder

__all__ = ["GatewayProcess", "chat_body", "collect_events", "free_port", "post_events", "sse_events", "text_of"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``ssegate serve`` with ``SSEGATE_*`` settings from ``settings`` (names without the prefix; ``None`` leaves
    one unset, at its default: ``{"demo_scripts": None}`` serves as a deployment does, without the suite's
    ``/script`` hook), and other environment variables from ``environ`` (e.g. the ``${VAR}`` a routing file
    reads)."""

    def __init__(self, settings: dict[str, Any] | None = None, *, port: int | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.environ = environ or {}
        # the suite scripts the demo model (`/script`); a deployment never needs it
        self.settings = {"port": self.port, "log_level": "warning", "demo_scripts": True, **(settings or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="ssegate-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSEGATE_")}
        env.update({f"SSEGATE_{k.upper()}": str(v) for k, v in self.settings.items() if v is not None})
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.environ)
        return env

    def start(self, timeout: float = 60.0) -> GatewayProcess:  # hang-catching: a loaded CI machine starts slowly
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ssegate", "serve"], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                cwd=ROOT, start_new_session=True,  # its own process group: ``stop`` ends its workers too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ssegate exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a starting process; not a synchronisation stand-in
        raise RuntimeError(f"ssegate did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._end_group()
        self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._end_group()

    def _end_group(self) -> None:
        """Kill whatever is left of the server's process group: a ``--workers`` worker whose supervisor was
        killed (or ended before it could end a worker it had just started) must not outlive the test."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sse_events(lines: Iterator[str]) -> Iterator[ServerSentEvent]:
    """Decode an iterator of text chunks into events (the gateway's own spec-correct parser)."""
    dec = SSEDecoder()
    for chunk in lines:
        yield from dec.feed(chunk)


def collect_events(resp: httpx.Response) -> list[ServerSentEvent]:
    return list(sse_events(resp.iter_text()))


def chat_body(content: str, **extra: Any) -> bytes:
    return orjson.dumps({"messages": [{"role": "user", "content": content}], **extra})


def post_events(url: str, body: str | dict[str, Any], *, path: str = "/v1/chat/stream",
                headers: dict[str, str] | None = None, timeout: float = 30.0,
                **fields: Any) -> tuple[httpx.Response, list[ServerSentEvent]]:
    """POST a chat request (a prompt string, one user message, or a whole JSON body) to a gateway's ``url`` and read
    the whole answer: its events when the status is 200, else the read error response and no events."""
    content = chat_body(body, **fields) if isinstance(body, str) else orjson.dumps({**body, **fields})
    with httpx.stream("POST", url + path, content=content, timeout=timeout,
                      headers={"content-type": "application/json", **(headers or {})}) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp, []
        return resp, collect_events(resp)


def text_of(events: list[ServerSentEvent], kind: str = "message") -> str:
    """The text of a stream's ``message`` (or ``reasoning``) events."""
    return "".join(e.json()["delta"] for e in events if e.event == kind)
