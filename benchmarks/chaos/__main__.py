"""`python -m benchmarks.chaos [--faults N] [--seed S] [--durability object|wal] [--out DIR]`:
a chaos run (runner.py) checked by checker.py, written to DIR/results.json and printed.

`python -m benchmarks.chaos readme --results A.json B.json ...`: README.md's chaos table
from stored results (report.py)."""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, astuple
from pathlib import Path

from benchmarks.chaos import report
from benchmarks.chaos.checker import Ack, CommitSample, History, Read, check
from benchmarks.chaos.runner import Options, run
from benchmarks.chaos.schedule import KINDS, make_schedule
from benchmarks.common import REPO_ROOT


def _commit() -> str:
    r = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    return r.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["readme"]:
        return readme(argv[1:])
    if argv[:1] == ["check"]:
        return recheck(argv[1:])
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--faults", type=int, default=18)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--durability", choices=("object", "wal"), default="object")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/chaos"))
    ap.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="fault kinds, comma-separated, dealt round-robin; KIND=N,... gives exact counts "
        "instead (then --faults is unused)",
    )
    ap.add_argument(
        "--outage-seconds", type=float, default=0.0, help="every s3_down lasts this long"
    )
    ap.add_argument("--rate", type=float, default=100.0, help="messages/s per producer")
    ap.add_argument("--value-bytes", type=int, default=100, help="size of each record's value")
    ap.add_argument(
        "--backlog-mib", type=int, default=32, help="the brokers' --max-upload-backlog-bytes"
    )
    args = ap.parse_args(argv)
    opts = Options(
        durability=args.durability,
        rate=args.rate,
        value_bytes=args.value_bytes,
        backlog_bytes=args.backlog_mib * 2**20,
    )
    parts = [k for k in args.kinds.split(",") if k]
    counts = None
    if "=" in args.kinds:
        counts = {k: int(n) for k, _, n in (p.partition("=") for p in parts)}
    kinds = [p.partition("=")[0] for p in parts]
    schedule = make_schedule(
        args.faults,
        args.seed,
        range(1, opts.brokers + 1),
        opts.lease_ms / 1000,
        kinds,
        args.outage_seconds,
        counts,
    )
    command = "python -m benchmarks.chaos " + shlex.join(argv)
    # SIGTERM unwinds like Ctrl-C, so the brokers, servers and mounts are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    history, figures = run(args.out / "run", opts, schedule)
    verdict = check(history, gap_s=2.0)
    meta = {
        "command": command.strip(),
        "seed": args.seed,
        "durability": args.durability,
        "faults_requested": len(schedule),
        "kinds": kinds,
        "git_commit": _commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "options": asdict(opts),
        "wal_windows": [[round(a, 2), round(b, 2)] for a, b in history.windows],
    }
    out = report.results(verdict, figures, meta, figures["fault_events"])
    (args.out / "results.json").write_text(json.dumps(out, indent=2))
    with gzip.open(args.out / "history.json.gz", "wt") as f:  # the raw history, to dig in
        json.dump(
            {
                "acks": [astuple(a) for a in history.acks],
                "reads": [astuple(r) for r in history.reads],
                "commits": [astuple(c) for c in history.commits],
                "final": history.final,
                "produce_span": history.produce_span,
            },
            f,
        )
    print(report.table(out))
    print(f"results: {args.out / 'results.json'}")
    return 0 if out["ok"] else 1


def recheck(argv: list[str]) -> int:
    """`python -m benchmarks.chaos check DIR`: the checker again over a stored run's
    history (DIR/history.json.gz), rewriting DIR/results.json's verdict: for a checker
    that learned something after the run."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos check")
    ap.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    old = json.loads((args.dir / "results.json").read_text())
    with gzip.open(args.dir / "history.json.gz", "rt") as f:
        raw = json.load(f)
    acks = [Ack(*a) for a in raw["acks"]]
    span = raw.get("produce_span") or (0.0, max((a.t for a in acks), default=0.0))
    history = History(
        durability=old["durability"],
        acks=acks,
        reads=[Read(*r) for r in raw["reads"]],
        commits=[CommitSample(*c) for c in raw["commits"]],
        final={int(p): [tuple(x) for x in recs] for p, recs in raw["final"].items()},
        windows=[tuple(w) for w in old.get("wal_windows", [])],
        unreadable=old.get("final_read_incomplete", []),
        produce_span=tuple(span),
    )
    verdict = check(history, gap_s=2.0)
    meta_keys = ("command", "seed", "durability", "faults_requested", "kinds", "git_commit")
    meta = {k: old[k] for k in (*meta_keys, "started", "seconds", "options", "wal_windows")}
    figure_keys = (
        "group_caught_up",
        "idle_partitions_unwritable",
        "partitions_given_up",
        "final_read_incomplete",
        "end_offsets",
        "sent",
        "errors",
        "rss_peak_mib_by_fault",
        "rss_peak_mib_by_broker",
        "broker_crashes",
        "fault_events",
        "disk_full_available",
    )
    figures = {k: old[k] for k in figure_keys if k in old}
    out = report.results(verdict, figures, meta, figures["fault_events"])
    (args.dir / "results.json").write_text(json.dumps(out, indent=2))
    print(report.table(out))
    return 0 if out["ok"] else 1


def readme(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos readme")
    ap.add_argument("--results", nargs="+", type=Path, required=True)
    ap.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = ap.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in args.results]
    args.readme.write_text(report.rewrite(args.readme.read_text(), report.readme_section(runs)))
    print(f"{args.readme}: chaos figures from {', '.join(map(str, args.results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
