"""One log line per stream at ``info``, when it ends (never per token), and one at its start at ``debug``: a
``core.outcome.Observer``.

The end line carries the model asked for, the caller (a key fingerprint), the outcome (``done``,
``cancelled:<reason>``, ``error:<code>``), the parts relayed, the time to the first output, the duration, the
upstream attempts, and who answered: ``model_entry`` (the routing file's name of the model, wildcards as written,
``*`` without a file) and ``deployment`` (its label, never its key): an access log for streams. The start line
(``debug``) adds the request's size; with ``SSEGATE_LOG_PROMPTS=1`` it is logged at ``info`` and carries the
prompt's text. A log line costs ~25 µs of CPU (the logging module's own record and handler work), so one per
stream at ``info``, not two.
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
        level = logging.INFO if self.log_prompts else logging.DEBUG  # an operator who asked for prompts gets them
        if not stream_log.isEnabledFor(level):
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
        stream_log.log(level, "stream started", extra=extra)

    def ended(self, outcome: Outcome) -> None:
        if not stream_log.isEnabledFor(logging.INFO):
            return
        extra: dict[str, Any] = {
            "stream_id": outcome.stream_id,
            "model": outcome.model,
            "owner": outcome.owner,
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
