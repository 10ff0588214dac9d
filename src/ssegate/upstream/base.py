"""The Provider protocol: what every upstream (embedded or remote) looks like to the gateway.

A provider turns a ``ChatRequest`` into an async generator of ``ProviderEvent``s: ``str`` for a text
delta (never empty: role-only or empty upstream chunks are not events), then one ``Finish``. Usage may
arrive on the ``Finish``. A provider may instead hand text deltas to ``request.sink`` when the caller set
one (the built-in remote providers do, from the connection's callback); it still ends with a ``Finish``.
The generator owns its upstream request: ``aclose()`` on it (or cancelling the task that iterates it)
tears the HTTP connection down, so the provider stops generating. Errors are raised as
``ssegate.errors.UpstreamError`` subclasses.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict

from ..errors import GatewayError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = ["ChatRequest", "Finish", "Message", "Provider", "ProviderEvent", "Usage", "map_upstream_errors"]

Role = Literal["system", "user", "assistant", "developer", "tool"]


class Message(TypedDict):
    role: str
    content: str


@dataclass(slots=True)
class ChatRequest:
    messages: list[Message]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    resume_grace_s: float | None = None
    """How long the generation goes on without a client, waiting for a resume (CONTRACT §5); None: the
    server's ``DETACH_GRACE_S``."""
    abort: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Set by a provider while it holds an upstream response: tears the connection down at once, without
    waiting for the generation's task to unwind (a disconnect storm closes every upstream promptly)."""
    sink: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    """Set by the caller (a generation): a provider may hand each text delta to it as it arrives, from the
    connection's callback, instead of yielding it (no task switch per token). With no sink, deltas are
    yielded."""

    @property
    def prompt_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
        }


@dataclass(slots=True)
class Finish:
    reason: str = "stop"
    usage: Usage | None = None


ProviderEvent = str | Finish


class Provider(Protocol):
    """One upstream. ``name`` is the provider kind; ``label`` tells replicas or fallbacks apart."""

    name: str
    label: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]: ...

    async def check(self) -> None:
        """Raise an ``UpstreamError`` when the upstream cannot be reached (for ``/readyz``)."""

    async def aclose(self) -> None:
        """Release pooled connections (at shutdown)."""


@contextmanager
def map_upstream_errors() -> Iterator[None]:
    """Translate what the OS, asyncio and a provider's parsing raise while talking to an upstream.

    Messages are written for the person reading them in a client; the library's own text is kept on
    ``__cause__`` (and in the server log), not in the message. (The upstream client raises ssegate's own
    errors already; this catches what escapes it and what a parser raises on bad data.)
    """
    try:
        yield
    except GatewayError:
        raise
    except TimeoutError as exc:
        raise UpstreamTimeout("the upstream did not answer in time") from exc
    except (ConnectionError, EOFError) as exc:
        raise UpstreamError("the upstream closed the connection unexpectedly") from exc
    except UnicodeDecodeError as exc:
        raise UpstreamProtocolError("the upstream sent text that is not valid UTF-8") from exc
    except ValueError as exc:
        raise UpstreamProtocolError("the upstream sent malformed data (not the expected JSON)") from exc
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        # valid JSON of the wrong shape (e.g. ``"choices": 5``): the upstream's fault, said as such
        raise UpstreamProtocolError("the upstream sent data of an unexpected shape") from exc
