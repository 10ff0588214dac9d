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


LAYERS = [
    {"__main__"},
    {"cli"},
    {"serve"},
    {"http.standalone"},
    {"gateway"},
    {"http", "cluster", "obs", "routing"},
    {"upstream"},
    {"core", "client"},
    {"settings", "__init__"},
    {"parts", "errors", "sse", "plugins", "__about__"},
]
"""The README's architecture drawing, top to bottom: a module imports only from its own part of the package or
from a lower row."""


def _layer(module: str) -> str:
    parts = module.split(".")[1:]  # without "ssegate"
    if parts[:2] == ["http", "standalone"]:
        return "http.standalone"
    return parts[0] if parts else "__init__"


def _runtime_imports(path: Path, module: str) -> set[str]:
    """The ``ssegate`` modules ``path`` imports when it runs (not those under ``if TYPE_CHECKING:``)."""
    import ast

    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
            elif node.module and node.module.split(".")[0] == "ssegate":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ssegate"}
    return found


def test_the_architecture_drawing_holds() -> None:
    """The README's architecture section: every import that runs points down (or stays in its own part)."""
    src = ROOT / "src"
    rank = {name: i for i, row in enumerate(LAYERS) for name in row}
    upward = []
    for path in sorted((src / "ssegate").rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        here = _layer(module)
        assert here in rank, f"{module}: a part of the package the drawing does not show ({here})"
        for target in _runtime_imports(path, module):
            there = _layer(target)
            if there != here and rank[there] <= rank[here]:
                upward.append(f"{module} imports {target}")
    assert upward == [], upward
