"""The Provider protocol: what every upstream (embedded, remote, or a plugin's) looks like to the gateway.

One path for every part of an answer: ``await provider.stream(request, sink)`` puts the parts of the answer
(``ssegate.parts``: text as ``str``, ``Reasoning``, ``ToolCallStart``, ``ToolCallDelta``) into ``sink.emit`` as
they arrive, and returns the ``Finish`` (reason, usage when known, ``provider_data`` for the next turn). A remote
provider calls ``emit`` from its connection's read callback: no task switch and no object but the part itself per
token. The demo model and plugins use the very same call, so every test exercises the production path.

The sink is the caller's (a ``Generation``), never the request: a provider calls ``sink.alive()`` whenever upstream
bytes arrive (so a long thinking phase with keep-alive pings is not an idle stall) and ``sink.holding(abort)``
while it holds an upstream request (``abort`` tears the connection down at once, from a disconnect's callback,
and wakes nobody: the generation cancels the task that waits on the request, when its turn comes; ``holding(None)``
when it let go). Cancelling the task that awaits
``stream()`` must close the upstream too (``finally``). Errors are ``ssegate.errors.UpstreamError`` subclasses.

``check_request(request)`` runs before a stream starts: a provider raises ``InvalidRequest`` naming the first
field it cannot honour (an image part for a text-only upstream, ``seed`` for Anthropic), so the client gets a 400
instead of a field silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from ..core.request import ChatRequest
from ..errors import InvalidRequest
from ..parts import Finish, Part
from .error_map import map_upstream_errors

__all__ = ["Provider", "Sink", "map_upstream_errors", "public_url", "refuse_field"]


class Sink(Protocol):
    """Where a provider puts what its upstream sends, as it arrives."""

    def emit(self, part: Part) -> None:
        """One part of the answer. Empty text is ignored."""

    def alive(self) -> None:
        """Upstream bytes arrived (any: a ping too)."""

    def holding(self, abort: Callable[[], None] | None) -> None:
        """The provider now holds an upstream request that ``abort()`` tears down at once (None: it let go)."""

    def begin_read(self) -> None:
        """The parts of one upstream read (more than one event) follow, to go out to clients together."""

    def end_read(self, ending: bool) -> None:
        """The parts of that read were all emitted; ``ending``: the read ended the answer (its end marker)."""


class Provider(Protocol):
    """One upstream. ``name`` is the provider kind; ``label`` tells deployments apart (never holds a key)."""

    name: str
    label: str

    def check_request(self, request: ChatRequest) -> None:
        """Raise ``InvalidRequest`` naming the first field of ``request`` this upstream cannot honour."""

    async def stream(self, request: ChatRequest, sink: Sink) -> Finish: ...

    async def check(self) -> None:
        """Raise an ``UpstreamError`` when the upstream cannot be reached (for ``/readyz``)."""

    async def aclose(self) -> None:
        """Release what the provider holds (at shutdown)."""


def public_url(url: str) -> str:
    """``url`` without its ``user:password@`` part: what a label, a log line or an error may show."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def refuse_field(provider: str, field: str, why: str = "") -> InvalidRequest:
    """The 400 for a request field that ``provider`` cannot honour."""
    return InvalidRequest(f"{field}: not supported by the {provider} upstream" + (f" ({why})" if why else ""))

