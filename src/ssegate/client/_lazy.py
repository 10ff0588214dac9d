"""``httpx``, imported at its first use rather than with ``ssegate.client``.

httpx loads its command-line interface (and with it rich, click and pygments, when they are installed) as it is
imported: about 100 ms that a program which only imports ssegate's client, or ``ssegate chat --help``, should not
pay. ``httpx`` here is a stand-in module whose first attribute lookup imports the real one.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["httpx"]


class _Lazy(ModuleType):
    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, name)


httpx: Any = _Lazy("httpx")
