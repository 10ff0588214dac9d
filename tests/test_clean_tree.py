"""The suite leaves the git checkout as it found it: this test runs after all the others (``tests/support/
clean_tree.py`` orders it and notes ``git status`` at the start of the session)."""

from __future__ import annotations

import pytest

from tests.support.clean_tree import STATE, changes, tree_state


def test_the_suite_leaves_the_checkout_as_it_found_it(pytestconfig: pytest.Config) -> None:
    """Regression: a run of the suite rewrote ``docs/reliability.md``, a tracked file, so ``make test`` left
    ``git status`` dirty. No test may write into the checkout outside its ignored paths."""
    before = pytestconfig.stash.get(STATE, None)
    if before is None:
        pytest.skip("not a git checkout: nothing to compare")
    after = tree_state()
    assert after is not None
    changed = changes(before, after)
    assert not changed, ("the suite changed the checkout (write test outputs to tmp_path, test-output/ or "
                         "bench/results/):\n  " + "\n  ".join(changed))
