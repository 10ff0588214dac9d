"""Helper processes the tests start (nginx, tinyproxy, the bench's upstream): waiting until one listens, and
stopping it. Each caller keeps its own command line and logs; these are the parts they share."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable

__all__ = ["terminate", "wait_listening"]


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, name: str, log: Callable[[], str]
                   ) -> None:
    """Return once ``proc`` accepts connections on ``port``; raise with its log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)  # polling a starting process; not a synchronisation stand-in
    raise RuntimeError(f"{name} did not start in {timeout}s:\n{log()}")


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
