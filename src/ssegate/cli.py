"""The command line: ``ssegate serve``, ``ssegate chat``, ``ssegate --version``.

A usage error is one line on stderr and exit status 2, like a refused setting (``serve.py``): the flags of
``ssegate serve`` are read as text and checked by the settings, so ``--port abc`` and ``SSEGATE_PORT=abc``
get the same message, naming what the user typed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .__about__ import __version__

__all__ = ["SERVE_FLAGS", "build_parser", "main"]

SERVE_FLAGS = {
    "host": ("--host", "HOST", "bind address [127.0.0.1]"),
    "port": ("--port", "PORT", "port [8000]; 0 picks a free one"),
    "provider": ("--provider", "NAME", "upstream kind: demo, openai, anthropic or a plugin's name [demo]"),
    "model": ("--model", "MODEL", "default model name"),
    "upstream_url": ("--upstream-url", "URL", "upstream base URL, e.g. http://127.0.0.1:11434/v1"),
    "workers": ("--workers", "N", "worker processes [1]; more than one needs SSEGATE_REDIS_URL"),
    "log_format": ("--log-format", "FORMAT", "auto, text or json [auto: text on a terminal, else json]"),
    "config": ("--config", "FILE", "model routing file (TOML, docs/models.md), reloaded on SIGHUP"),
}
"""Settings that ``ssegate serve`` also takes as flags: setting name → (flag, metavar, help)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, no usage dump: what is wrong, and where the help is."""
        self.exit(2, f"ssegate: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ssegate", description="A fast LLM streaming gateway (Server-Sent Events).")
    parser.add_argument("--version", action="version", version=f"ssegate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the gateway",
        description="Run the gateway. Every setting is an SSEGATE_* environment variable (see the README); "
                    "these flags override them. Docs: /docs on the running server (the API), the README.",
    )
    for name, (flag, metavar, text) in SERVE_FLAGS.items():
        serve.add_argument(flag, dest=name, metavar=metavar, help=text)

    chat = sub.add_parser("chat", help="stream an answer to the terminal",
                          description="Stream an answer to the terminal; Ctrl-C cancels it on the server.")
    chat.add_argument("prompt", nargs="?", help="the question; omit it for an interactive conversation")
    chat.add_argument("--url", default=os.environ.get("SSEGATE_URL", "http://127.0.0.1:8000"),
                      help="gateway URL [$SSEGATE_URL or http://127.0.0.1:8000]")
    chat.add_argument("--model", help="model name")
    chat.add_argument("--api-key", default=os.environ.get("SSEGATE_API_KEY"), help="API key [$SSEGATE_API_KEY]")
    chat.add_argument("--json", action="store_true", help="print the raw events as JSON lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .serve import serve

        given = {name: getattr(args, name) for name in SERVE_FLAGS if getattr(args, name) is not None}
        return serve(given, {name: SERVE_FLAGS[name][0] for name in given})
    if args.command == "chat":
        from .client.chat_cli import run_chat

        code: int = run_chat(args)
        return code
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
