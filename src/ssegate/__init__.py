"""ssegate: a fast LLM streaming gateway. Tokens over Server-Sent Events, cancel on disconnect,
typed errors, resumable streams."""

from .__about__ import __version__
from .client import AsyncClient, Client
from .errors import (
    ClientError,
    GatewayError,
    GenerationLost,
    InvalidRequest,
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
    UpstreamTimeout,
)
from .http.standalone import create_app
from .settings import Settings
from .sse import ServerSentEvent, SSEDecoder
from .upstream import ChatRequest, Finish, Provider, Usage

__all__ = [
    "AsyncClient",
    "ChatRequest",
    "Client",
    "ClientError",
    "Finish",
    "GatewayError",
    "GenerationLost",
    "InvalidRequest",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Provider",
    "RateLimited",
    "SSEDecoder",
    "ServerSentEvent",
    "Settings",
    "ShuttingDown",
    "Unauthorized",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamRefused",
    "UpstreamTimeout",
    "Usage",
    "__version__",
    "create_app",
]
