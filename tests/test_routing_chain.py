"""One stream's route (``routing/chain.py``) on a real ``StreamHub``, with in-process providers that fail on cue.

End-to-end behaviour (real upstreams, real processes) is in ``test_routing.py``; these pin the decisions that are
hard to provoke over sockets: which deployment an attempt goes to, when a cooling-down model is skipped, and what
counts towards a cooldown.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ssegate.core.entries import DONE, ERROR
from ssegate.core.generation import StreamHub
from ssegate.core.log import MemoryEventLog
from ssegate.core.request import ChatRequest
from ssegate.errors import InvalidRequest, UpstreamError, UpstreamRateLimited, UpstreamRejected
from ssegate.parts import Finish
from ssegate.plugins import provider_names
from ssegate.routing import HealthPolicy, RoutingTable, load_config
from ssegate.routing.chain import Route, Step, usable
from ssegate.settings import Settings


class Fake:
    """A provider that plays ``plan`` (one item per call: text to answer, or an error to raise)."""

    name = "fake"
    label = "fake"

    def __init__(self, plan: list[Any] | None = None, refuses: str | None = None) -> None:
        self.plan = list(plan or [])
        self.refuses = refuses
        self.calls: list[str] = []

    def check_request(self, request: ChatRequest) -> None:
        if self.refuses and self.refuses in request.extra:
            raise InvalidRequest(f"{self.refuses}: not supported")

    async def stream(self, request: ChatRequest, sink: Any) -> Finish:
        self.calls.append(request.model)
        step = self.plan.pop(0) if self.plan else "ok"
        if isinstance(step, BaseException):
            raise step
        sink.emit(step)
        return Finish()

    async def check(self) -> None:  # pragma: no cover
        return None

    async def aclose(self) -> None:  # pragma: no cover
        return None


FILE = """
[[models]]
name = "fast"
provider = "openai"
url = "http://a.test/v1"
upstream_model = "fast-up"
fallbacks = ["claude"]

[[models]]
name = "fast"
provider = "openai"
url = "http://b.test/v1"

