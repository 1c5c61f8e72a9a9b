"""The chaos harness, CI-sized: one fault of each kind against three brokers (object
durability, etcd and moto on loopback), then the checker's verdict read from results.json.

The longer campaigns (hundreds of faults, both durability modes) are run by hand with the
same command and reported in README.md's chaos table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.chaos.schedule import KINDS
from devkit.etcd import etcd_binary

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
]


def test_a_run_with_every_kind_of_fault_loses_duplicates_and_reorders_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "chaos"
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
    r = json.loads(results_path.read_text())
    assert "verdict" in proc.stdout and "acknowledged" in proc.stdout
    assert r["faults"] == dict.fromkeys(sorted(KINDS), 1)
    assert r["acknowledged"] > 2000, r["errors"]
    assert r["reads"] >= r["acknowledged"], "the group read less than was acknowledged"
    for violation in ("lost", "duplicated", "misplaced", "reordered", "phantom", "divergent"):
        assert r[violation] == 0, (violation, r["checker"]["offenders"])
    assert r["commit_regressions"] == 0, r["checker"]["offenders"]
    assert r["final_records"] >= r["acknowledged"]
    assert r["relocated"] == 0  # object mode has no permitted loss window
    assert not r["broker_crashes"], r["broker_crashes"]
    assert r["group_caught_up"]
    # every fault healed into a cluster that acknowledged on every partition again, except
    # a full WAL disk: the WAL refuses appends for good after ENOSPC (the broker answers
    # KAFKA_STORAGE_ERROR until it restarts), a finding reported with the campaign
    assert set(r["unrecovered"]) <= {"disk_full"}, r["fault_events"]
    assert r["ok"] and proc.returncode == 0, proc.stdout[-3000:]
