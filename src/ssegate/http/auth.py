"""Who is calling: API keys (``SSEGATE_API_KEYS``) and short-lived signed stream tokens. Keys are never logged.

``identity()`` returns the caller's identity: ``"anonymous"`` when no keys are configured, otherwise a
fingerprint of the key (a stream's owner is stored as this fingerprint, never as the key). Keys arrive as
``Authorization: Bearer <key>`` (or ``X-API-Key``) and are compared in constant time against every
configured key, so the timing tells nothing about which one matched, or how much of it.

A fingerprint is ``key:`` and an HMAC-SHA256 of the key under a key derived from the server secret
(``SSEGATE_TOKEN_SECRET``), not a bare hash: a leaked log line or Redis dump (where stream owners are kept)
does not let anyone test guesses of a key offline. Replicas must therefore share the secret, or a stream
started on one has a different owner on the others (its resume and cancel there are 404): ``ssegate serve``
refuses ``SSEGATE_REDIS_URL`` with keys and no secret.

Browsers' ``EventSource`` cannot send headers, and a long-lived key must not go into a URL (URLs end up in
proxy logs, browser history, ``Referer``). So an authenticated ``POST /v1/auth/token`` hands out a **stream
token**: ``v1.<payload>.<signature>``, the payload ``{"sub": <key fingerprint>, "exp": <unix time>, "scope":
<scope>}`` and the signature an HMAC-SHA256 under ``SSEGATE_TOKEN_SECRET``. It is accepted as ``?token=`` on
``GET /chat`` and ``GET /v1/streams/{id}`` only, for ``SSEGATE_TOKEN_TTL_S`` seconds, and its scope says what
it may do there:

- ``resume`` (the default, an empty body): resume the caller's streams (``GET /v1/streams/{id}``, and
  ``GET /chat`` with ``Last-Event-ID``), not start any. A token leaked from a URL then costs no upstream spend.
- ``stream`` (``{"scope": "stream"}`` in the POST body): also start streams with ``GET /chat?q=``.

No token may mint tokens, cancel, or use the POST endpoints. A token whose key was removed from
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
from typing import Final, Literal, NamedTuple

import orjson
from starlette.requests import HTTPConnection

from ..errors import Unauthorized
from ..settings import Settings

__all__ = ["ANONYMOUS", "SCOPES", "Grant", "Scope", "fingerprint", "identity", "issue_token", "verify_token"]

ANONYMOUS: Final = "anonymous"
TOKEN_METHODS: Final = ("GET", "HEAD")
"""Methods on which ``?token=`` is accepted (what ``EventSource`` sends) ..."""
TOKEN_PATHS: Final = ("/chat", "/v1/streams/")
"""... on these paths (``/chat`` exactly, and what starts with ``/v1/streams/``): starting and resuming streams."""

Scope = Literal["resume", "stream"]
SCOPES: Final[tuple[Scope, ...]] = ("resume", "stream")
"""What a stream token may do: ``resume`` streams (the default), or also start them (``stream``)."""


class Grant(NamedTuple):
    """What a valid stream token says: whose it is, and what it may do."""

    owner: str
    scope: Scope


_PROCESS_SECRET: Final = secrets.token_bytes(32)
_TOKEN_VERSION: Final = "v1"


def _derived(secret: str, purpose: bytes) -> bytes:
    """One key per purpose from the server secret (or this process's random one)."""
    root = secret.encode() if secret else _PROCESS_SECRET
    return hmac.new(root, b"ssegate " + purpose, hashlib.sha256).digest()


@functools.lru_cache(maxsize=8)
def _fingerprint_key(secret: str) -> bytes:
    return _derived(secret, b"key fingerprint v1")


def fingerprint(key: str, settings: Settings) -> str:
    """``key:`` and 96 bits of an HMAC-SHA256 of ``key`` under the server secret: names a caller in logs and
    stream owners without letting anyone who reads them test guesses of the key."""
    return _fingerprint(_fingerprint_key(settings.token_secret), key)


def _fingerprint(hmac_key: bytes, key: str) -> str:
    return "key:" + hmac.new(hmac_key, key.encode(), hashlib.sha256).hexdigest()[:24]


@functools.lru_cache(maxsize=8)
def _fingerprints(keys: tuple[str, ...], secret: str) -> frozenset[str]:
    return frozenset(_fingerprint(_fingerprint_key(secret), k) for k in keys)


@functools.lru_cache(maxsize=8)
def _signing_key(secret: str) -> bytes:
    return _derived(secret, b"stream token " + _TOKEN_VERSION.encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def issue_token(
    owner: str, settings: Settings, *, scope: Scope = "resume", now: float | None = None
) -> tuple[str, int]:
    """A stream token for ``owner`` with ``scope``, and its expiry (unix seconds)."""
    exp = int((time.time() if now is None else now) + settings.token_ttl_s)
    message = f"{_TOKEN_VERSION}.{_b64(orjson.dumps({'sub': owner, 'exp': exp, 'scope': scope}))}"
    return f"{message}.{_sign(_signing_key(settings.token_secret), message)}", exp


def verify_token(token: str, settings: Settings, *, now: float | None = None) -> Grant | None:
    """Whose a valid, unexpired token is and what it may do; ``None`` for anything else."""
    message, _, signature = token.rpartition(".")
    if not message.startswith(_TOKEN_VERSION + "."):
        return None
    expected = _sign(_signing_key(settings.token_secret), message)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        claims = orjson.loads(_unb64(message[len(_TOKEN_VERSION) + 1 :]))
        owner, exp, scope = claims["sub"], claims["exp"], claims.get("scope", "resume")
    except (ValueError, binascii.Error, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(owner, str) or not isinstance(exp, int) or scope not in SCOPES:
        return None
    if exp <= (time.time() if now is None else now):
        return None
    return Grant(owner, scope)


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
        needs = _token_scope(conn)
        token = conn.query_params.get("token") if needs is not None else None
        if token and needs is not None:
            return _token_identity(token, needs, settings, keys)
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (or ?token= from POST /v1/auth/token)")
    ok = False
    for key in keys:  # compare against every key, so timing says nothing about which matched
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    if not ok:
        raise Unauthorized("invalid API key")
    return fingerprint(presented, settings)


def _token_scope(conn: HTTPConnection) -> Scope | None:
    """The scope a token needs for this request (``None``: no token accepted here). ``GET /chat`` starts a
    stream, unless it carries ``Last-Event-ID`` (an ``EventSource`` reconnecting): then it resumes one."""
    if conn.scope.get("method") not in TOKEN_METHODS:
        return None
    path: str = conn.scope.get("path", "")
    if path.startswith(TOKEN_PATHS[1]):
        return "resume"
    if path == TOKEN_PATHS[0]:
        return "resume" if conn.headers.get("last-event-id") else "stream"
    return None


def _token_identity(token: str, needs: Scope, settings: Settings, keys: Sequence[str]) -> str:
    grant = verify_token(token, settings)
    if grant is None or grant.owner not in _fingerprints(tuple(keys), settings.token_secret):
        raise Unauthorized("invalid or expired stream token: get a new one from POST /v1/auth/token")
    if needs == "stream" and grant.scope != "stream":
        raise Unauthorized(
            "this stream token may only resume streams: to start them on GET /chat, get one with "
            '{"scope": "stream"} in the body of POST /v1/auth/token'
        )
    return grant.owner
