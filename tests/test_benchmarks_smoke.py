"""The benchmark harness in smoke mode: one command, Strata only, seconds per workload.

Keeps `python -m benchmarks run` working; the figures themselves are checked only for being
there and positive (a 2-core CI machine says nothing about performance). Kafka's JVM is left out:
too heavy for CI here, and the full runs that compare with it are manual.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

EXPECTED_FIGURES = [
    *(
        f"produce_{size}b_{parts}p_{unit}"
        for size in (1024, 100)
        for parts in (6, 60)
        for unit in ("mb_s", "msgs_s")
    ),
    "tail_consume_mb_s",
    "catchup_cold_mb_s",
    "e2e_latency_p50_ms",
    "e2e_latency_p99_ms",
    "e2e_latency_p999_ms",
    "rebalance_join_ms",
    *(
        f"txn_{n}_{what}"
        for n in (100, 1000)
        for what in ("mb_s", "msgs_s", "commit_p50_ms", "commit_p99_ms")
    ),
    "txn_consume_read_uncommitted_mb_s",
    "txn_consume_read_committed_mb_s",
    "txn_read_committed_ratio",
    "restart_s",
    "broker_peak_rss_mib",
]
OBJECT_FIGURES = [
    "catchup_ratio_to_direct",
    "object_puts_per_gib",
    "object_ack_object_p99_ms",
    "object_ack_wal_p99_ms",
]
PHYSICAL = [
    "loopback_tcp_mb_s",
    "disk_fdatasync_mb_s",
    "disk_sync_4k_p50_ms",
    "disk_sync_4k_p99_ms",
    "disk_sync_4k_p999_ms",
    "disk_cold_read_mb_s",
]


def _positive(fig: dict) -> bool:
    return (
        fig["n"] >= 1
        and all(v > 0 and math.isfinite(v) for v in fig["values"])
        and fig["min"] <= fig["median"] <= fig["max"]
    )


@pytest.mark.slow
def test_smoke_run_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--smoke",
            "--systems",
            "strata,strata-s3",
            "--out",
            str(out),
            "--data-parent",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=480,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )

    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "smoke"
    strata = results["systems"]["strata"]
    assert strata["available"] and not strata.get("failed"), strata
    assert not strata["failures"], strata["failures"]
    for key in EXPECTED_FIGURES:
        assert key in strata["figures"], f"missing {key}: {sorted(strata['figures'])}"
        assert _positive(strata["figures"][key]), (key, strata["figures"][key])
    for key in PHYSICAL:
        assert _positive(results["physical"]["figures"][key]), key

    # both Strata systems measure their object store: the catch-up came from the objects
    # (the broker fetched about their size from the store), PUTs were counted, and both
    # durability modes acknowledged every record
    s3 = results["systems"]["strata-s3"]
    assert s3["available"] and not s3.get("failed"), s3
    assert not s3["failures"], s3["failures"]
    for system in (strata, s3):
        for key in OBJECT_FIGURES:
            assert key in system["figures"], f"missing {key}: {sorted(system['figures'])}"
            assert _positive(system["figures"][key]), (key, system["figures"][key])
        catchup = system["runs"]["catchup"][0]["object_store"]
        assert catchup["broker_fetched_bytes"] >= 0.9 * catchup["objects_bytes"], catchup
    assert "scale_out" in results["skipped"]

    # every Strata figure with a physical limit is also given as a ratio to it
    cmp = results["comparison"]["strata"]["figures"]
    assert cmp["produce_1024b_6p_mb_s"]["ratio_to_limit"] > 0
    assert cmp["catchup_cold_mb_s"]["ratio_to_limit"] > 0
    assert cmp["e2e_latency_p99_ms"]["ratio_to_limit"] > 0

    md = (out / "results.md").read_text()
    assert "| workload |" in md and "produce 1 KiB msgs, 6 partitions" in md
    assert "strata-s3" in md and "scale-out" in md and "## Object store" in md
    assert "## Transaction targets" in md and "read_committed ÷ read_uncommitted" in md
    # the README's figures are generated once from a results.json, between its markers
    from benchmarks import readme

    page = tmp_path / "README.md"
    page.write_text(f"# x\n\n## Benchmarks\n\n{readme.BEGIN}\nstale\n{readme.END}\n\n## Next\n")
    gen = subprocess.run(
        [sys.executable, "-m", "benchmarks", "readme", "--results", str(out / "results.json")]
        + ["--readme", str(page)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gen.returncode == 0, gen.stdout + gen.stderr
    text = page.read_text()
    assert "stale" not in text and text.endswith(f"{readme.END}\n\n## Next\n")
    for once in ("| workload |", "### Results", "### Object store", "| physical limit | unit |"):
        assert text.count(once) == 1, (once, text)
    png = out / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # nothing left running: the harness stops its brokers and its load generators
    leftover = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert not leftover, f"processes left running: {leftover}"
