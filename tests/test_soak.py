"""The soak in ``make test``: 60 seconds of mixed traffic with faults (``tests/soak.py``; ``make soak`` runs 600 s)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.soak import soak


@pytest.mark.timeout(240)
@pytest.mark.fault_matrix(
    group="Soak", scenario="60 s of mixed traffic: clean, OpenAI-compatible, cancel, resume, client hang-ups at every "
    "stage, slow readers, connection bursts, and every upstream fault",
    expected="every stream ends as its fault calls for; 0 invariant violations at every checkpoint; Python's "
    "allocated blocks grow < 10% from the first half of the run to the second (RSS growth is checked by `make soak`)")
def test_soak_60_seconds(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    report, summary = soak(60, checkpoint_s=15, png=tmp_path / "soak-rss.png")
    record_property("observed", f"{summary['streams']} streams, {summary['faults_injected']} faults, "
                                f"{summary['violations']} violations, RSS at checkpoints "
                                f"{summary['rss_mib']['checkpoints']} MiB, Python blocks "
                                f"{summary['python_blocks']['checkpoints']}")
    assert report.violations == [], report.violations[:20]
    assert summary["streams"] > 500
    assert summary["checkpoints"] >= 3
    assert (tmp_path / "soak-rss.png").stat().st_size > 1000
