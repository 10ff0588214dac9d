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
    assert upstream_status_error(503, "x").retryable is True


@pytest.mark.parametrize(("raw", "want"), [("2", 2.0), ("inf", None), ("nan", None), ("soon", None), (None, None)])
def test_retry_after(raw: str | None, want: float | None) -> None:
    assert parse_retry_after(raw) == want
