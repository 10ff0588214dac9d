"""The command line: ``ssegate serve``, ``ssegate chat``, ``ssegate --version``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .__about__ import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssegate", description="A fast LLM streaming gateway (Server-Sent Events).")
    parser.add_argument("--version", action="version", version=f"ssegate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway", description="Run the gateway (settings: SSEGATE_*).")
    serve.add_argument("--host", help="bind address [127.0.0.1]")
    serve.add_argument("--port", type=int, help="port [8000]")
    serve.add_argument("--provider", help="upstream kind: demo, openai, anthropic or a plugin's name [demo]")
    serve.add_argument("--model", help="default model name")
    serve.add_argument("--upstream-url", help="upstream base URL, e.g. http://127.0.0.1:11434/v1")
    serve.add_argument("--workers", type=int, help="worker processes [1]")
    serve.add_argument("--config", help="model routing file (TOML; docs/models.md), reloaded on SIGHUP")

    chat = sub.add_parser("chat", help="stream an answer to the terminal",
                          description="Stream an answer to the terminal; Ctrl-C cancels it on the server.")
    chat.add_argument("prompt", nargs="?", help="the question; omit it for an interactive conversation")
    chat.add_argument("--url", default=os.environ.get("SSEGATE_URL", "http://127.0.0.1:8000"),
                      help="gateway URL [http://127.0.0.1:8000]")
    chat.add_argument("--model", help="model name")
    chat.add_argument("--api-key", default=os.environ.get("SSEGATE_API_KEY"), help="API key [$SSEGATE_API_KEY]")
    chat.add_argument("--json", action="store_true", help="print the raw events as JSON lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .serve import serve

        overrides = {
            k: v
            for k, v in {
                "host": args.host, "port": args.port, "provider": args.provider, "model": args.model,
                "upstream_url": args.upstream_url, "workers": args.workers, "config": args.config,
            }.items()
            if v is not None
        }
        return serve(overrides)
    if args.command == "chat":
        from .client.chat_cli import run_chat

        code: int = run_chat(args)
        return code
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
