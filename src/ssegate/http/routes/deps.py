"""Shared request plumbing for the routers: the gateway state and the caller's identity."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import HTTPConnection

from ..auth import identity

if TYPE_CHECKING:
    from ...gateway import Gateway

__all__ = ["caller", "gateway"]


def gateway(conn: HTTPConnection) -> Gateway:
    return cast("Gateway", conn.app.state.gateway)


def caller(conn: HTTPConnection) -> str:
    gw = gateway(conn)
    return identity(conn, gw.settings, gw.routing.client_keys)
