"""Who is calling: API keys (``SSEGATE_API_KEYS``) and short-lived signed stream tokens. Keys are never logged.

``identity()`` returns the caller's identity: ``"anonymous"`` when no keys are configured, otherwise a
fingerprint of the key (a stream's owner is stored as this fingerprint, never as the key). Keys arrive as
``Authorization: Bearer <key>`` (or ``X-API-Key``) and are compared in constant time against every
configured key, so the timing tells nothing about which one matched, or how much of it.

Browsers' ``EventSource`` cannot send headers, and a long-lived key must not go into a URL (URLs end up in
proxy logs, browser history, ``Referer``). So an authenticated ``POST /v1/auth/token`` hands out a **stream
token**: ``v1.<payload>.<signature>``, the payload ``{"sub": <key fingerprint>, "exp": <unix time>}`` and the
signature an HMAC-SHA256 under ``SSEGATE_TOKEN_SECRET``. It is accepted as ``?token=`` on ``GET /chat``
and ``GET /v1/streams/{id}`` only: it can start and resume streams for ``SSEGATE_TOKEN_TTL_S``
seconds, but not mint tokens, cancel, or use the POST endpoints. A token whose key was removed from
``SSEGATE_API_KEYS`` stops working at once. With ``SSEGATE_TOKEN_SECRET`` empty, each process draws a random
secret at start: tokens then work only on the replica that issued them, and not across a restart; replicas
behind a load balancer need one shared secret.

A routing file's ``[[keys]]`` are valid client keys too (in addition to ``SSEGATE_API_KEYS``): callers pass the
whole list (``Gateway.routing.client_keys``) as ``keys``. The fingerprint ``identity()`` returns is how the router
knows which configured key matched, and so which models that key may use.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

import orjson
from starlette.requests import HTTPConnection

from ..errors import Unauthorized
from ..settings import Settings

__all__ = ["ANONYMOUS", "fingerprint", "identity", "issue_token", "verify_token"]

ANONYMOUS = "anonymous"
TOKEN_METHODS = ("GET", "HEAD")
"""Methods on which ``?token=`` is accepted (what ``EventSource`` sends) ..."""
TOKEN_PATHS = ("/chat", "/v1/streams/")
"""... on these paths (``/chat`` exactly, and what starts with ``/v1/streams/``): starting and resuming streams."""

_PROCESS_SECRET = secrets.token_bytes(32)
_TOKEN_VERSION = "v1"


def fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=8)
def _fingerprints(keys: tuple[str, ...]) -> frozenset[str]:
    return frozenset(fingerprint(k) for k in keys)


@functools.lru_cache(maxsize=8)
def _signing_key(secret: str) -> bytes:
    root = secret.encode() if secret else _PROCESS_SECRET
    return hmac.new(root, b"ssegate stream token " + _TOKEN_VERSION.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def issue_token(owner: str, settings: Settings, *, now: float | None = None) -> tuple[str, int]:
    """A stream token for ``owner``, and its expiry (unix seconds)."""
    exp = int((time.time() if now is None else now) + settings.token_ttl_s)
    message = f"{_TOKEN_VERSION}.{_b64(orjson.dumps({'sub': owner, 'exp': exp}))}"
    return f"{message}.{_sign(_signing_key(settings.token_secret), message)}", exp


def verify_token(token: str, settings: Settings, *, now: float | None = None) -> str | None:
    """The owner a valid, unexpired token was issued to; ``None`` for anything else."""
    message, _, signature = token.rpartition(".")
    if not message.startswith(_TOKEN_VERSION + "."):
        return None
    expected = _sign(_signing_key(settings.token_secret), message)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        claims = orjson.loads(_unb64(message[len(_TOKEN_VERSION) + 1 :]))
        owner, exp = claims["sub"], claims["exp"]
    except (ValueError, binascii.Error, KeyError, TypeError):
        return None
    if not isinstance(owner, str) or not isinstance(exp, int):
        return None
    if exp <= (time.time() if now is None else now):
        return None
    return owner


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is None:
        return conn.headers.get("x-api-key")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def identity(conn: HTTPConnection, settings: Settings, keys: Sequence[str] | None = None) -> str:
    """The caller's identity; ``keys`` are the valid client keys (default: ``SSEGATE_API_KEYS``)."""
    if keys is None:
        keys = settings.api_key_list
    if not keys:
        return ANONYMOUS
    presented = _bearer(conn)
    if not presented:
        token = conn.query_params.get("token") if _takes_token(conn) else None
        if token:
            return _token_identity(token, settings, keys)
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (or ?token= from POST /v1/auth/token)")
    ok = False
    for key in keys:  # compare against every key, so timing says nothing about which matched
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    if not ok:
        raise Unauthorized("invalid API key")
    return fingerprint(presented)


def _takes_token(conn: HTTPConnection) -> bool:
    if conn.scope.get("method") not in TOKEN_METHODS:
        return False
    path: str = conn.scope.get("path", "")
    return path == TOKEN_PATHS[0] or path.startswith(TOKEN_PATHS[1])


def _token_identity(token: str, settings: Settings, keys: Sequence[str]) -> str:
    owner = verify_token(token, settings)
    if owner is None or owner not in _fingerprints(tuple(keys)):
        raise Unauthorized("invalid or expired stream token: get a new one from POST /v1/auth/token")
    return owner
