"""Shared fixtures: the fake upstreams and real ``ssegate serve`` processes over loopback."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.gateway import GatewayProcess

# A suite started in the background by a shell without job control inherits SIGINT ignored, and so would every
# process it starts: the tests of Ctrl-C in `ssegate chat` need it delivered, as a terminal would.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["tests.support.matrix", "tests.support.clean_tree"]

SRC = Path(__file__).resolve().parent.parent / "src"


def pytest_configure(config: pytest.Config) -> None:
    """The suite tests what runs: the compiled modules (``make compile``) when they are there, so they must be
    built from the source as it is now."""
    shared = sorted(SRC.glob("*__mypyc*.so"))
    if not shared:
        return
    built = min(p.stat().st_mtime for p in shared)
    newer = [p for p in (SRC / "ssegate").rglob("*.py") if p.stat().st_mtime > built]
    if newer:
        pytest.exit(f"the compiled modules are older than {newer[0].relative_to(SRC)}: `make compile` "
                    "(or `make uncompile` to test the Python source)", returncode=4)

if TYPE_CHECKING:
    from tests.fakes import FakeUpstream

# Settings for the shared gateways: short timeouts so that failure paths finish quickly.
FAST = {
    "commit_timeout_s": 1.0,
    "first_token_timeout_s": 5.0,
    "idle_timeout_s": 2.0,
    "send_timeout_s": 2.0,
    "heartbeat_s": 1.0,
    "retry_backoff_s": 0.05,
}


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    from tests.fakes import FakeUpstream

    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[FakeUpstream]:
    from tests.fakes import FakeUpstream

    with FakeUpstream(kind="anthropic") as up:
        yield up


@pytest.fixture(scope="session")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """A gateway relaying the fake OpenAI-compatible upstream."""
    with GatewayProcess({"provider": "openai", "upstream_url": upstream.url, "model": "fake-model", **FAST}) as gw:
        yield gw


@pytest.fixture(scope="module")
def claude(anthropic_upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    """A gateway relaying the fake Anthropic upstream (one per test module)."""
    settings = {"provider": "anthropic", "upstream_url": anthropic_upstream.url, "model": "claude-test",
                "upstream_api_key": "sk-ant-test", **FAST}
    with GatewayProcess(settings) as gw:
        yield gw


@pytest.fixture(scope="session")
def demo_gateway() -> Iterator[GatewayProcess]:
    """A gateway on the embedded demo model, paced fast."""
    with GatewayProcess({"demo_ttft_s": 0.05, "demo_tokens_per_s": 400, **FAST}) as gw:
        yield gw


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways with custom settings; all are stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def make(settings: dict[str, Any] | None = None, **kw: Any) -> GatewayProcess:
        gw = GatewayProcess({**FAST, **(settings or {})}, **kw).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
