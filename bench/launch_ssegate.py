"""``python -m bench.launch_ssegate --client NAME serve ...``: ``ssegate serve`` with another upstream HTTP client.

The A/B of upstream clients changes the client and nothing else: before anything builds a gateway, this puts
the variant's ``Pool`` (``bench/clients``) in place of ``ssegate.upstream.httpclient.Pool``, and of the name
``ssegate.gateway`` imported it under, then runs ssegate's own command line with the remaining arguments
(``--client httpclient`` changes nothing: the same launcher for every side of the A/B). One worker only: the
swap is made in this process.

Every side runs ssegate from its Python source, also where ``make compile`` built the compiled modules: those
check the types they are given, and a variant's ``Pool`` is not ssegate's. So the A/B compares the clients
under the same interpreted gateway; the compiled gateway is the ``ssegate`` target of the other scenarios.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from .clients import CLIENTS

__all__ = ["from_source", "install"]


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports ssegate's modules from their ``.py`` source where a compiled extension stands beside it."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name.partition(".")[0] != "ssegate":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".so"):
            return spec
        return importlib.util.spec_from_file_location(name, spec.origin.split(".cpython-")[0] + ".py")


def from_source() -> None:
    """From now on, import ssegate's modules from their source (before anything imports ssegate)."""
    if "ssegate" in sys.modules:
        raise RuntimeError("from_source() must come before ssegate is imported")
    sys.meta_path.insert(0, _SourceFirst())


def install(client: str) -> None:
    """Make every gateway built from now on in this process use ``client``'s ``Pool``."""
    from_source()
    pool = importlib.import_module(CLIENTS[client]).Pool
    import ssegate.gateway
    import ssegate.upstream.httpclient

    ssegate.upstream.httpclient.Pool = pool  # type: ignore[misc]
    ssegate.gateway.Pool = pool  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launch_ssegate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=sorted(CLIENTS), required=True)
    args, rest = parser.parse_known_args(argv)
    if "--workers" in rest:
        parser.error("one worker only: the client is swapped in this process")
    install(args.client)
    from ssegate.cli import main as ssegate_main

    return ssegate_main(rest)


if __name__ == "__main__":
    sys.exit(main())
