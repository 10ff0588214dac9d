"""The routing table: model names to groups of deployments, the least-busy choice, and cooldowns.

A ``RoutingTable`` is built from a ``RoutingConfig`` and never changes; a reload builds a new one (``router.py``),
reusing the ``Deployed`` objects (provider, in-flight count, health) of deployments that did not change, so a
reload neither resets a cooldown nor loses count of the streams a deployment is serving.

Lookup: the requested name exactly, then the wildcard with the longest prefix; none (or a name the caller's key
may not use) is ``ModelNotFound``, the same answer for both, so a restricted key learns nothing of other models.

Choice within a group: the deployment with the fewest streams in flight among those not cooling down and not yet
tried by this stream; ties go round-robin. Health, per deployment (``Deployed``), counted once per attempt:

- a *failure* is a retryable upstream error (connection refused or reset, 5xx, 429, bad data, timeouts),
  before or after the first output; a client's cancel or a 4xx caused by the request counts for nothing;
- ``COOLDOWN_FAILURES`` failures within ``COOLDOWN_WINDOW_S`` open a cooldown of ``COOLDOWN_S``; an error with
  ``Retry-After`` (a 429) opens one of that length at once;
- while cooling down a deployment is skipped; when the cooldown ends it is *half-open*: one trial stream goes
  to it (others skip it meanwhile); a success closes it, a failure opens a new cooldown;
- a cooling-down deployment is skipped only while there is an alternative (another deployment of the group or a
  fallback model): with none left it is tried anyway, so a gateway with one upstream behaves as it always did.

Everything here runs on the event loop's thread; nothing is per token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ModelNotFound
from ..upstream.base import Provider
from .config import Deployment, ModelEntry, RoutingConfig

__all__ = ["Deployed", "DeploymentStats", "Group", "HealthPolicy", "RoutingTable", "model_not_found"]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failures: int = 3
    """Failures within ``window_s`` that open a cooldown."""
    window_s: float = 30.0
    cooldown_s: float = 30.0


class DeploymentStats(NamedTuple):
    """What ``/metrics`` shows of one deployment (``obs/metrics.py`` reads these at each scrape)."""

    model: str
    deployment: str
    in_flight: int
    cooling_down: bool
    cooldowns: int
    attempts: int
    errors: dict[str, int]


class Deployed:
    """One deployment of one model entry as this process runs it: its provider, streams in flight, health."""

    __slots__ = ("_failures", "attempts", "cooldowns", "deployment", "errors", "in_flight", "label", "model",
                 "open_until", "policy", "provider", "retired", "trial")

    def __init__(self, model: str, deployment: Deployment, provider: Provider, policy: HealthPolicy) -> None:
        self.model = model
        """The entry's name as written (a wildcard too): a bounded label for metrics."""
        self.deployment = deployment
        self.label = deployment.label
        self.provider = provider
        self.policy = policy
        self.in_flight = 0
        self.open_until = 0.0
        """0: closed (healthy); else the end of the cooldown, after which it is half-open."""
        self.trial = False
        """Half-open and its one trial stream is in flight."""
        self.retired = False
        """A reload removed it: its provider is closed once its last stream ends."""
        self._failures: deque[float] = deque()
        self.attempts = 0
        self.cooldowns = 0
        self.errors: dict[str, int] = {}

    def available(self, now: float) -> bool:
        """Not cooling down, and not half-open with its trial in flight."""
        if not self.open_until:
            return True
        return now >= self.open_until and not self.trial

    def cooling(self, now: float) -> bool:
        return bool(self.open_until) and now < self.open_until

    def acquire(self, now: float) -> bool:
        """A stream's attempt starts here; True when it is the half-open trial."""
        self.in_flight += 1
        self.attempts += 1
        if self.open_until and now >= self.open_until and not self.trial:
            self.trial = True
            return True
        return False

    def release(self, now: float, trial: bool, *, ok: bool = False, failed: str | None = None,
                retry_after: float | None = None) -> None:
        """The attempt ended: ``ok`` (an answer), ``failed`` (the error code of a retryable failure), or neither
        (cancelled, or refused because of the request)."""
        self.in_flight -= 1
        if trial:
            self.trial = False
        if ok:
            if self.open_until and now >= self.open_until:
                self.open_until = 0.0  # the trial (or a last-resort attempt) succeeded: closed again
                self._failures.clear()
            return
        if failed is None:
            return
        self.errors[failed] = self.errors.get(failed, 0) + 1
        p = self.policy
        if self.open_until:  # half-open or tried as a last resort: open again
            if now >= self.open_until:
                self.cooldowns += 1
            self.open_until = max(self.open_until, now + max(p.cooldown_s, retry_after or 0.0))
            return
        if retry_after:
            self._open(now, retry_after)
            return
        fails = self._failures
        fails.append(now)
        while fails and fails[0] <= now - p.window_s:
            fails.popleft()
        if len(fails) >= p.failures:
            self._open(now, p.cooldown_s)

    def _open(self, now: float, seconds: float) -> None:
        self.open_until = now + seconds
        self.cooldowns += 1
        self._failures.clear()

    def stats(self, now: float) -> DeploymentStats:
        return DeploymentStats(self.model, self.label, self.in_flight, self.cooling(now), self.cooldowns,
                               self.attempts, dict(self.errors))


