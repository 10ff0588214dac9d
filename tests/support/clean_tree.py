"""A pytest plugin: the suite leaves the git checkout as it found it.

``make test`` must never rewrite a tracked file nor leave a new file outside the ignored paths (test outputs go
to ``test-output/``, ``bench/results/`` or a temporary directory; ``docs/reliability.md`` is rewritten only by
``make reliability``). At the start of the session this plugin notes ``git status`` for the project's directory:
every modified, deleted or untracked (not ignored) file, with a hash of its content. ``tests/test_clean_tree.py``,
which this plugin runs after every other test, takes the same note again and fails listing what differs.

Comparing with the start, not with a clean tree, lets the suite run on a checkout with changes of its own (a
developer's); in a fresh clone (CI) the start is clean, so the test asserts that ``git status`` is clean at the end.
Outside a git checkout (or without ``git``) there is nothing to compare and the test says so (a skip).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

__all__ = ["STATE", "changes", "tree_state"]

TreeState = dict[str, str]
STATE = pytest.StashKey[TreeState | None]()
"""The state at the start of the session (None: not a git checkout)."""
ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, check=True,
                          timeout=60).stdout


def tree_state(root: Path = ROOT) -> TreeState | None:
    """``{path: "<status> <content hash>"}`` of every file under ``root`` that ``git status`` lists (modified,
    added, deleted, renamed, untracked and not ignored); None when ``root`` is not in a git checkout."""
    try:
        top = Path(_git("rev-parse", "--show-toplevel").decode().strip())
        out = _git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", str(root))
    except (OSError, subprocess.SubprocessError):
        return None
    state: TreeState = {}
    fields = iter(out.split(b"\0"))
    for entry in fields:
        if not entry:
            continue
        status, path = entry[:2].decode(), entry[3:].decode(errors="surrogateescape")
        if status[0] in "RC":
            next(fields, None)  # the name it was renamed or copied from
        try:
            digest = hashlib.sha256((top / path).read_bytes()).hexdigest()[:16]
        except OSError:
            digest = "-"  # deleted (or a directory: a nested checkout)
        state[path] = f"{status} {digest}"
    return state


def changes(before: TreeState, after: TreeState) -> list[str]:
    """What differs, one line per path: ``created``, ``changed`` (``<status before> -> <status after>``) or
    ``restored`` (listed before, clean now)."""
    out = []
    for path in sorted(before.keys() | after.keys()):
        was, now = before.get(path), after.get(path)
        if was == now:
            continue
        if was is None:
            kind = "created" if now is not None and now.startswith("??") else "changed"
            out.append(f"{kind}: {path} ({now})")
        elif now is None:
            out.append(f"restored: {path} (was {was})")
        else:
            out.append(f"changed: {path} ({was} -> {now})")
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[STATE] = tree_state()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The check runs last, whatever the order of the others."""
    items.sort(key=lambda item: item.path.name == "test_clean_tree.py")
