"""Two log lines per stream, at its start and at its end (never per token): a ``core.outcome.Observer``.

The end line carries the outcome (``done``, ``cancelled:<reason>``, ``error:<code>``), the parts relayed, the
time to the first output, the duration, the upstream attempts, and who answered: ``model_entry`` (the routing
file's name of the model, wildcards as written, ``*`` without a file) and ``deployment`` (its label, never its key).
The start line has the ``model`` the client asked for. The prompt's text is logged only with
``SSEGATE_LOG_PROMPTS=1``; its size always.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.outcome import Outcome, Started
from ..core.request import message_text

__all__ = ["StreamLogger"]

stream_log = logging.getLogger("ssegate.stream")


class StreamLogger:
    def __init__(self, log_prompts: bool = False) -> None:
        self.log_prompts = log_prompts

    def started(self, started: Started) -> None:
        if not stream_log.isEnabledFor(logging.INFO):
            return
        request = started.request
        extra: dict[str, Any] = {
            "stream_id": started.stream_id,
            "model": request.model,
            "owner": started.owner,
            "messages": len(request.messages),
            "prompt_chars": sum(len(message_text(m)) for m in request.messages),
        }
        if request.tools:
            extra["tools"] = len(request.tools)
        if self.log_prompts:
            extra["prompt"] = request.prompt_text
        stream_log.info("stream started", extra=extra)

    def ended(self, outcome: Outcome) -> None:
        if not stream_log.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {
            "stream_id": outcome.stream_id,
            "outcome": outcome.cause,
            "tokens": outcome.outputs,
            "duration_ms": round(outcome.duration_s * 1000),
            "upstream_attempts": outcome.upstream_attempts,
        }
        if outcome.deployment:
            extra["model_entry"] = outcome.model_entry
            extra["deployment"] = outcome.deployment
        if outcome.ttft_s is not None:
            extra["ttft_ms"] = round(outcome.ttft_s * 1000)
        if outcome.error is not None:
            extra["error"] = outcome.error
        stream_log.info("stream ended", extra=extra)
