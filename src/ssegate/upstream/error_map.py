"""``map_upstream_errors()``: the ``with`` block around a provider's talk with its upstream that turns what the OS,
asyncio and a provider's parsing raise into ssegate's errors.

Messages are written for the person reading them in a client; the library's own text is kept on ``__cause__``
(and in the server log), not in the message. (The upstream client raises ssegate's own errors already; this
catches what escapes it and what a parser raises on bad data.) ``GatewayError`` and anything that is not an
``Exception`` (a cancellation) pass through unchanged.

A compiled class (one instance, no state) rather than a ``@contextmanager`` generator: every stream enters it
once, and the generator's way costs five calls in the interpreter.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final, Literal

from msgspec import ValidationError

from ..errors import GatewayError, UpstreamError, UpstreamProtocolError, UpstreamTimeout, caused

__all__ = ["map_upstream_errors"]


class _UpstreamErrors:
    """The context manager ``map_upstream_errors()`` gives."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None or isinstance(exc, GatewayError) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, TimeoutError):
            raise caused(UpstreamTimeout("the upstream did not answer in time"), exc)
        if isinstance(exc, ConnectionError | EOFError):
            raise caused(UpstreamError("the upstream closed the connection unexpectedly"), exc)
        if isinstance(exc, UnicodeDecodeError):
            raise caused(UpstreamProtocolError("the upstream sent text that is not valid UTF-8"), exc)
        if isinstance(exc, (TypeError, AttributeError, KeyError, IndexError, ValidationError)):
            # valid JSON of the wrong shape (e.g. ``"choices": 5``, or not an object where ``upstream/chunks.py``
            # decodes one; msgspec's ``ValidationError`` is a ``ValueError`` too): the upstream's fault, said as such
            raise caused(UpstreamProtocolError("the upstream sent data of an unexpected shape"), exc)
        if isinstance(exc, ValueError):
            raise caused(UpstreamProtocolError("the upstream sent malformed data (not the expected JSON)"), exc)
        return False


_ONE: Final = _UpstreamErrors()


def map_upstream_errors() -> _UpstreamErrors:
    """Translate what the OS, asyncio and a provider's parsing raise inside the ``with`` block (see the module)."""
    return _ONE
