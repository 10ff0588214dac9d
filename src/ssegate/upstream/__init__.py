"""Upstreams: the embedded ``demo`` model and remote providers behind one protocol (``base.py``).

Built-in providers are registered in ``REGISTRY`` like any plugin: a third-party package adds its own through
the ``ssegate.providers`` entry-point group, naming a factory ``(settings, base_url, api_key, pool) -> Provider``;
``SSEGATE_PROVIDER`` (or a routing file's ``provider``) then accepts that name. Remote providers share the
process's one keep-alive ``Pool`` (``httpclient.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..plugins import plugin_entry_points
from .base import Provider, Sink

if TYPE_CHECKING:
    from ..settings import Settings
    from .httpclient import Pool

__all__ = ["DEFAULT_URLS", "REGISTRY", "Factory", "Provider", "Sink", "make_provider"]

Factory = Callable[["Settings", str, str, "Pool"], Provider]
"""``(settings, base_url, api_key, pool) -> Provider``."""

DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com/v1"}
"""The base URL a built-in provider uses when it is given none."""


def _demo(settings: Settings, base_url: str, api_key: str, pool: Pool) -> Provider:
    from .demo import DemoProvider

    return DemoProvider(ttft_s=settings.demo_ttft_s, tokens_per_s=settings.demo_tokens_per_s,
                        scripts=settings.demo_scripts)


def _openai(settings: Settings, base_url: str, api_key: str, pool: Pool) -> Provider:
    from .openai import OpenAIProvider

    return OpenAIProvider(base_url or DEFAULT_URLS["openai"], api_key, pool)


def _anthropic(settings: Settings, base_url: str, api_key: str, pool: Pool) -> Provider:
    from .anthropic import AnthropicProvider

    return AnthropicProvider(base_url or DEFAULT_URLS["anthropic"], api_key, pool)


REGISTRY: dict[str, Factory] = {"demo": _demo, "openai": _openai, "anthropic": _anthropic}
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in plugin_entry_points():
        REGISTRY[ep.name] = ep.load()


def make_provider(kind: str, settings: Settings, base_url: str, api_key: str, pool: Pool) -> Provider:
    """A provider of ``kind`` (a built-in or a plugin's name); ``KeyError`` for an unknown kind."""
    _load_plugins()
    return REGISTRY[kind](settings, base_url, api_key, pool)
