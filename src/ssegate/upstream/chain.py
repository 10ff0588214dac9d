"""The gateway's producer for a generation: its upstreams in order, with retries and fallbacks before the first output.

``ProviderChain(providers, settings)`` is a ``core.generation.Producer``: it streams the request from the first
provider into the generation (the provider's sink); on a retryable ``UpstreamError`` before any output it
retries that provider with backoff, then moves on to the next (a fallback). Once a part went out it never
retries (the client would see it twice): the error ends the stream. A fallback that cannot honour the request
(``check_request``) is skipped. Each attempt's connection is closed by the provider before the backoff starts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from ..core.generation import Generation
from ..errors import InvalidRequest, UpstreamError
from ..parts import Finish
from ..settings import Settings
from .base import Provider

__all__ = ["ProviderChain"]

log = logging.getLogger("ssegate.upstream")


class ProviderChain:
    __slots__ = ("providers", "settings")

    def __init__(self, providers: Sequence[Provider], settings: Settings) -> None:
        self.providers = providers
        self.settings = settings

    async def __call__(self, gen: Generation) -> Finish:
        s = self.settings
        request = gen.request
        last_error: UpstreamError | None = None
        for n, provider in enumerate(self.providers):
            if n:
                try:
                    provider.check_request(request)
                except InvalidRequest as exc:
                    log.info("fallback %s skipped: %s", provider.label, exc.message)
                    continue
            for attempt in range(s.retry_attempts):
                gen.upstream_attempts += 1
                gen.deployment = provider.label
                try:
                    return await provider.stream(request, gen)
                except UpstreamError as exc:
                    if gen.outputs or not exc.retryable:
                        raise  # never once output went out: a retry would send it twice
                    last_error = exc
                delay = self._backoff(gen, attempt, last_error)
                if delay is None:
                    break  # on to the next fallback, if any
                log.info("retrying %s in %.2fs after: %s", provider.label, delay, last_error.message)
                await asyncio.sleep(delay)
        if last_error is None:
            raise UpstreamError("no upstream could take this request")
        raise last_error

    def _backoff(self, gen: Generation, attempt: int, exc: UpstreamError) -> float | None:
        """Delay before the next try on this upstream, or None to move on to the next fallback (or give up).

        Exponential from ``retry_backoff_s``, jittered 0.5x-1.5x, at least the upstream's ``Retry-After``.
        Before the commit a retry must fit before the commit deadline, so that an upstream failing at once on
        every try still gives the client a real HTTP status; after it, before the first-token deadline."""
        s = self.settings
        if attempt + 1 >= s.retry_attempts:
            return None
        delay = s.retry_backoff_s * (2.0**attempt) * (0.5 + random.random())
        if exc.retry_after:
            delay = max(delay, float(exc.retry_after))
        now = asyncio.get_running_loop().time()
        if not gen.committed and now + delay > gen.commit_deadline:
            return None  # keep the final failure a real HTTP status
        if now + delay > gen.started_at + s.first_token_timeout_s:
            return None
        return delay
