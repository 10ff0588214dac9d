"""A real tinyproxy (an HTTP forward proxy with CONNECT and Basic auth) on a free loopback port.

``TinyProxy(user=..., password=..., connect_ports=...)`` writes a config to a temp dir and runs ``tinyproxy -d``
(foreground) until ``stop()``. ``url`` is the proxy URL without credentials; ``url_with(user, password)`` with
them. A missing binary fails the test in CI (``CI=true``) and skips it elsewhere (``make system-deps`` installs
it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.gateway import free_port
from tests.support.process import terminate, wait_listening

__all__ = ["TinyProxy", "tinyproxy_binary"]


def tinyproxy_binary() -> str:
    found = shutil.which("tinyproxy") or next(
        (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)), None)
    if found is None:
        message = "tinyproxy is not installed (make system-deps installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class TinyProxy:
    def __init__(self, *, user: str | None = None, password: str | None = None,
                 connect_ports: tuple[int, ...] = ()) -> None:
        self.binary = tinyproxy_binary()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ssegate-tinyproxy-"))
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 120", "MaxClients 1000",
                 "LogLevel Warning", f"LogFile \"{self.dir / 'tinyproxy.log'}\""]
        if user is not None:
            lines.append(f"BasicAuth {user} {password}")
        lines += [f"ConnectPort {p}" for p in connect_ports]  # none listed: CONNECT to any port
        self.config = "\n".join(lines) + "\n"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> TinyProxy:
        conf = self.dir / "tinyproxy.conf"
        conf.write_text(self.config)
        self.proc = subprocess.Popen([self.binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, timeout, "tinyproxy", self.log)
        return self

    def log(self) -> str:
        try:
            return (self.dir / "tinyproxy.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TinyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
