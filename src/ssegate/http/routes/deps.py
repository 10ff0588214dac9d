"""Shared request plumbing for the routers: the gateway that serves a request, and the caller's identity.

Every ssegate router is mounted through ``Gateway.router`` (or ``Gateway.ops_router``), whose dependency puts
that gateway in the request's scope: the same route modules serve any number of gateways, in ``ssegate serve``
or mounted in an application's own FastAPI app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from starlette.requests import HTTPConnection

from ..auth import identity

if TYPE_CHECKING:
    from ...gateway import Gateway

__all__ = ["SCOPE_KEY", "caller", "gateway"]

SCOPE_KEY = "ssegate.gateway"


def gateway(conn: HTTPConnection) -> Gateway:
    gw: Any = conn.scope.get(SCOPE_KEY)
    if gw is None:
        raise RuntimeError("an ssegate route was mounted without its Gateway: include gate.router, not the module's")
    return cast("Gateway", gw)


def caller(conn: HTTPConnection) -> str:
    gw = gateway(conn)
    return identity(conn, gw.settings, gw.routing.client_keys)
