"""Which provider kinds exist: the built-in ones and those installed packages declare (entry points).

A package adds a provider by declaring an entry point in the ``ssegate.providers`` group, naming a factory
``(settings, base_url, api_key, pool) -> Provider`` (see ``upstream/__init__.py``). This module only lists the
names, without loading any plugin, so that settings can be checked before anything is built.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

__all__ = ["BUILTIN_PROVIDERS", "ENTRY_POINT_GROUP", "plugin_entry_points", "provider_names"]

BUILTIN_PROVIDERS = ("demo", "openai", "anthropic")
ENTRY_POINT_GROUP = "ssegate.providers"


def plugin_entry_points() -> list[EntryPoint]:
    """The installed plugins' entry points (a name already taken by a built-in provider is not listed)."""
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN_PROVIDERS]


def provider_names() -> list[str]:
    """Every provider name this process knows: the built-in ones, then the installed plugins'."""
    return [*BUILTIN_PROVIDERS, *(ep.name for ep in plugin_entry_points())]
