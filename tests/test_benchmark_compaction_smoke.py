"""The compaction benchmark on tiny sizes (Strata alone, 4 MiB, 4 s loads): keeps
`python -m benchmarks.compaction` working end to end (fill, the loads, the switch to
`cleanup.policy=compact`, the cleaner's figures, the store measured). Its figures are
only checked for being there and consistent: a shared CI machine says nothing about
performance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_compaction_benchmark_runs_on_a_tiny_log(tmp_path: Path) -> None:
    out = tmp_path / "compaction.json"
    args = ["--systems", "strata", "--size-mib", "4", "--keys", "500", "--seconds", "4"]
    args += ["--rate-mb", "1", "--store-wait-s", "1"]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.compaction", *args, "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        timeout=180,
        capture_output=True,
    )
    strata = json.loads(out.read_text())["systems"]["strata"]
    assert "error" not in strata, strata
    f = strata["figures"]
    assert f["cleaner_mb_per_s"] > 0
    assert f["produce_p99_ms_baseline"] > 0 and f["produce_p99_ms_while_cleaning"] > 0
    assert strata["details"]["cleaner"]["runs"] >= 1
    assert strata["details"]["cleaner"]["bytes"] > 0
    assert f["store_bytes_before"] > 4 * 1024 * 1024
