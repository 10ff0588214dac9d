"""Regenerate the generated blocks of README.md: the CLI help and the settings table.

``python scripts/gen_docs.py`` rewrites them; ``--check`` exits 1 when they are stale (a test runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ssegate.cli import build_parser
from ssegate.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def cli_help() -> str:
    parser = build_parser()
    parts = ["$ ssegate --help", parser.format_help().rstrip()]
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        parts += ["", f"$ ssegate {name} --help", p.format_help().rstrip()]
    return "```text\n" + "\n".join(parts) + "\n```"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default in ("", None) else f"`{default}`"
        if isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        desc = (field.description or "").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `SSEGATE_{name.upper()}` | {shown} | {desc} |")
    return "\n".join(rows)


BLOCKS = {"CLI": cli_help, "SETTINGS": settings_table}


def render(text: str) -> str:
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        text = pattern.sub(lambda m, fn=fn: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main() -> int:
    old = README.read_text()
    new = render(old)
    if "--check" in sys.argv:
        if new != old:
            print("README.md is stale: run `python scripts/gen_docs.py`", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
