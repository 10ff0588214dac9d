"""The docs that are generated stay generated, and the public API is what ``__all__`` says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ssegate

ROOT = Path(__file__).resolve().parents[1]


def test_readme_generated_blocks_are_current() -> None:
    """The CLI help and the settings table in README.md come from the code (scripts/gen_docs.py)."""
    proc = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_public_api_matches_all() -> None:
    public = {name for name in dir(ssegate) if not name.startswith("_")}
    exported = set(ssegate.__all__)
    assert exported <= set(dir(ssegate))
    modules = {"cli", "client", "cluster", "core", "errors", "gateway", "http", "obs", "parts", "plugins", "routing",
               "settings", "sse", "upstream"}
    assert public - exported - modules == set()


def test_version_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "ssegate", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"ssegate {ssegate.__version__}"


def test_every_public_error_is_exported() -> None:
    """Every class of the error tree (``errors.py``) is reachable as ``ssegate.<Name>``, as the README promises."""
    from ssegate import errors

    classes = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    assert classes <= set(ssegate.__all__), classes - set(ssegate.__all__)

