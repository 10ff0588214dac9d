"""ssegate: a fast LLM streaming gateway, and a library for your own FastAPI app (CONTRACT §10).

Tokens over Server-Sent Events, cancel on disconnect, typed errors, resumable streams. The public names are
listed in ``__all__``; they are imported on first use (PEP 562), so ``import ssegate.client`` stays light (no
FastAPI, no Redis client, no server).
"""

import importlib as _importlib
import typing as _typing

from .__about__ import __version__
from .errors import (
    ClientError,
    ConfigError,
    EventLogUnavailable,
    GatewayError,
    GenerationLost,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    ShuttingDown,
    Unauthorized,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamRejected,
    UpstreamTimeout,
)
from .parts import Finish, Part, Reasoning, ToolCallDelta, ToolCallStart, Usage

if _typing.TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .core.request import ChatRequest
    from .gateway import Gateway
    from .http.standalone import create_app
    from .settings import Settings
    from .sse import ServerSentEvent, SSEDecoder
    from .upstream.base import Provider, Sink

_LAZY = {
    "AsyncClient": "ssegate.client",
    "ChatRequest": "ssegate.core.request",
    "Client": "ssegate.client",
    "Gateway": "ssegate.gateway",
    "Provider": "ssegate.upstream.base",
    "SSEDecoder": "ssegate.sse",
    "ServerSentEvent": "ssegate.sse",
    "Settings": "ssegate.settings",
    "Sink": "ssegate.upstream.base",
    "create_app": "ssegate.http.standalone",
}

__all__ = [
    "AsyncClient",
    "ChatRequest",
    "Client",
    "ClientError",
    "ConfigError",
    "EventLogUnavailable",
    "Finish",
    "Gateway",
    "GatewayError",
    "GenerationLost",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "Overloaded",
    "Part",
    "PayloadTooLarge",
    "Provider",
    "RateLimited",
    "Reasoning",
    "SSEDecoder",
    "ServerSentEvent",
    "Settings",
    "ShuttingDown",
    "Sink",
    "ToolCallDelta",
    "ToolCallStart",
    "Unauthorized",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamRefused",
    "UpstreamRejected",
    "UpstreamTimeout",
    "Usage",
    "__version__",
    "create_app",
]


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ssegate' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
