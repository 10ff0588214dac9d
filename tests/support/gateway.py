"""A real ``ssegate serve`` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

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

__all__ = ["GatewayProcess", "collect_events", "free_port", "sse_events"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``ssegate serve`` with ``SSEGATE_*`` settings from ``settings`` (names without the prefix), and other
    environment variables from ``environ`` (e.g. the ``${VAR}`` a routing file reads)."""

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
        env.update({f"SSEGATE_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.environ)
        return env

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ssegate", "serve"], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                cwd=ROOT,
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
        self.log_path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

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
