"""Operations (CONTRACT §8): ``/healthz``, ``/readyz``, ``/metrics``, and the chat page at ``/``.

``/readyz`` is what load balancers and orchestrators poll, often every second, from every node, anonymously.
So it is cheap and it tells nobody secrets:

- **Cheap.** The upstream check (``provider.check()`` of the first provider: one request to its models
  endpoint, bounded by ``UPSTREAM_CHECK_TIMEOUT_S``) runs at most once per ``READY_CACHE_S``, whatever the rate
  of hits, and concurrent hits share the one check in flight (single flight): readiness never multiplies
  upstream requests. A failure is kept as long as a success, so an upstream in trouble is not hammered by probes.
  Redis and shutdown are read from this process's own state (no command per hit): ``"redis"`` is ``"ok"``,
  ``"unreachable"``, or ``"down: <loops>"`` when a supervised background loop (writer, lease, listener, probe)
  failed and waits to be restarted (``cluster/supervise.py``).
- **No secrets.** The body names each check by kind, ``{"status": ..., "checks": {"upstream": "ok",
  "redis": "ok"}}``, with ``"ok"`` or a short fixed word (``"unreachable"``, ``"timeout"``, ``"error"``): never
  the upstream's URL, nor its error text (which may quote anything), nor Redis's URL (which may hold a
  password). The detail of a failed upstream check goes to the server log (``ssegate.ready``), once per check,
  with credentials taken out of it.
- **Detail for operators.** When API keys are configured, a caller presenting a valid key also gets
  ``"detail"``: for each check where it is (``host:port``) and what failed (the error's class), never
  credentials, a path or the upstream's text. Without keys every caller is anonymous and gets no detail (the
  server log has it); an invalid key gets the anonymous answer, not a 401, so that probes never need a key.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, JSONResponse, Response

from ...errors import GatewayError, UpstreamError, UpstreamRefused, UpstreamTimeout
from ..auth import ANONYMOUS, identity
from ..routing import GatewayRoute
from .deps import gateway

if TYPE_CHECKING:
    from ...gateway import Gateway
    from ...upstream import Provider

__all__ = ["READY_CACHE_S", "UPSTREAM_CHECK_TIMEOUT_S", "WEB_DIR", "UpstreamCheck", "router"]

router = APIRouter(tags=["ops"], route_class=GatewayRoute)
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
logger = logging.getLogger("ssegate.ready")

READY_CACHE_S = 5.0
"""How long one upstream check answers ``/readyz`` (from when it ended): at most one upstream request per this
period per process, however often and however many probes ask; an upstream that recovers is seen ready within it."""
UPSTREAM_CHECK_TIMEOUT_S = 5.0
"""The longest one upstream check may take; then it counts as ``"timeout"``."""


@router.get("/healthz", summary="Alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One check's result: ``word`` for anybody, ``detail`` for operators (no credentials either way)."""

    word: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.word == "ok"


class UpstreamCheck:
    """The upstream part of ``/readyz`` for one provider: at most one check in flight, its outcome kept
    ``READY_CACHE_S``."""

    def __init__(self, provider: Provider, *, cache_s: float = READY_CACHE_S) -> None:
        self.provider = provider
        self.cache_s = cache_s
        kind, _, url = provider.label.partition(":")
        self.where = _where(url) or kind
        self._secret = _userinfo(url)
        self._outcome: Outcome | None = None
        self._expires = 0.0
        self._inflight: asyncio.Task[Outcome] | None = None

    async def outcome(self) -> Outcome:
        loop = asyncio.get_running_loop()
        if self._outcome is not None and loop.time() < self._expires:
            return self._outcome
        if self._inflight is None:
            self._inflight = loop.create_task(self._check(), name="ssegate-readyz-upstream")
        # shielded: a prober that hangs up does not cancel the check the others wait for
        return await asyncio.shield(self._inflight)

    async def _check(self) -> Outcome:
        try:
            try:
                async with asyncio.timeout(UPSTREAM_CHECK_TIMEOUT_S):
                    await self.provider.check()
                outcome = Outcome("ok", f"{self.where}: ok")
            except (GatewayError, TimeoutError) as exc:
                outcome = self._failed(exc)
            except Exception as exc:  # a provider's bug: readiness still answers (not ready), the log has it
                logger.exception("readiness: the check of upstream %s raised", self.where)
                outcome = Outcome("error", f"{self.where}: {type(exc).__name__}")
            self._outcome = outcome
            self._expires = asyncio.get_running_loop().time() + self.cache_s
            return outcome
        finally:
            self._inflight = None

    def _failed(self, exc: BaseException) -> Outcome:
        if isinstance(exc, UpstreamTimeout | TimeoutError):
            word = "timeout"
        elif isinstance(exc, UpstreamError) and not isinstance(exc, UpstreamRefused) and isinstance(
            exc.__cause__, OSError
        ):
            word = "unreachable"
        else:
            word = "error"
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ is not None else ""
        logger.warning("readiness: upstream %s failed its check: %s: %s%s", self.where, type(exc).__name__,
                       self._scrub(str(exc)), self._scrub(cause))
        return Outcome(word, f"{self.where}: {type(exc).__name__}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text


def _where(url: str) -> str:
    """``host:port`` of ``url`` (no credentials, path or query); empty when it is not a URL."""
    parts = urlsplit(url)
    if not parts.hostname:
        return ""
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}" if port else host


def _userinfo(url: str) -> str:
    """The ``user:password`` part of ``url`` (empty when none): taken out of anything logged about it."""
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[0]


_checks: weakref.WeakKeyDictionary[Gateway, UpstreamCheck] = weakref.WeakKeyDictionary()
"""The gateway's upstream check, made on the first hit."""


def _upstream_check(gw: Gateway) -> UpstreamCheck | None:
    if not gw.providers:
        return None
    check = _checks.get(gw)
    if check is None or check.provider is not gw.providers[0]:
        check = _checks[gw] = UpstreamCheck(gw.providers[0])
    return check


def _operator(request: Request, gw: Gateway) -> bool:
    """Whether the caller may see the detail: API keys are configured and it presented a valid one."""
    if not gw.settings.api_key_list:
        return False
    try:
        return identity(request, gw.settings) != ANONYMOUS
    except GatewayError:
        return False


@router.get("/readyz", summary="Upstream (and Redis) reachable")
async def readyz(request: Request) -> JSONResponse:
    gw = gateway(request)
    outcomes: dict[str, Outcome] = {}
    check = _upstream_check(gw)
    if check is not None:
        outcomes["upstream"] = await check.outcome()
    if gw.replicas is not None:
        outcomes["redis"] = Outcome(*gw.replicas.readiness())
    if gw.hub.shutting_down:
        outcomes["server"] = Outcome("shutting down", "shutting down")
    ok = all(o.ok for o in outcomes.values())
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable",
                            "checks": {name: o.word for name, o in outcomes.items()}}
    if _operator(request, gw):
        body["detail"] = {name: o.detail for name, o in outcomes.items()}
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(gateway(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/", include_in_schema=False)
async def index() -> Response:
    page = WEB_DIR / "index.html"
    if not page.exists():
        return Response("ssegate: the chat page is not installed\n", media_type="text/plain")
    return FileResponse(page, headers={"Cache-Control": "no-cache"})