class Group:
    """The deployments that serve one model name (one, or several for a load-balanced group)."""

    __slots__ = ("_fixed", "_rr", "entries", "fallbacks", "members", "name", "owned_by")

    def __init__(self, name: str, entries: Sequence[ModelEntry], members: list[Deployed]) -> None:
        self.name = name
        self.entries = tuple(entries)
        self.members = members
        self.owned_by = entries[0].deployment.provider if entries else members[0].deployment.provider
        self.fallbacks: list[tuple[Group, str | None]] = []
        """Resolved: each fallback's group and the name to ask it for (None: the name the client asked for)."""
        self._rr = 0
        self._fixed: list[str | None] = [None if e.wildcard else e.upstream_name(e.name) for e in self.entries]
        """Each entry's upstream name where it does not depend on the name asked (all but wildcards)."""

    def upstream_name(self, member: Deployed, asked: str) -> str:
        members = self.members
        for i in range(len(self.entries)):
            if members[i] is member:
                fixed = self._fixed[i]
                return fixed if fixed is not None else self.entries[i].upstream_name(asked)
        return asked  # the implicit steps: the name as asked

    def pick(self, candidates: Sequence[Deployed], tried: Iterable[Deployed], now: float) -> Deployed | None:
        """The least busy available candidate not in ``tried``; ties round-robin. None when there is none."""
        skip = tuple(tried)
        n = len(candidates)
        if n == 1:
            only = candidates[0]
            return only if only not in skip and only.available(now) else None
        start = self._rr
        self._rr = (start + 1) % n
        best: Deployed | None = None
        for i in range(n):
            d = candidates[(start + i) % n]
            if d in skip or not d.available(now):
                continue
            if best is None or d.in_flight < best.in_flight:
                best = d
        return best


def model_not_found(name: str) -> ModelNotFound:
    return ModelNotFound(f"the model {name!r} is not served here: GET /v1/models lists the models you can use")


