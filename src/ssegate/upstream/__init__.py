"""Providers: the embedded ``demo`` model and remote upstreams, behind one protocol (``base.py``).

Built-in providers are registered in ``REGISTRY``; third-party packages add theirs through the
``ssegate.providers`` entry point group (a callable ``(settings, base_url, session) -> Provider``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from .base import ChatRequest, Finish, Message, Provider, ProviderEvent, Usage

if TYPE_CHECKING:
    from ..settings import Settings
    from .relay import UpstreamSession

__all__ = [
    "REGISTRY",
    "ChatRequest",
    "Finish",
    "Message",
    "Provider",
    "ProviderEvent",
    "Usage",
    "build_providers",
]

Factory = Callable[["Settings", str, "UpstreamSession"], Provider]


def _demo(settings: Settings, base_url: str, session: UpstreamSession) -> Provider:
    from .demo import DemoProvider

    return DemoProvider(ttft_s=settings.demo_ttft_s, tokens_per_s=settings.demo_tokens_per_s)


def _openai(settings: Settings, base_url: str, session: UpstreamSession) -> Provider:
    from .openai import OpenAIProvider

    return OpenAIProvider(base_url or "https://api.openai.com/v1", settings.resolved_api_key(), session)


def _anthropic(settings: Settings, base_url: str, session: UpstreamSession) -> Provider:
    from .anthropic import AnthropicProvider

    return AnthropicProvider(base_url or "https://api.anthropic.com/v1", settings.resolved_api_key(), session)


REGISTRY: dict[str, Factory] = {"demo": _demo, "openai": _openai, "anthropic": _anthropic}


def _load_plugins() -> None:
    for ep in entry_points(group="ssegate.providers"):
        REGISTRY.setdefault(ep.name, ep.load())


def build_providers(settings: Settings, session: UpstreamSession) -> list[Provider]:
    """The primary upstream followed by the fallbacks, in the order they are tried."""
    _load_plugins()
    factory = REGISTRY[settings.provider]
    urls = settings.upstream_urls or [""]
    return [factory(settings, url, session) for url in urls]
