"""``python -m bench.launch_ssegate --client NAME serve ...``: ``ssegate serve`` with another upstream HTTP client.

The A/B of upstream clients changes the client and nothing else: before anything builds a gateway, this puts
the variant's ``Pool`` (``bench/clients``) in place of ``ssegate.upstream.httpclient.Pool``, and of the name
``ssegate.gateway`` imported it under, then runs ssegate's own command line with the remaining arguments
(``--client httpclient`` changes nothing: the same launcher for every side of the A/B). One worker only: the
swap is made in this process.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .clients import CLIENTS

__all__ = ["install"]


def install(client: str) -> None:
    """Make every gateway built from now on in this process use ``client``'s ``Pool``."""
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
