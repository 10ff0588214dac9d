"""Operations (CONTRACT §8): ``/healthz``, ``/readyz``, ``/metrics``, and the chat page at ``/``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, JSONResponse, Response

from ...errors import GatewayError
from .deps import gateway

__all__ = ["WEB_DIR", "router"]

router = APIRouter(tags=["ops"])
WEB_DIR = Path(__file__).resolve().parents[2] / "web"


@router.get("/healthz", summary="Alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="Upstream (and Redis) reachable")
async def readyz(request: Request) -> JSONResponse:
    gw = gateway(request)
    checks: dict[str, str] = {}
    ok = True
    for provider in gw.providers[:1]:
        try:
            await asyncio.wait_for(provider.check(), timeout=5.0)
            checks[provider.label] = "ok"
        except (GatewayError, TimeoutError) as exc:
            ok = False
            checks[provider.label] = str(exc) or type(exc).__name__
    if gw.replicas is not None:
        checks["redis"] = "ok" if gw.replicas.healthy else "unreachable"
        ok = ok and gw.replicas.healthy
    if gw.hub.shutting_down:
        ok = False
        checks["server"] = "shutting down"
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(gateway(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/", include_in_schema=False)
async def index() -> Response:
    page = WEB_DIR / "index.html"
    if not page.exists():
        return Response("ssegate: the chat page is not installed\n", media_type="text/plain")
    return FileResponse(page, headers={"Cache-Control": "no-cache"})
