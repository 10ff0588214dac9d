"""An application's own async iterator of parts as a generation's producer (``Gateway.stream``, CONTRACT §10).

``SourceProducer(source)`` takes what the iterator yields (``str`` text, ``Reasoning``, ``ToolCallStart``,
``ToolCallDelta``) into the generation one part at a time, so the application's stream gets everything the
native stream has: ids, the commit rule, heartbeats, the event log, resume and cancel. A ``Finish`` the iterator
yields (e.g. forwarded from ``Gateway.complete``) is remembered, not the end: the stream ends when the iterator
does, with the last finish reason and the usage of every ``Finish`` added up (an answer made of several model
calls reports them all). When the generation is cancelled (a disconnect, ``POST .../cancel``, shutdown) the
iterator is closed at once, so its ``finally`` runs; whoever opened it, closed it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..parts import Finish, Part, Usage

if TYPE_CHECKING:
    from .generation import Generation

__all__ = ["SourceProducer"]


class SourceProducer:
    __slots__ = ("source",)

    def __init__(self, source: AsyncIterator[Part | Finish]) -> None:
        self.source = source

    async def __call__(self, gen: Generation) -> Finish:
        reason = "stop"
        usage: Usage | None = None
        provider_data: dict[str, Any] | None = None
        source = self.source
        try:
            async for item in source:
                if type(item) is Finish:
                    reason = item.reason
                    provider_data = item.provider_data or provider_data
                    if item.usage is not None:
                        usage = item.usage if usage is None else Usage(
                            usage.prompt_tokens + item.usage.prompt_tokens,
                            usage.completion_tokens + item.usage.completion_tokens,
                            usage.estimated or item.usage.estimated)
                else:
                    gen.emit(item)  # type: ignore[arg-type]
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        return Finish(reason, usage, provider_data)
