"""The error tree: codes, statuses, and the translation of what lower libraries raise."""

from __future__ import annotations

import pytest

from ssegate.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    parse_retry_after,
    upstream_status_error,
)
from ssegate.upstream.base import map_upstream_errors


def test_regression_wrong_shape_chunk_is_an_internal_error() -> None:
    """Valid JSON of the wrong shape from an upstream used to end the stream as "internal error: TypeError"
    with a traceback; it is the upstream's fault and is reported as such."""
    chunk = {"choices": 5}
    with pytest.raises(UpstreamProtocolError) as info, map_upstream_errors():
        chunk["choices"][0]  # type: ignore[index]
    assert info.value.code == "upstream_error" and "shape" in info.value.message


def test_status_mapping() -> None:
    assert isinstance(upstream_status_error(429, "x", "3"), UpstreamRateLimited)
    assert upstream_status_error(429, "x", "3").headers() == {"Retry-After": "3"}
    assert isinstance(upstream_status_error(504, "x"), UpstreamTimeout)
    err = upstream_status_error(401, "bad key")
    assert isinstance(err, UpstreamError) and err.status == 502 and err.retryable is False
    assert err.headers() == {"x-should-retry": "false"}
    assert upstream_status_error(503, "x").retryable is True


@pytest.mark.parametrize(("status", "detail", "code", "client_status"), [
    (400, "Unrecognized request argument: foo", "invalid_request", 400),
    (413, "request too large", "invalid_request", 400),
    (422, "messages: too long for the context window", "invalid_request", 400),
    (404, "The model `gpt-9` does not exist", "model_not_found", 404),
    (404, "no route POST /v2/chat/completions", "upstream_error", 502),  # a misconfigured URL: not the client's
])
def test_regression_upstream_4xx_caused_by_the_request_is_a_client_error_not_retried(
    status: int, detail: str, code: str, client_status: int
) -> None:
    """An upstream's 400/404-model/413/422 was a 502 ``upstream_error``, so clients (and their SDKs, three times)
    retried a request that can never succeed; it is the client's error, said so, with ``x-should-retry: false``."""
    err = upstream_status_error(status, detail)
    assert (err.code, err.status, err.retryable) == (code, client_status, False)
    assert err.headers()["x-should-retry"] == "false"


@pytest.mark.parametrize(("raw", "want"), [("2", 2.0), ("inf", None), ("nan", None), ("soon", None), (None, None)])
def test_retry_after(raw: str | None, want: float | None) -> None:
    assert parse_retry_after(raw) == want