class RoutingTable:
    """Lookup of model names, per-key access, and the groups with their deployments (see the module's docstring)."""

    def __init__(self, config: RoutingConfig, make: Callable[[Deployment], Provider], policy: HealthPolicy,
                 fingerprint: Callable[[str], str], reuse: dict[tuple[str, Deployment], Deployed] | None = None,
                 settings_keys: Sequence[str] = ()) -> None:
        self.config = config
        reuse = reuse or {}
        self.deployed: dict[tuple[str, Deployment], Deployed] = {}

        def deployed(model: str, dep: Deployment) -> Deployed:
            key = (model, dep)
            d = self.deployed.get(key) or reuse.get(key)
            if d is None:
                d = Deployed(model, dep, make(dep), policy)
            d.policy = policy
            self.deployed[key] = d
            return d

        by_name: dict[str, list[ModelEntry]] = {}
        for e in config.models:
            by_name.setdefault(e.name, []).append(e)
        self.groups: dict[str, Group] = {
            name: Group(name, entries, [deployed(name, e.deployment) for e in entries])
            for name, entries in by_name.items()
        }
        self.exact = {name: g for name, g in self.groups.items() if not name.endswith("*")}
        self.wildcards = sorted(((name[:-1], g) for name, g in self.groups.items() if name.endswith("*")),
                                key=lambda pg: len(pg[0]), reverse=True)
        for name, group in self.groups.items():
            for fb in dict.fromkeys(f for e in by_name[name] for f in e.fallbacks):
                target = self.lookup(fb)
                assert target is not None  # config.py checked it
                group.fallbacks.append((target, fb))
        for dep in config.chained:  # the implicit entry's FALLBACK_URLS, in order, asked for the same name
            self.groups["*"].fallbacks.append((Group("*", (), [deployed("*", dep)]), None))
        self.default_name = config.default_model
        self.fingerprint = fingerprint
        self.access: dict[str, frozenset[str] | None] = {fingerprint(r.key): (
            frozenset(r.models) if r.models is not None else None) for r in config.keys}
        """Key fingerprint -> the entry names it may use (None: every one). Keys not listed may use every one."""
        self.client_keys: tuple[str, ...] = tuple(dict.fromkeys([*settings_keys, *(r.key for r in config.keys)]))
        """Every valid client key: SSEGATE_API_KEYS and the file's [[keys]]."""

    # --- lookup ------------------------------------------------------------------------------------------------
    def lookup(self, name: str) -> Group | None:
        """The group ``name`` routes to: the exact name, then the longest wildcard prefix."""
        group = self.exact.get(name)
        if group is not None:
            return group
        for prefix, g in self.wildcards:
            if name.startswith(prefix) and len(name) > len(prefix):
                return g
        return None

    def resolve(self, name: str, owner: str) -> Group:
        """The group serving ``name`` for ``owner``; ``ModelNotFound`` when none does or the key may not use it."""
        group = self.lookup(name)
        if group is None or not self.allowed(owner, group.name):
            raise model_not_found(name)
        if name == group.name and name.endswith("*"):
            raise ModelNotFound(f"{name!r} is a wildcard: ask for a model under it, e.g. {name[:-1] + 'NAME'!r}")
        return group

    def allowed(self, owner: str, entry_name: str) -> bool:
        names = self.access.get(owner) if self.access else None
        return names is None or entry_name in names

    def default_model(self, model: str | None) -> str | None:
        return model or self.default_name

    def listing(self, owner: str) -> list[tuple[str, str]]:
        """``(name, owned_by)`` for each model ``owner`` may use, wildcards as written, in file order."""
        out = []
        for name in self.config.listed:
            group = self.lookup(name)
            if group is not None and self.allowed(owner, group.name):
                out.append((name, group.owned_by))
        return out

    def listed(self, name: str, owner: str) -> Group:
        """The group of ``name`` when it is a listed model (or one a listed wildcard matches) ``owner`` may use:
        ``GET /v1/models/{name}``. Without a routing file only the default model is listed."""
        group = self.lookup(name)
        if group is None or not self.allowed(owner, group.name) or (
                name not in self.config.listed and group.name not in self.config.listed):
            raise model_not_found(name)
        return group

    # --- state ------------------------------------------------------------------------------------------------
    @property
    def providers(self) -> list[Provider]:
        """Every deployment's provider, the default model's first (``/readyz`` checks that one)."""
        return [d.provider for d in self.deployed.values()]

    def stats(self, now: float) -> list[DeploymentStats]:
        return [d.stats(now) for d in self.deployed.values()]
