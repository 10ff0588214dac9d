"""Who is calling: API keys (``SSEGATE_API_KEYS``), compared in constant time, never logged.

``identity()`` returns the caller's identity: ``"anonymous"`` when no keys are configured, otherwise a
fingerprint of the key (a stream's owner is stored as this fingerprint, never as the key).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import HTTPConnection

from .errors import Unauthorized
from .settings import Settings

__all__ = ["ANONYMOUS", "fingerprint", "identity"]

ANONYMOUS = "anonymous"


def fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is None:
        return conn.headers.get("x-api-key")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def identity(conn: HTTPConnection, settings: Settings) -> str:
    keys = settings.api_key_list
    if not keys:
        return ANONYMOUS
    presented = _bearer(conn)
    if not presented:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    ok = False
    for key in keys:  # compare against every key, so timing says nothing about which matched
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    if not ok:
        raise Unauthorized("invalid API key")
    return fingerprint(presented)
