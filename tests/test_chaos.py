"""The chaos harness, CI-sized: one fault of each kind against three brokers (object
durability, etcd and moto on loopback), then the checker's verdict read from results.json.

The longer campaigns (hundreds of faults, both durability modes) are run by hand with the
same command and reported in README.md's chaos table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chaos.schedule import KINDS
from devkit.etcd import etcd_binary

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
    # Opt-in while seed 3 still finds an acknowledged record appended twice around an
    # etcd_cut (every lease lost at once: the old leader's paused upload retried after the
    # partition was taken from it), an open broker bug (README, Faults). Run with
    # STRATA_CHAOS_E2E=1 to see it.
    pytest.mark.skipif(
        os.environ.get("STRATA_CHAOS_E2E") != "1",
        reason="opt-in (STRATA_CHAOS_E2E=1): finds an open duplicate-append bug (etcd_cut)",
    ),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("chaos")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--faults", str(len(KINDS)), "--seed", "3"]
        + ["--durability", "object", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results_path = out / "results.json"
    assert results_path.is_file(), proc.stderr[-4000:]
    assert "verdict" in proc.stdout and "acknowledged" in proc.stdout  # the printed table
    return {**json.loads(results_path.read_text()), "_stdout": proc.stdout}


def test_every_acknowledged_record_is_read_back_once_in_order_at_its_offset(
    run: dict[str, Any],
) -> None:
    r = run
    assert r["faults"] == dict.fromkeys(sorted(KINDS), 1)
    assert r["acknowledged"] > 2000, r["errors"]
    for violation in ("lost", "duplicated", "misplaced", "reordered", "phantom", "divergent"):
        assert r[violation] == 0, (violation, r["checker"]["offenders"])
    assert r["commit_regressions"] == 0, r["checker"]["offenders"]
    assert r["relocated"] == 0  # object mode has no permitted loss window
    assert r["reads"] >= r["acknowledged"] - r["unreadable"], "the group read too little"
    assert not r["broker_crashes"], r["broker_crashes"]
