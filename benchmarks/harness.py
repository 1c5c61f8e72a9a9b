"""`python -m benchmarks run`: Strata side by side with Apache Kafka, in one run, on this machine.

1. The physical limits, measured first: loopback TCP throughput, sustained 1 MiB
   write+fdatasync throughput and 4 KiB write+fdatasync latency in the data directory, and a
   cold sequential read there.
2. Each system in turn (started here, stopped here, nothing shared): the catch-up read of data
   written earlier with cold caches, the produce matrix with a tail consume, end-to-end latency
   at a fixed offered load, a consumer-group rebalance, the Java client's
   ProducerPerformance / ConsumerPerformance, and transactions (transactional produce at 100
   and 1,000 records per transaction, commit latency, read_committed vs read_uncommitted tail
   consume). Every workload is repeated; the repetitions are interleaved with the other
   workloads of the same system.
3. Every figure as median, min and max over the repetitions; each Strata figure also as a ratio
   to Kafka's and to its physical limit. DIR/results.json, DIR/results.md, DIR/latency.png.

Strata runs twice: `strata`, the embedded default (its log uploaded to a local-directory
object store), and `strata-s3`, the same broker with its log in S3, against a moto server on
loopback that the system starts and stops itself. For both, the object-store figures:

- the catch-up read above comes from the objects (the restart left nothing else), and the same
  objects are then read straight from the backend with the broker's GET size and about its
  concurrency: the catch-up as a ratio to that (target >= 0.5);
- object-store PUTs (and GETs) per GiB ingested at a steady 20 MB/s, uploads and compaction
  included (target <= 100);
- produce latency p50/p99 at 5 MB/s with `--durability object` (acks after the upload) next
  to the default `wal` (acks after the local fdatasync), each on a fresh broker.

Cluster mode (throughput with 1-3 brokers, scale-out) is `python -m benchmarks.cluster`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import javaperf, objectstore, physical, readme, replay, report, workloads
from benchmarks.common import REPO_ROOT, environment, json_default, mount_of, step
from benchmarks.systems import (
    DEFAULT_SYSTEMS,
    REFERENCE,
    SYSTEMS,
    StrataSystem,
    System,
    Unavailable,
)
from benchmarks.workloads import FULL, SMOKE, WORKLOADS, Context, Plan, size_label
from devkit.maven import KafkaUnavailable

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "out"
SMOKE_SYSTEMS = ("strata", "strata-s3")  # a JVM broker is too heavy for CI on 2 cores
# In a smoke run strata-s3 runs only what depends on its backend; its produce matrix, rebalance
# and Java runs are strata's code against a slower store (full runs do them all).
SMOKE_WORKLOADS = {"strata-s3": ("catchup", "latency", "objects")}


# --- figures ------------------------------------------------------------------------------


def figure_specs(plan: Plan) -> list[dict[str, Any]]:
    """Every figure the table can show: key, label, unit, which way is better, its limit.

    `limit` names a physical figure the value is divided by; `rank` says whether it counts when
    the largest gap to Kafka is named (restart time and memory are context, not workloads).
    """
    specs: list[dict[str, Any]] = []

    def add(
        key: str,
        label: str,
        unit: str,
        better: str,
        limit: str | None,
        rank: bool = True,
        group: str = "",
    ):
        specs.append(
            {
                "key": key,
                "label": label,
                "unit": unit,
                "better": better,
                "limit": limit,
                "rank": rank,
                "group": group,
            }
        )

    for size, parts in plan.produce_matrix:
        base = workloads.produce_key(size, parts)
        label = f"produce {size_label(size)} msgs, {parts} partitions, acks=all"
        add(f"{base}_mb_s", label, "MB/s", "higher", "disk_fdatasync_mb_s")
        add(f"{base}_msgs_s", label, "msgs/s", "higher", None)
    add(
        "tail_consume_mb_s",
        "tail consume (hot data, 1 KiB, 6 partitions)",
        "MB/s",
        "higher",
        "loopback_tcp_mb_s",
    )
    add(
        "catchup_cold_mb_s",
        f"catch-up read of {size_label(plan.catchup_bytes)}, cold caches",
        "MB/s",
        "higher",
        "disk_cold_read_mb_s",
    )
    for q in ("p50", "p99", "p999"):
        add(
            f"e2e_latency_{q}_ms",
            f"end-to-end latency {q} at {plan.latency_rate_mb:g} MB/s",
            "ms",
            "lower",
            f"disk_sync_4k_{q}_ms",
        )
    add(
        "rebalance_join_ms",
        f"group rebalance: 1 member joins {plan.rebalance_members}",
        "ms",
        "lower",
        None,
    )
    add(
        "java_produce_mb_s",
        "Java ProducerPerformance, 1 KiB, 6 partitions, acks=all",
        "MB/s",
        "higher",
        "disk_fdatasync_mb_s",
    )
    add(
        "java_consume_mb_s",
        "Java ConsumerPerformance (group), 1 KiB",
        "MB/s",
        "higher",
        "loopback_tcp_mb_s",
    )
    for n in plan.txn_records:
        base = workloads.txn_key(n)
        label = f"transactional produce, {n:,} records/txn, 1 KiB, 6 partitions (target ≥ 1×)"
        add(f"{base}_mb_s", label, "MB/s", "higher", "disk_fdatasync_mb_s", group="txn")
        add(f"{base}_msgs_s", label, "msgs/s", "higher", None, group="txn")
        for q in ("p50", "p99"):
            add(
                f"{base}_commit_{q}_ms",
                f"commit_transaction latency {q}, {n:,} records/txn",
                "ms",
                "lower",
                None,
                group="txn",
            )
    for level in ("read_uncommitted", "read_committed"):
        add(
            f"txn_consume_{level}_mb_s",
            f"tail consume of transactional data, {level}",
            "MB/s",
            "higher",
            "loopback_tcp_mb_s",
            group="txn",
        )
    add(
        "txn_read_committed_ratio",
        "read_committed ÷ read_uncommitted tail consume, same data (target ≥ 0.9)",
        "ratio",
        "higher",
        None,
        rank=False,
        group="txn",
    )
    add(
        "catchup_store_mb_s",
        "catch-up read over the objects' bytes (the same read)",
        "MB/s",
        "higher",
        None,
        group="objects",
    )
    add(
        "catchup_direct_mb_s",
        f"the same objects straight from the backend ({size_label(objectstore.READAHEAD_BYTES)} "
        "GETs)",
        "MB/s",
        "higher",
        None,
        group="objects",
    )
    add(
        "catchup_ratio_to_direct",
        "catch-up read ÷ direct read of the same objects (target ≥ 0.5)",
        "ratio",
        "higher",
        None,
        group="objects",
    )
    add(
        "object_puts_per_gib",
        f"object-store PUTs per GiB at {plan.objects_put_rate_mb:g} MB/s, compaction included "
        "(target ≤ 100)",
        "PUTs/GiB",
        "lower",
        None,
        group="objects",
    )
    add(
        "object_gets_per_gib",
        f"object-store GETs per GiB at {plan.objects_put_rate_mb:g} MB/s",
        "GETs/GiB",
        "lower",
        None,
        group="objects",
    )
    for mode, what in (("object", "acks after upload"), ("wal", "acks after fdatasync")):
        for q in ("p50", "p99"):
            add(
                f"object_ack_{mode}_{q}_ms",
                f"produce latency {q} at {plan.objects_latency_rate_mb:g} MB/s, "
                f"--durability {mode} ({what})",
                "ms",
                "lower",
                None,
                group="objects",
            )
    scale = f"{plan.replay_events:,} events, {plan.replay_sessions:,} sessions"
    for key, label, unit, better in (
        ("replay_p50_ms", "replay one session (HTTP, cold), p50", "ms", "lower"),
        ("replay_p99_ms", "replay one session (HTTP, cold), p99", "ms", "lower"),
        (
            "replay_bytes_pct_of_topic",
            "replay: store bytes per session / topic bytes",
            "%",
            "lower",
        ),
        ("replay_gets_per_session", "replay: store GETs per session", "GETs", "lower"),
        ("replay_index_pct_of_data", "key index size / data size", "%", "lower"),
        ("replay_scan_s", "consumer scan of the topic for one session", "s", "lower"),
        ("replay_speedup_vs_scan", "replay p50 vs that scan", "×", "higher"),
    ):
        add(key, f"{label} ({scale})", unit, better, None, rank=False, group="replay")
    add(
        "restart_s",
        f"restart with {size_label(plan.catchup_bytes)} of data",
        "s",
        "lower",
        None,
        rank=False,
    )
    add(
        "broker_peak_rss_mib",
        "broker peak RSS (VmHWM) over the run",
        "MiB",
        "lower",
        None,
        rank=False,
    )
    return specs


PHYSICAL_SPECS = [
    ("loopback_tcp_mb_s", "loopback TCP, one stream, 1 MiB sends", "MB/s"),
    ("disk_fdatasync_mb_s", "1 MiB append+fdatasync, sustained (median second)", "MB/s"),
    ("disk_sync_4k_p50_ms", "4 KiB append+fdatasync latency p50", "ms"),
    ("disk_sync_4k_p99_ms", "4 KiB append+fdatasync latency p99", "ms"),
    ("disk_sync_4k_p999_ms", "4 KiB append+fdatasync latency p99.9", "ms"),
    ("disk_cold_read_mb_s", "sequential read, evicted from the page cache", "MB/s"),
]


def stats(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "values": [], "n": 0}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "values": vals,
        "n": len(vals),
    }


# --- physical limits ----------------------------------------------------------------------


def measure_physical(workdir: Path, plan: Plan) -> dict[str, Any]:
    values: dict[str, list[float]] = {key: [] for key, _, _ in PHYSICAL_SPECS}
    raw: list[dict[str, Any]] = []
    for rep in range(plan.reps):
        step(f"physical limits, repetition {rep + 1}/{plan.reps}")
        tcp = physical.loopback_tcp(plan.tcp_seconds)
        disk = physical.fdatasync_sustained(workdir, plan.disk_seconds)
        sync = physical.fdatasync_latency(workdir, plan.sync_seconds)
        cold = physical.cold_read(workdir, plan.cold_read_bytes)
        values["loopback_tcp_mb_s"].append(tcp["mb_per_s"])
        values["disk_fdatasync_mb_s"].append(disk["mb_per_s"])
        for q in ("p50", "p99", "p999"):
            values[f"disk_sync_4k_{q}_ms"].append(sync["latency_ms"][q])
        values["disk_cold_read_mb_s"].append(cold["mb_per_s"])
        raw.append(
            {
                "loopback_tcp": tcp,
                "fdatasync_1mib": {k: v for k, v in disk.items() if k != "latency_ms"},
                "fdatasync_4kib": {"latency_ms": sync["latency_ms"], "writes": sync["writes"]},
                "cold_read": cold,
            }
        )
    figures = {
        key: {"label": label, "unit": unit, **stats(values[key])}
        for key, label, unit in PHYSICAL_SPECS
    }
    return {
        "directory": str(workdir),
        "mount": mount_of(workdir),
        "figures": figures,
        "repetitions": raw,
    }


# --- one system ---------------------------------------------------------------------------


def run_system(
    system: System,
    plan: Plan,
    selected: Sequence[str],
    out: Path,
    profile: bool,
    java_classpath: str | None,
) -> dict[str, Any]:
    """Start the system, run every selected workload `plan.reps` times, stop it."""
    ctx = Context(system, plan, out, profile, java_classpath)
    values: dict[str, list[float]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    result: dict[str, Any] = {
        "available": True,
        "description": system.description,
        "notes": notes,
        "runs": runs,
    }

    def record(name: str, r: dict[str, Any]) -> None:
        for k, v in r["figures"].items():
            values.setdefault(k, []).append(v)
        runs.setdefault(name, []).append(r["details"])

    failures: list[dict[str, Any]] = []
    result["failures"] = failures

    def attempt(name: str, fn: Any) -> bool:
        """Run one repetition; if the system fails it, note why, restart it, try once more."""
        for tries in (1, 2):
            try:
                record(name, fn())
                return True
            except (KeyboardInterrupt, KafkaUnavailable):
                raise
            except Exception as e:
                tail = [ln for ln in system.log_tail().splitlines() if ln.strip()][-3:]
                failures.append(
                    {
                        "workload": name,
                        "try": tries,
                        "error": f"{type(e).__name__}: {e}",
                        "log_tail": tail,
                    }
                )
                step(f"  {system.name}: {name} FAILED ({type(e).__name__}: {e}); restarting")
                system.restart()
        return False

    t_start = time.monotonic()
    step(f"{system.name}: starting")
    system.start()
    result["version"] = system.version()
    result["config"] = system.config()
    result["first_startup_seconds"] = system.startup_seconds[0]
    try:
        if "catchup" in selected:
            catchup = workloads.Catchup(ctx)

            def write() -> dict[str, Any]:
                catchup.prepare()
                return {"figures": {}, "details": catchup.write}

            if attempt("catchup_write", write):
                for _ in range(plan.reps):
                    attempt("catchup", catchup.run)
            else:
                notes.append("catch-up read skipped: writing its data failed twice")
        todo = [w for w in ("produce", "latency", "rebalance") if w in selected]
        if "java" in selected:
            if java_classpath is None:
                notes.append("Java client load generator skipped: kafka-tools jars unavailable")
            else:
                todo.append("java")
        if "txn" in selected:
            todo.append("txn")
        if "replay" in selected:
            todo.append("replay")  # Strata: on a fresh broker of its own; Kafka: the scan
        if "objects" in selected and system.is_strata:
            todo.append("objects")  # last: it stops the system's broker and starts it again
        fns = {
            "produce": workloads.produce_workload,
            "latency": workloads.latency_workload,
            "rebalance": workloads.rebalance_workload,
            "java": workloads.java_workload,
            "objects": workloads.objects_workload,
            "replay": replay.replay_workload,
            "txn": workloads.txn_workload,
        }
        for rep in range(plan.reps):
            step(f"{system.name}: repetition {rep + 1}/{plan.reps}")
            ctx.last_rep = rep == plan.reps - 1
            for name in todo:
                attempt(name, lambda name=name: fns[name](ctx))
        mem = system.memory()
        values["broker_peak_rss_mib"] = [mem.get("VmHWM", 0) / (1 << 20)]
        result["memory_end"] = mem
    finally:
        step(f"{system.name}: stopping")
        system.stop()
        result["logs"] = system.save_logs(out)
    result["figures"] = {k: stats(v) for k, v in values.items()}
    result["startup_seconds"] = system.startup_seconds
    result["seconds"] = round(time.monotonic() - t_start, 1)
    if ctx.profiles:
        result["profiles"] = ctx.profiles
    return result


# --- comparison ---------------------------------------------------------------------------


def compare(results: dict[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each Strata figure as a ratio to Kafka's and to its physical limit; the largest gap."""
    phys = results["physical"]["figures"]
    ref = results["systems"].get(REFERENCE, {})
    ref_figs = ref.get("figures", {}) if ref.get("available") else {}
    out: dict[str, Any] = {}
    for name, sysres in results["systems"].items():
        if not sysres.get("available") or not getattr(SYSTEMS[name], "is_strata", False):
            continue
        rows = {}
        for spec in specs:
            fig = sysres["figures"].get(spec["key"])
            if not fig or not fig["n"]:
                continue
            row: dict[str, Any] = {"value": fig["median"]}
            kf = ref_figs.get(spec["key"])
            if kf and kf["n"] and kf["median"] > 0:
                row["kafka"] = kf["median"]
                row["ratio_to_kafka"] = fig["median"] / kf["median"]
                # how many times worse than Kafka (below 1: better than Kafka)
                row["gap"] = (
                    (
                        kf["median"] / fig["median"]
                        if spec["better"] == "higher"
                        else fig["median"] / kf["median"]
                    )
                    if fig["median"] > 0
                    else math.inf
                )
            lim = phys.get(spec["limit"]) if spec["limit"] else None
            if lim and lim["n"] and lim["median"] > 0:
                row["limit_key"] = spec["limit"]
                row["limit"] = lim["median"]
                row["ratio_to_limit"] = fig["median"] / lim["median"]
            rows[spec["key"]] = row
        ranked = sorted(
            (
                (k, r)
                for k, r in rows.items()
                if "gap" in r and next(s for s in specs if s["key"] == k)["rank"]
            ),
            key=lambda kr: -kr[1]["gap"],
        )
        out[name] = {
            "figures": rows,
            "largest_gap": (
                {"key": ranked[0][0], **ranked[0][1]}
                if ranked and ranked[0][1]["gap"] > 1
                else None
            ),
            "gaps_ranked": [(k, r["gap"]) for k, r in ranked],
        }
    return out


