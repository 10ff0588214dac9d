"""The benchmark suite's fake OpenAI upstream (``python -m bench.upstream``) as a real process, for the tests of the
bench's own pieces (its stream shapes, the upstream clients of the A/B, the launcher)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway import ROOT, free_port
from tests.support.process import terminate

__all__ = ["BenchUpstream"]


class BenchUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="bench-upstream-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def completions(self) -> str:
        return self.url + "/v1/chat/completions"

    def start(self, timeout: float = 20.0) -> BenchUpstream:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench.upstream exited:\n{self.log_path.read_text(errors='replace')}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a starting process; not a synchronisation stand-in
        raise RuntimeError(f"bench.upstream did not start in {timeout}s")

    def stop(self) -> None:
        terminate(self.proc)
        self.log_path.unlink(missing_ok=True)

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as c:
            return (await c.get("/stats")).json()  # type: ignore[no-any-return]

    async def reset(self) -> None:
        """Zero the counters and abort every running stream."""
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as c:
            await c.post("/stats/reset", json={"abort": True})

    async def mark(self) -> float:
        """From now on, note when each running stream's connection is closed by its peer; returns now."""
        t = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as c:
            await c.post("/stats/mark", json={"t": t})
        return t

    async def wait_idle(self, timeout: float) -> dict[str, Any]:
        """Stats once no stream is running (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            st = await self.stats()
            if st["streams_active"] == 0 or time.monotonic() > deadline:
                return st
            await asyncio.sleep(0.02)
