"""``python -m bench.baselines NAME --port P --upstream URL``: serve one baseline on uvicorn, one worker."""

from __future__ import annotations

import argparse
import importlib
import os

from ..proc import raise_fd_limit
from . import NAMES, UPSTREAM_ENV


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--upstream", required=True, help="OpenAI base URL, e.g. http://127.0.0.1:9000/v1")
    args = parser.parse_args()
    raise_fd_limit()
    os.environ[UPSTREAM_ENV] = args.upstream
    module = importlib.import_module(f"bench.baselines.{args.name}")
    import uvicorn

    uvicorn.run(module.app, host=args.host, port=args.port, workers=1, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, backlog=4096)


if __name__ == "__main__":
    main()
