"""A real nginx on a free loopback port, configured from ``deploy/nginx.conf`` (the reference deployment).

``Nginx(backend_ports, overrides)`` reads the reference file, points its ``upstream`` at ``backend_ports``, its
``listen`` at a free loopback port and its access log at a temp dir, applies ``overrides`` (exact line
replacements, e.g. a shorter ``proxy_read_timeout``), and wraps it in a minimal main config (no daemon, pid,
logs and temp paths in the temp dir). Every replacement must match the reference file, so a change there that
the tests no longer exercise fails loudly instead of testing something else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.gateway import free_port
from tests.support.process import terminate, wait_listening

__all__ = ["REFERENCE", "Nginx", "nginx_binary"]

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "deploy" / "nginx.conf"
_SERVER_LINE = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+( [^;]*)?;\n", re.M)


def nginx_binary() -> str:
    """The ``nginx`` to run; a missing one fails the test in CI (``CI=true``) and skips it elsewhere."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        message = "nginx is not installed (make system-deps installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old!r}: update tests/support/nginx.py"
    return text.replace(old, new)


def site_config(backend_ports: list[int], port: int, log_dir: Path, overrides: dict[str, str] | None = None) -> str:
    """``deploy/nginx.conf`` pointed at these backends, this port and this log dir."""
    text = REFERENCE.read_text()
    servers = _SERVER_LINE.findall(text)
    assert len(servers) >= 2, "deploy/nginx.conf must list two or more replicas"
    indent, params = servers[0]
    first = True

    def upstreams(match: re.Match[str]) -> str:
        nonlocal first
        if not first:
            return ""
        first = False
        return "".join(f"{indent}server 127.0.0.1:{p}{params};\n" for p in backend_ports)

    text = _SERVER_LINE.sub(upstreams, text)
    text = _replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")
    text = re.sub(r"access_log /var/log/nginx/(\S+) ", lambda m: f"access_log {log_dir / m.group(1)} ", text)
    for old, new in (overrides or {}).items():
        text = _replace_once(text, old, new)
    return text


class Nginx:
    def __init__(self, backend_ports: list[int], overrides: dict[str, str] | None = None) -> None:
        self.binary = nginx_binary()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ssegate-nginx-"))
        self.site = site_config(backend_ports, self.port, self.dir, overrides)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def main_config(self) -> str:
        d = self.dir
        temps = "".join(f"    {kind}_temp_path {d / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                          "scgi"))
        user = "user root;\n" if os.geteuid() == 0 else ""  # root: workers must reach the 0700 temp dir
        return (
            f"daemon off;\n{user}worker_processes 1;\npid {d / 'nginx.pid'};\nerror_log {d / 'error.log'} info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n{temps}    include {d / 'ssegate.conf'};\n}}\n"
        )

    def start(self, timeout: float = 10.0) -> Nginx:
        (self.dir / "ssegate.conf").write_text(self.site)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.main_config())
        args = [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}\n{self.site}"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_listening(self.proc, self.port, timeout, "nginx", self.error_log)
        return self

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def access_log(self) -> str:
        try:
            return (self.dir / "ssegate.access.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        terminate(self.proc)  # SIGTERM is nginx's fast shutdown: open streams are cut
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
