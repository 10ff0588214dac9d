"""Compile ssegate's hot modules to C extensions with mypyc (``make compile``; ``make install`` runs it).

The modules listed in ``pyproject.toml`` under ``[tool.ssegate.compile]`` are the ones every stream runs through
(HTTP glue, routing, the generation, the event log, the upstream client and readers, the encoders). mypyc turns
their strictly typed source into one C extension, built in place: ``src/ssegate/**/<module>.cpython-*.so`` next
to each source, and one shared library ``src/<hash>__mypyc.cpython-*.so``. Python imports an extension before a
source of the same name, so the gateway runs the compiled code whenever it is there, and the source when it is
not (``python scripts/compile.py --remove``, or a machine without a C compiler: the same behaviour, slower).

A compiled module is a snapshot of its source: after an edit, ``make compile`` again (``make test`` and
``make run`` do it when a source changed; ``tests/conftest.py`` refuses to run tests on a stale build).
Every build starts by removing the previous one, so a module taken off the list is not left compiled.

    python scripts/compile.py            # build (about 100 s on two cores)
    python scripts/compile.py --remove   # back to the Python source
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
BUILD = ROOT / "build" / "mypyc"


def modules() -> list[str]:
    """The source files to compile, relative to ``src/``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["ssegate"]["compile"]["modules"])


def built() -> list[Path]:
    """The extension files of the current build (empty when the source runs)."""
    return sorted([*SRC.glob("*__mypyc*.so"), *(SRC / "ssegate").rglob("*.so")])


def remove() -> None:
    for path in built():
        path.unlink()
    shutil.rmtree(BUILD, ignore_errors=True)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    files = modules()
    missing = [f for f in files if not (SRC / f).is_file()]
    if missing:
        raise SystemExit(f"compile: no such module in src/: {', '.join(missing)}")
    remove()
    os.chdir(SRC)  # in-place extensions land next to their sources, the shared library in src/
    extensions = mypycify(["--config-file", str(ROOT / "pyproject.toml"), *files], opt_level="3",
                          target_dir=str(BUILD / "c"))
    setup(name="ssegate-compiled", ext_modules=extensions, script_args=[
        "--quiet", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp"), "--build-lib", str(BUILD / "lib"),
    ])
    print(f"compile: {len(files)} modules compiled with mypyc ({len(built())} extension files in src/)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python scripts/compile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--remove", action="store_true", help="remove the compiled modules: the source runs")
    args = parser.parse_args()
    if args.remove:
        remove()
        print("compile: compiled modules removed; the Python source runs")
    else:
        build()


if __name__ == "__main__":
    sys.exit(main())