[[models]]
name = "claude"
provider = "anthropic"
url = "http://c.test/v1"
upstream_model = "claude-up"
"""


class World:
    def __init__(self, tmp_path: Path, providers: dict[str, Fake], failures: int = 2, **settings: Any) -> None:
        path = tmp_path / "models.toml"
        path.write_text(FILE)
        self.settings = Settings(retry_backoff_s=0.0, commit_timeout_s=5.0, **settings)
        self.fakes = providers
        cfg = load_config(str(path), provider_names(), {})
        policy = HealthPolicy(failures=failures, cooldown_s=60)
        self.table = RoutingTable(cfg, lambda dep: self.fakes[dep.label], policy, lambda k: k)
        self.hub = StreamHub(self.settings, MemoryEventLog())

    def route(self, request: ChatRequest) -> Route:
        group = self.table.resolve(request.model, "anonymous")
        candidates, refusal = usable(group, request.model, request)
        if not candidates:
            assert refusal is not None
            raise refusal
        steps = [Step(group, request.model, candidates), *(Step(g, a or request.model) for g, a in group.fallbacks)]
        return Route(steps, self.settings, lambda d: None)

    async def run(self, **extra: Any) -> tuple[int, Any, str]:
        request = ChatRequest([{"role": "user", "content": "hi"}], "fast", extra=extra)
        gen = self.hub.start(request, "anonymous", self.route(request))
        await gen.task
        kind, payload = gen.log.terminal()  # type: ignore[misc]
        return kind, payload, gen.deployment

    def deployed(self, label: str) -> Any:
        return next(d for d in self.table.deployed.values() if d.label == label)


A, B, C = "openai:a.test/v1", "openai:b.test/v1", "anthropic:c.test/v1"
DOWN = UpstreamError("connection refused")


async def test_a_failed_deployment_hands_over_to_the_other_at_once(tmp_path: Path) -> None:
    w = World(tmp_path, {A: Fake([DOWN]), B: Fake(), C: Fake()})
    w.table.groups["fast"]._rr = 0  # a goes first
    kind, _, deployment = await w.run()
    assert kind == DONE and deployment == B
    assert w.fakes[A].calls == ["fast-up"] and w.fakes[B].calls == ["fast"]


async def test_every_attempt_failing_moves_on_to_the_fallback_with_its_model_name(tmp_path: Path) -> None:
    w = World(tmp_path, {A: Fake([DOWN] * 5), B: Fake([DOWN] * 5), C: Fake()})
    kind, _, deployment = await w.run()
    assert kind == DONE and deployment == C
    assert len(w.fakes[A].calls) + len(w.fakes[B].calls) == 3  # RETRY_ATTEMPTS for the model, shared
    assert w.fakes[C].calls == ["claude-up"]


async def test_a_cooling_model_is_skipped_for_its_fallback(tmp_path: Path) -> None:
    w = World(tmp_path, {A: Fake([DOWN] * 9), B: Fake([DOWN] * 9), C: Fake()}, failures=1)
    kind, _, deployment = await w.run()  # a fails and cools down, b too; the third attempt goes to the fallback
    assert kind == DONE and deployment == C
    assert len(w.fakes[A].calls) == len(w.fakes[B].calls) == 1
    now = asyncio.get_running_loop().time()
    assert w.deployed(A).cooling(now) and w.deployed(B).cooling(now)
    kind, _, deployment = await w.run()
    assert kind == DONE and deployment == C
    assert len(w.fakes[A].calls) == len(w.fakes[B].calls) == 1  # not even tried while cooling down


async def test_a_cooling_model_is_tried_when_its_fallback_cannot_take_the_request(tmp_path: Path) -> None:
    """Regression: with every deployment of the model cooling down and its only fallback refusing the request
    (``seed`` for Anthropic), the stream failed with "no upstream could take this request" without one attempt.
    The model is the last one that can answer: it is tried anyway."""
    w = World(tmp_path, {A: Fake([DOWN] * 3), B: Fake([DOWN] * 3), C: Fake(refuses="seed")})
    for d in (w.deployed(A), w.deployed(B)):
        d.open_until = 10**9  # cooling down for a long time
    kind, payload, _ = await w.run(seed=1)
    assert kind == ERROR and payload["error"]["code"] == "upstream_error"
    assert payload["error"]["message"] == "connection refused"  # a real attempt's error
    assert len(w.fakes[A].calls) == 2 and len(w.fakes[B].calls) == 1  # untried first, then in turn
    assert w.fakes[C].calls == []


async def test_a_429_cools_the_deployment_for_its_retry_after(tmp_path: Path) -> None:
    w = World(tmp_path, {A: Fake([UpstreamRateLimited("slow down", retry_after=42.0)]), B: Fake(), C: Fake()})
    w.table.groups["fast"]._rr = 0
    kind, _, deployment = await w.run()
    assert kind == DONE and deployment == B
    a = w.deployed(A)
    assert a.cooldowns == 1 and a.errors == {"rate_limited": 1}
    now = asyncio.get_running_loop().time()
    assert 40 < a.open_until - now <= 42


async def test_the_requests_own_fault_counts_for_nothing(tmp_path: Path) -> None:
    """An upstream 400 is the request's fault: no retry, no fallback, and no failure on the deployment."""
    w = World(tmp_path, {A: Fake([UpstreamRejected("bad field", upstream_status=400)] * 3),
                         B: Fake([UpstreamRejected("bad field", upstream_status=400)] * 3), C: Fake()})
    for _ in range(3):
        kind, payload, _ = await w.run()
        assert kind == ERROR and payload["error"]["code"] == "invalid_request"
    assert w.fakes[C].calls == []
    assert not w.deployed(A).open_until and not w.deployed(B).open_until
    assert w.deployed(A).errors == {} and w.deployed(A).in_flight == 0


@pytest.mark.parametrize("refused", ["seed"])
async def test_the_model_itself_refusing_is_a_400_before_the_stream(tmp_path: Path, refused: str) -> None:
    w = World(tmp_path, {A: Fake(refuses=refused), B: Fake(refuses=refused), C: Fake()})
    request = ChatRequest([{"role": "user", "content": "hi"}], "fast", extra={refused: 1})
    with pytest.raises(InvalidRequest, match="seed"):
        w.route(request)