# --- the run ------------------------------------------------------------------------------


def hardware() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    java = ""
    with contextlib.suppress(Exception):
        p = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        java = (p.stderr or p.stdout).splitlines()[0]
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "java": java,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = SMOKE if args.smoke else FULL
    if args.reps:
        plan = plan.__class__(**{**asdict(plan), "reps": args.reps})
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    selected = [w.strip() for w in (args.workloads or ",".join(WORKLOADS)).split(",") if w.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="strata-bench-", dir=args.data_parent))
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "strata-vs-kafka",
        "mode": "smoke" if args.smoke else "full",
        "command": "python -m benchmarks "
        + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {**environment(), **hardware()},
        "plan": asdict(plan),
        "units": {"MB": "10^6 bytes", "MiB": "2^20 bytes", "latency": "ms"},
        "systems_requested": names,
        "workloads": selected,
        "systems": {},
        "skipped": {
            "scale_out": "cluster mode is measured by `python -m benchmarks.cluster`",
        },
        "notes": [],
    }
    specs = figure_specs(plan)
    systems: list[System] = []
    try:
        for name in names:
            system = SYSTEMS[name](workdir)
            if isinstance(system, StrataSystem) and args.strata_arg:
                system = type(system)(workdir, args.strata_arg)
            try:
                step(f"{name}: preparing")
                system.prepare()
                systems.append(system)
            except Unavailable as e:
                step(f"{name}: NOT AVAILABLE: {e}")
                results["systems"][name] = {"available": False, "reason": str(e)}
        if REFERENCE in names and REFERENCE not in [s.name for s in systems]:
            results["notes"].append(
                f"{REFERENCE} could not be obtained, so Strata ran alone: "
                f"{results['systems'][REFERENCE]['reason']}"
            )
        java_cp = None
        if "java" in selected and systems:
            try:
                java_cp = javaperf.tools_classpath(fetch=not args.smoke)
            except KafkaUnavailable as e:
                results["notes"].append(f"Java load generator not available: {e}")
        results["java_tools"] = java_cp
        results["physical"] = measure_physical(workdir, plan)
        if args.disk_probe:
            step("physical limits: the detailed disk probe")
            results["physical"]["disk_probe"] = physical.disk_probe(workdir, plan.disk_seconds)
        for system in systems:
            chosen = selected
            if args.smoke and args.workloads is None and system.name in SMOKE_WORKLOADS:
                chosen = [w for w in selected if w in SMOKE_WORKLOADS[system.name]]
            try:
                results["systems"][system.name] = run_system(
                    system, plan, chosen, out, args.profile, java_cp
                )
                if chosen != selected:
                    results["systems"][system.name]["notes"].append(
                        f"smoke run: only {', '.join(chosen)} (full runs do every workload)"
                    )
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one system failing does not lose the others' figures
                step(f"{system.name}: FAILED: {type(e).__name__}: {e}")
                results["systems"][system.name] = {
                    "available": True,
                    "failed": f"{type(e).__name__}: {e}",
                    "log_tail": system.log_tail()[-3000:],
                    "figures": {},
                }
    finally:
        for system in systems:
            with contextlib.suppress(Exception):
                system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results["specs"] = specs
    results["comparison"] = compare(results, specs)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["seconds"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=json_default) + "\n")
    plot = report.latency_plot(results, out / "latency.png")
    results["plot"] = plot.name if plot else None
    (out / "results.md").write_text(report.markdown(results))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=json_default) + "\n")
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark Strata side by side with Apache Kafka on this machine.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "run",
        help="run the benchmark and write DIR/results.{json,md}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--smoke",
        action="store_true",
        help="seconds per workload, small sizes, one repetition (CI)",
    )
    r.add_argument(
        "--out", default=str(DEFAULT_OUT), help="output directory (default: %(default)s)"
    )
    r.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated, of {', '.join(SYSTEMS)} (default: "
        f"{','.join(DEFAULT_SYSTEMS)}; with --smoke: {','.join(SMOKE_SYSTEMS)})",
    )
    r.add_argument(
        "--workloads",
        default=None,
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all; with --smoke, "
        + "; ".join(f"{n} runs only {','.join(w)}" for n, w in SMOKE_WORKLOADS.items())
        + ")",
    )
    r.add_argument("--reps", type=int, default=0, help="override the number of repetitions")
    r.add_argument(
        "--profile",
        action="store_true",
        help="py-spy Strata during the first repetition of each workload "
        "(perturbs the figures; profiles go to the output directory)",
    )
    r.add_argument(
        "--strata-arg",
        action="append",
        default=[],
        help="extra argument for Strata's `broker serve` (repeat; e.g. "
        "--strata-arg=--wal-segment-bytes=1073741824); recorded in the results",
    )
    r.add_argument(
        "--disk-probe",
        action="store_true",
        help="also append+fdatasync at 256 KiB / 1 MiB / 4 MiB and overwrite a pre-zeroed file",
    )
    r.add_argument(
        "--data-parent",
        default=None,
        help="where the temp work dir goes (its disk is the one measured)",
    )
    readme.add_arguments(
        sub.add_parser("readme", help="rewrite README.md's benchmark figures from a results.json")
    )
    args = ap.parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    if args.command == "readme":
        return args
    if args.systems is None:
        args.systems = ",".join(SMOKE_SYSTEMS if args.smoke else DEFAULT_SYSTEMS)
    unknown = [s for s in args.systems.split(",") if s.strip() and s.strip() not in SYSTEMS]
    if unknown:
        ap.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    bad = [w for w in (args.workloads or "").split(",") if w.strip() and w.strip() not in WORKLOADS]
    if bad:
        ap.error(f"unknown workloads {bad}; known: {', '.join(WORKLOADS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.common import sigterm_as_interrupt

    args = parse_args(argv)
    if args.command == "readme":
        return readme.main(args)
    with sigterm_as_interrupt():
        try:
            results = run(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    print(report.markdown(results))
    print(f"\n{Path(args.out) / 'results.json'}", file=sys.stderr)
    failed = [n for n, s in results["systems"].items() if s.get("failed")]
    return 1 if failed else 0
