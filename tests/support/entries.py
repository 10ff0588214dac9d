"""Log entries as tests write and read them: ``(kind, payload)`` pairs, which a ``StreamLog`` keeps as two lists
side by side (``kinds``, ``payloads``) and an encoder takes as those two lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ssegate.core.entries import Entry
from ssegate.core.log import StreamLog


def columns(entries: Iterable[Entry]) -> tuple[list[int], list[Any]]:
    """The kinds and the payloads of ``entries``: what ``StreamEncoder.encode`` takes after the seq."""
    pairs = list(entries)
    return [k for k, _ in pairs], [p for _, p in pairs]


def rows(log: StreamLog) -> list[Entry]:
    """Every entry a log keeps, as pairs."""
    return list(zip(log.kinds, log.payloads, strict=True))
