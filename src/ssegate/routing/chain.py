"""One stream's producer: its model's deployments, then its fallbacks, with retries before the first output.

``Route`` is a ``core.generation.Producer`` made per stream by ``Router.route`` (``router.py``). Its steps are the
requested model's group, then each fallback model's group, in order. Within a step each attempt goes to the least
busy available deployment this stream has not tried yet (``table.Group.pick``), at once; when every deployment was
tried, the same ones again after a backoff (exponential from ``RETRY_BACKOFF_S``, jittered, at least the
upstream's ``Retry-After``). ``RETRY_ATTEMPTS`` attempts per step, then the next step (a fallback).

The commit rule bounds all of it: once a part went out, an error ends the stream (a retry would send it twice);
before the commit a retry must fit before the commit deadline (so that an upstream failing at once still gives
the client a real HTTP status), after it before the first-output deadline. A fallback whose provider cannot honour
the request (``check_request`` raises ``InvalidRequest``) is skipped; the requested model's own deployments were
checked before the stream started (a 400 naming the field).

Each attempt sends the request with that deployment's upstream model name (``dataclasses.replace``; the request
itself is never changed), sets ``gen.deployment`` (the label) and ``gen.model_entry`` (the entry's name as
written), and tells the deployment how it went (``Deployed.release``), which feeds the cooldowns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from typing import Final

from ..core.generation import Generation
from ..core.request import ChatRequest
from ..errors import InvalidRequest, UpstreamError
from ..parts import Finish
from ..settings import Settings
from .table import Deployed, Group

__all__ = ["Route", "Step", "usable"]

# (module functions kept as C statics: compiled code looks up a module's attribute by name at each call)
_running_loop: Final = asyncio.get_running_loop

log: Final = logging.getLogger("ssegate.routing")


@dataclasses.dataclass(slots=True)
class Step:
    group: Group
    asked: str
    """The model name this step asks its group for."""
    candidates: Sequence[Deployed] | None
    """The deployments that can honour the request (None: not checked yet)."""

    def __init__(self, group: Group, asked: str, candidates: Sequence[Deployed] | None = None) -> None:
        # written out: mypyc compiles it, where @dataclass's own would run in the interpreter (core/outcome.py)
        self.group = group
        self.asked = asked
        self.candidates = candidates


def usable(group: Group, asked: str, request: ChatRequest) -> tuple[list[Deployed], InvalidRequest | None]:
    """The group's deployments that can honour ``request`` (sent as they would send it), and the first refusal."""
    ok: list[Deployed] = []
    first: InvalidRequest | None = None
    for d in group.members:
        try:
            d.provider.check_request(_for(group, d, asked, request))
        except InvalidRequest as exc:
            first = first or exc
            continue
        ok.append(d)
    return ok, first


def _for(group: Group, d: Deployed, asked: str, request: ChatRequest) -> ChatRequest:
    upstream = group.upstream_name(d, asked)
    return request if upstream == request.model else dataclasses.replace(request, model=upstream)


class Route:
    """The producer of one stream (see the module's docstring)."""

    __slots__ = ("closed", "settings", "steps")

    def __init__(self, steps: list[Step], settings: Settings, closed: Callable[[Deployed], None]) -> None:
        self.steps = steps
        self.settings = settings
        self.closed = closed
        """Called when a retired deployment's last stream ended (its provider can be closed)."""

    async def __call__(self, gen: Generation) -> Finish:
        s = self.settings
        loop = gen.loop
        request = gen.request
        last_error: UpstreamError | None = None
        steps = self.steps
        for n, step in enumerate(steps):
            group = step.group
            candidates = self._candidates(step, request)
            if not candidates:
                continue
            tried: list[Deployed] = []
            for attempt in range(s.retry_attempts):
                now = loop.time()
                d = group.pick(candidates, tried, now) or group.pick(candidates, (), now)
                if d is None:  # every deployment of the group is cooling down
                    if any(self._candidates(later, request) for later in steps[n + 1:]):
                        log.info("model %s skipped: every deployment is cooling down", group.name)
                        break
                    # no alternative left: try it anyway (one not tried yet first, then the soonest back)
                    d = min(candidates, key=lambda c: (c in tried, c.open_until))
                if d not in tried:
                    tried.append(d)
                gen.upstream_attempts += 1
                gen.deployment = d.label
                gen.model_entry = d.model
                trial = d.acquire(now)
                ok = False
                failed: str | None = None
                retry_after: float | None = None
                try:
                    finish = await d.provider.stream(_for(group, d, step.asked, request), gen)
                    ok = True
                    return finish
                except UpstreamError as exc:
                    if gen.cancel_reason is not None:
                        raise  # the cancel's doing (a plugin's abort that woke its own task): not the deployment's
                    if exc.retryable:
                        failed, retry_after = exc.code, exc.retry_after
                    if gen.outputs or not exc.retryable:
                        raise  # never once output went out: a retry would send it twice
                    last_error = exc
                except asyncio.CancelledError:
                    if gen.timed_out:
                        failed = "upstream_timeout"
                    raise
                finally:
                    d.release(loop.time(), trial, ok=ok, failed=failed, retry_after=retry_after)
                    if d.retired and not d.in_flight:
                        self.closed(d)
                if attempt + 1 >= s.retry_attempts:
                    break
                now = loop.time()
                if group.pick(candidates, tried, now) is not None:
                    continue  # an untried deployment of the group is available: go there at once
                delay = self._backoff(gen, attempt, last_error)
                if delay is None:
                    break  # on to the next fallback, if any
                log.info("retrying %s in %.2fs after: %s", group.name, delay, last_error.message)
                await asyncio.sleep(delay)
        if last_error is None:
            raise UpstreamError("no upstream could take this request")
        raise last_error

    @staticmethod
    def _candidates(step: Step, request: ChatRequest) -> Sequence[Deployed]:
        """The step's deployments that can honour the request, checked once (a fallback's on first need)."""
        if step.candidates is None:
            step.candidates, refusal = usable(step.group, step.asked, request)
            if not step.candidates:
                log.info("fallback %s skipped: %s", step.group.name, refusal.message if refusal else "no deployment")
        return step.candidates

    def _backoff(self, gen: Generation, attempt: int, exc: UpstreamError) -> float | None:
        """Delay before the next try on this step, or None to move on to the next one (or give up).

        Exponential from ``retry_backoff_s``, jittered 0.5x-1.5x, at least the upstream's ``Retry-After``.
        Before the commit a retry must fit before the commit deadline, so that an upstream failing at once on
        every try still gives the client a real HTTP status; after it, before the first-token deadline."""
        s = self.settings
        delay = s.retry_backoff_s * (2.0**attempt) * (0.5 + random.random())
        if exc.retry_after:
            delay = max(delay, float(exc.retry_after))
        now = _running_loop().time()
        if not gen.committed and now + delay > gen.commit_deadline:
            return None  # keep the final failure a real HTTP status
        if now + delay > gen.started_at + s.first_token_timeout_s:
            return None
        return delay
