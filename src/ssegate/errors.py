"""The error tree of ssegate, and the one place where lower libraries' errors are translated.

```
GatewayError                    code                 status  retryable
├── ClientError                 invalid_request      400     no
│   ├── InvalidRequest          invalid_request      400/422 no
│   │   └── UpstreamRejected    invalid_request      400     no   (the upstream's 400/413/422: the request's fault)
│   ├── PayloadTooLarge         payload_too_large    413     no
│   ├── Unauthorized            unauthorized         401     no
│   ├── NotFound                not_found            404     no
│   ├── ModelNotFound           model_not_found      404     no
│   └── RateLimited             rate_limited         429     yes  (Retry-After)
├── UpstreamError               upstream_error       502     yes
│   ├── UpstreamRefused         upstream_error       502     4xx: no, 5xx: yes
│   ├── UpstreamRateLimited     rate_limited         429     yes  (Retry-After)
│   ├── UpstreamProtocolError   upstream_error       502     yes
│   └── UpstreamTimeout         upstream_timeout     504     yes
├── Overloaded                  overloaded           503     yes  (Retry-After)
│   └── EventLogUnavailable     overloaded           503     yes  (Redis unreachable)
├── ShuttingDown                shutting_down        503     yes  (Retry-After)
└── GenerationLost              generation_lost      502     yes

ConfigError (a ValueError)      a routing file that does not load (never sent to a client: ``ssegate serve``
                                exits with it at start-up; a reload keeps the old table and logs it)
```

Every error knows its ``code``, HTTP ``status`` and ``retryable``; a response for one that is not retryable says
``x-should-retry: false`` (the OpenAI and Anthropic SDKs then do not resend a deterministic failure), one with
``retry_after`` says ``Retry-After``. ``body()`` is the JSON shape of
CONTRACT §4 and ``openai_body()`` the OpenAI shape of §7. This module imports no third-party library: the
errors of lower libraries are translated where they are used, in one place each (``upstream.error_map.
map_upstream_errors`` for the upstream client and parsers, ``cluster.redis_log.map_redis_errors`` for redis-py).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

__all__ = [
    "ClientError",
    "ConfigError",
    "EventLogUnavailable",
    "GatewayError",
    "GenerationLost",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "ShuttingDown",
    "Unauthorized",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamRefused",
    "UpstreamRejected",
    "UpstreamTimeout",
    "caused",
    "error_from_code",
]


class GatewayError(Exception):
    code: ClassVar[str] = "internal_error"
    status: int = 500
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "retryable": self.retryable}}

    def openai_body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if isinstance(self, ClientError) else "api_error"
        if self.code == "rate_limited":
            kind = "rate_limit_error"
        elif self.code == "unauthorized":
            kind = "authentication_error"
        return {"error": {"message": self.message, "type": kind, "code": self.code, "param": None}}

    def headers(self) -> dict[str, str]:
        if not self.retryable:
            return {"x-should-retry": "false"}
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class ConfigError(ValueError):
    """A routing file that does not load. The message is one line naming the file, the entry (its position and
    name) and the field, and never holds a key (``routing/config.py``)."""


class ClientError(GatewayError):
    code = "invalid_request"
    status = 400


class InvalidRequest(ClientError):
    code = "invalid_request"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool | None = None,
                 retry_after: float | None = None, param: str | None = None) -> None:
        super().__init__(message, status=status, retryable=retryable, retry_after=retry_after)
        self.param = param
        """The request field at fault, when one is named apart (OpenAI's ``error.param``)."""

    def openai_body(self) -> dict[str, Any]:
        body = super().openai_body()
        body["error"]["param"] = self.param
        return body


class UpstreamRejected(InvalidRequest):
    """The upstream answered 400, 413 or 422: the request itself is at fault (a bad field, a context too long)."""

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class PayloadTooLarge(ClientError):
    code = "payload_too_large"
    status = 413


class Unauthorized(ClientError):
    code = "unauthorized"
    status = 401


class NotFound(ClientError):
    code = "not_found"
    status = 404


class ModelNotFound(ClientError):
    code = "model_not_found"
    status = 404


class RateLimited(ClientError):
    code = "rate_limited"
    status = 429
    retryable = True


class UpstreamError(GatewayError):
    code = "upstream_error"
    status = 502
    retryable = True


class UpstreamRefused(UpstreamError):
    """The upstream answered with an error status (``upstream_status``)."""

    def __init__(self, message: str, *, upstream_status: int, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=upstream_status >= 500, retry_after=retry_after)
        self.upstream_status = upstream_status


class UpstreamRateLimited(UpstreamError):
    code = "rate_limited"
    status = 429


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    status = 504


class Overloaded(GatewayError):
    code = "overloaded"
    status = 503
    retryable = True


class EventLogUnavailable(Overloaded):
    """Redis mode: the shared event log cannot be reached, so no new stream can be made resumable."""


class ShuttingDown(GatewayError):
    code = "shutting_down"
    status = 503
    retryable = True


class GenerationLost(GatewayError):
    code = "generation_lost"
    status = 502
    retryable = True


_BY_CODE: dict[str, type[GatewayError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        PayloadTooLarge,
        Unauthorized,
        NotFound,
        ModelNotFound,
        RateLimited,
        UpstreamError,
        UpstreamTimeout,
        Overloaded,
        ShuttingDown,
        GenerationLost,
    )
}


E = TypeVar("E", bound=BaseException)


def caused(error: E, cause: BaseException) -> E:
    """``error`` with ``cause`` as its ``__cause__``: what ``raise error from cause`` does, for the modules compiled
    with mypyc (``pyproject.toml``, ``[tool.ssegate.compile]``), which drops the ``from``."""
    error.__cause__ = cause
    return error


def error_from_code(code: str, message: str, retryable: bool | None = None) -> GatewayError:
    """Rebuild an error from its wire form (``{"code", "message", "retryable"}``)."""
    cls = _BY_CODE.get(code, GatewayError)
    err = cls(message, retryable=retryable)
    if cls is GatewayError:
        err.code = code  # type: ignore[misc]
    return err


MAX_RETRY_AFTER_S = 86400.0
"""An upstream's ``Retry-After`` is capped at a day (a larger one is a broken upstream, not a plan)."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an upstream's ``Retry-After``; ``None`` for an HTTP date, garbage, ``nan`` or ``inf``."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def upstream_status_error(status: int, detail: str, retry_after: str | None = None) -> GatewayError:
    """The error for an upstream that answered ``status`` instead of a stream: the client's own fault for a 400,
    413 or 422 (or a 404 about the model), else the upstream's (502, retried when it is a 5xx)."""
    after = parse_retry_after(retry_after)
    if status in (400, 413, 422):
        return UpstreamRejected(f"the upstream refused the request ({status}): {detail}", upstream_status=status)
    if status == 404 and "model" in detail.lower():
        return ModelNotFound(f"the upstream does not serve this model: {detail}")
    if status == 429:
        return UpstreamRateLimited(f"upstream rate limit: {detail}", retry_after=after or 1.0)
    if status in (408, 504):
        return UpstreamTimeout(f"upstream timed out ({status}): {detail}")
    return UpstreamRefused(f"upstream answered {status}: {detail}", upstream_status=status, retry_after=after)
