"""Processes under test: start on a free loopback port, wait until ready, measure, stop.

Every process the bench starts gets its file-descriptor limit raised (``RLIMIT_NOFILE`` soft = hard) before
``exec``, its output goes to a log file under ``bench/results/logs/``, and it is stopped by its own pid
(SIGTERM, then SIGKILL after a grace period), never by name. With ``pin`` (``python -m bench --pin``), each is
bound before ``exec`` to the CPUs of its role: a target (the gateway, its Redis, a peer) to the last CPU, the rig
(the fake upstream, and this process, the load generator) to the others, so that no rig process runs on the
target's core; what a process forks inherits its binding.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["Proc", "free_port", "pin", "pinned", "raise_fd_limit", "start", "tree_cpu", "tree_rss", "tree_sched"]

RESULTS = Path(__file__).resolve().parent / "results"


def raise_fd_limit() -> int:
    """Raise this process's soft fd limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process (and its children), wait up to ``grace`` s, then SIGKILL what remains."""
        if self.popen.poll() is not None:
            return
        try:
            children = self.ps.children(recursive=True)
        except psutil.Error:
            children = []
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(timeout=5)
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()


_AFFINITY: dict[str, frozenset[int]] = {}
"""The CPUs of each role ("target", "rig") once ``pin`` was called; empty: nothing is pinned."""


def pin() -> str:
    """Bind the target processes started from now on to the last CPU this process may use, and this process (its
    threads made from now on too) and the rig's processes to the others; return what ``pinned`` says. Linux only
    (``os.sched_setaffinity``), two CPUs at least."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs two CPUs at least: one for the target, the others for the rig")
    _AFFINITY["target"], _AFFINITY["rig"] = frozenset(cpus[-1:]), frozenset(cpus[:-1])
    os.sched_setaffinity(0, _AFFINITY["rig"])
    return pinned() or ""


def pinned() -> str | None:
    """``"target on CPU 1, rig on CPU 0"`` while ``pin`` binds the processes, else None."""
    if not _AFFINITY:
        return None
    def cpus(role: str) -> str:
        ids = sorted(_AFFINITY[role])
        return f"CPU{'s' if len(ids) > 1 else ''} {','.join(map(str, ids))}"
    return f"target on {cpus('target')}, rig on {cpus('rig')}"


def _preexec(cpus: frozenset[int] | None) -> None:
    raise_fd_limit()
    os.setsid()  # own process group, so a Ctrl-C in the terminal reaches only the bench
    if cpus:
        os.sched_setaffinity(0, cpus)


def start(name: str, argv: list[str], port: int, env: dict[str, str] | None = None,
          cwd: str | Path | None = None, role: str = "target") -> Proc:
    """Start ``argv`` (its output in ``bench/results/logs/<name>.log``); ``role``: "target" or "rig" (``pin``)."""
    (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    log = RESULTS / "logs" / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=full_env, cwd=cwd, preexec_fn=functools.partial(_preexec, _AFFINITY.get(role)))
    return Proc(name, popen, log, port)


def wait_http(proc: Proc, path: str, timeout: float) -> bool:
    """Poll ``GET http://127.0.0.1:<port><path>`` until it answers < 500, the process dies, or timeout."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{proc.port}{path}"
    while time.monotonic() < deadline:
        if not proc.alive():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return True
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def wait_tcp(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.05)
    return False


def _tree(ps: psutil.Process) -> list[psutil.Process]:
    procs = [ps]
    with contextlib.suppress(psutil.Error):
        procs += ps.children(recursive=True)
    return procs


def tree_sched(ps: psutil.Process) -> tuple[float, float]:
    """Seconds the threads of a process and its live children spent on a CPU, and runnable but waiting for one
    (the scheduler's run queue), from ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds, where ``cpu_times``
    counts in clock ticks of 10 ms); (0, 0) where the kernel keeps no such file. A thread that ended meanwhile
    takes its times with it."""
    run = wait = 0
    for p in _tree(ps):
        try:
            tids = os.listdir(f"/proc/{p.pid}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{p.pid}/task/{tid}/schedstat").read_text().split()
                run += int(fields[0])
                wait += int(fields[1])
    return run / 1e9, wait / 1e9


def tree_cpu(ps: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    return sum(tree_cpu_split(ps))


def tree_cpu_split(ps: psutil.Process) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its live children."""
    user = system = 0.0
    for p in _tree(ps):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            user += t.user
            system += t.system
    return user, system


def tree_rss(ps: psutil.Process) -> int:
    total = 0
    for p in _tree(ps):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total
