"""Single-node Strata benchmark: the disk's limit, then produce, consume and latency against it.

    python -m benchmarks.single_node            # full run, about two minutes
    python -m benchmarks.single_node --quick    # a few seconds of load per phase
    python -m benchmarks.single_node --profile  # also py-spy the broker in each load phase

One run, on this machine, in a fresh temp dir and on a free loopback port:

1. disk: sequential appends of 256 KiB / 1 MiB / 4 MiB, each followed by fdatasync, in the
   directory that then holds the broker's data (the physical limit for an acks=all broker that
   syncs its WAL), and the fdatasync latency of 4 KiB appends.
2. produce: confluent-kafka producers in separate processes, 1 KiB messages, acks=all, one
   6-partition topic, as fast as the broker acks. Reported as payload MB/s and as a ratio to
   the 1 MiB fdatasync throughput of (1).
3. consume: consumers (assign(), no group protocol) read back everything (2) produced.
4. latency: a rate-limited producer offers a fixed 20 MB/s; latency is the delivery callback's
   time minus the produce() call's time (so it includes linger.ms and the client's poll delay).
5. broker RSS (VmRSS / VmHWM) and CPU after / during every phase.

The broker is started and stopped by this script; every loop is bounded by count and time.
MB means 10^6 bytes throughout. On a 2-core machine the load generator competes with the
broker for CPU: every phase reports the CPU used by the broker and by each client process, and
flags a client process that was itself CPU-bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CPU_BOUND,
    KIB,
    MB,
    MESSAGE_SIZE,
    MIB,
    REPO_ROOT,
    BrokerProcess,
    PhaseMeter,
    disk_throughput,
    environment,
    json_default,
    latency_summary,
    mb_per_s,
    mount_of,
    proc_memory,
    sigterm_as_interrupt,
    step,
)
from benchmarks.loadgen import (
    ConsumeJob,
    ProduceJob,
    coprime_stride,
    create_topic,
    end_offsets,
    other_cpu,
    producer_config,
    run_workers,
    steady_rate,
)
from benchmarks.profiling import Profiler

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
PARTITIONS = 6
DISK_SIZES = (256 * KIB, MIB, 4 * MIB)
DISK_REFERENCE = MIB  # the write size the produce ratio is taken against
SMALL_SYNC_SIZE = 4 * KIB
PRODUCE_RATIO_TARGET = 0.4
LATENCY_P99_TARGET_MS = 10.0


# --- plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How long each phase runs, and the count bounds that stop it even if the clock does not."""

    disk_seconds: float  # per write size
    disk_max_bytes: int  # per write size
    sync_seconds: float
    sync_max_count: int
    produce_seconds: float
    produce_warmup: float  # excluded from the steady-state produce rate
    produce_max_messages: int  # per producer process
    consume_seconds: float
    latency_seconds: float
    latency_warmup: float  # excluded from the latency percentiles
    flush_timeout: float


FULL = Plan(
    disk_seconds=3.0,
    disk_max_bytes=4 << 30,
    sync_seconds=3.0,
    sync_max_count=50_000,
    produce_seconds=25.0,
    produce_warmup=3.0,
    produce_max_messages=50_000_000,
    consume_seconds=40.0,
    latency_seconds=20.0,
    latency_warmup=2.0,
    flush_timeout=60.0,
)
QUICK = Plan(
    disk_seconds=0.7,
    disk_max_bytes=1 << 30,
    sync_seconds=1.0,
    sync_max_count=10_000,
    produce_seconds=4.0,
    produce_warmup=1.0,
    produce_max_messages=5_000_000,
    consume_seconds=10.0,
    latency_seconds=4.0,
    latency_warmup=1.0,
    flush_timeout=30.0,
)


# --- phase 1: the disk ------------------------------------------------------------------


def disk_phase(directory: Path, plan: Plan) -> dict[str, Any]:
    """The write+fdatasync limit of the data dir's disk.

    The reference is 1 MiB appends sustained for as long as the produce phase: virtual disks
    (and drives with write caches) often absorb a burst of seconds far faster than they
    sustain, and the produce phase is measured over the sustained stretch.
    """
    sustained = disk_throughput(
        directory, DISK_REFERENCE, plan.produce_seconds, plan.disk_max_bytes * 4
    )
    sizes = {
        str(size): disk_throughput(directory, size, plan.disk_seconds, plan.disk_max_bytes)
        for size in DISK_SIZES
    }
    small = disk_throughput(
        directory, SMALL_SYNC_SIZE, plan.sync_seconds, plan.sync_max_count * SMALL_SYNC_SIZE
    )
    prealloc = disk_throughput(
        directory, DISK_REFERENCE, plan.disk_seconds, plan.disk_max_bytes, prealloc=256 * MIB
    )
    small_prealloc = disk_throughput(
        directory,
        SMALL_SYNC_SIZE,
        plan.sync_seconds,
        plan.sync_max_count * SMALL_SYNC_SIZE,
        prealloc=64 * MIB,
    )
    best = max(sizes.values(), key=lambda r: r["mb_per_s"])
    each = sorted(sustained["mb_per_s_each_second"])
    return {
        "directory": str(directory),
        "mount": mount_of(directory),
        "sustained": sustained,
        "sequential": sizes,
        "reference_write_bytes": DISK_REFERENCE,
        # the median second, not the mean: a burst at the start can double the mean
        "reference_mb_per_s": each[len(each) // 2] if each else sustained["mb_per_s"],
        "best_mb_per_s": best["mb_per_s"],
        "small_sync": small,
        "overwrite_preallocated": prealloc,
        "small_sync_overwrite_preallocated": small_prealloc,
    }


def disk_recheck(directory: Path, plan: Plan) -> dict[str, Any]:
    """The reference measurement again, after the broker phases: virtual disks drift a lot."""
    return {
        "reference": disk_throughput(
            directory, DISK_REFERENCE, plan.disk_seconds, plan.disk_max_bytes
        ),
        "small_sync": disk_throughput(
            directory, SMALL_SYNC_SIZE, plan.sync_seconds, plan.sync_max_count * SMALL_SYNC_SIZE
        ),
    }


# --- phases 2-4 ---------------------------------------------------------------------------


def produce_phase(ctx: RunContext) -> dict[str, Any]:
    args, plan, broker = ctx.args, ctx.plan, ctx.broker
    topic = "bench-throughput"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    stride = coprime_stride(64, PARTITIONS)
    jobs = [
        ProduceJob(
            i,
            broker.bootstrap,
            topic,
            PARTITIONS,
            plan.produce_seconds,
            plan.produce_max_messages,
            0.0,
            stride,
            args.linger_ms,
            args.batch_size,
            plan.flush_timeout,
        )
        for i in range(args.producers)
    ]
    meter_box: list[PhaseMeter] = []
    ctx.start_profile("produce", plan.produce_seconds + plan.flush_timeout)
    results, _ = run_workers(
        "produce",
        jobs,
        plan.produce_seconds + plan.flush_timeout + 60,
        on_start=lambda: meter_box.append(PhaseMeter(broker.pid, ctx.wal_dir)),
    )
    usage = meter_box[0].finish()
    profile = ctx.stop_profile()
    ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
    delivered = sum(ends)
    sent = sum(r["sent"] for r in results)

    steady = steady_rate(results, plan.produce_warmup, stride)
    steady_seconds, steady_mps = steady["seconds"], steady["msgs_per_s"]
    first, last = min(r["start"] for r in results), max(r["flushed"] for r in results)
    lat = steady["latencies"]
    clients = [
        {
            "index": r["index"],
            "sent": r["sent"],
            "queue_full_waits": r["queue_full"],
            "cpu_cores": r["cpu_cores"],
            "cpu_bound": r["cpu_cores"] >= CPU_BOUND,
            "unflushed": r["unflushed"],
            "errors_sampled": r["errors_sampled"],
            "first_error": r["first_error"],
        }
        for r in results
    ]
    return {
        "topic": topic,
        "partitions": PARTITIONS,
        "producers": args.producers,
        "message_bytes": MESSAGE_SIZE,
        "config": producer_config(jobs[0]),
        "sent": sent,
        "delivered": delivered,  # from the partitions' end offsets
        "lost_or_failed": sent - delivered,
        "steady_window_seconds": steady_seconds,
        "msgs_per_s": steady_mps,
        "mb_per_s": steady_mps * MESSAGE_SIZE / MB,
        "overall_seconds": last - first,
        "overall_mb_per_s": mb_per_s(delivered * MESSAGE_SIZE, last - first),
        "wal_mb_per_s": mb_per_s(usage["wal_bytes"], last - first),
        "latency_at_saturation_ms": latency_summary(lat),
        "clients": clients,
        "clients_cpu_bound": any(c["cpu_bound"] for c in clients),
        "other_cpu_cores": other_cpu(usage, clients),
        "end_offsets": ends,
        "broker": usage,
        "profile": profile,
    }


def consume_phase(ctx: RunContext, topic: str, ends: Sequence[int]) -> dict[str, Any]:
    args, plan, broker = ctx.args, ctx.plan, ctx.broker
    n = max(1, min(args.consumers, len(ends)))
    jobs = [
        ConsumeJob(
            i,
            broker.bootstrap,
            topic,
            tuple((p, 0, ends[p]) for p in range(len(ends)) if p % n == i),
            plan.consume_seconds,
        )
        for i in range(n)
    ]
    meter_box: list[PhaseMeter] = []
    ctx.start_profile("consume", plan.consume_seconds)
    results, _ = run_workers(
        "consume",
        jobs,
        plan.consume_seconds + 60,
        on_start=lambda: meter_box.append(PhaseMeter(broker.pid, ctx.wal_dir)),
    )
    usage = meter_box[0].finish()
    profile = ctx.stop_profile()
    msgs = sum(r["messages"] for r in results)
    nbytes = sum(r["bytes"] for r in results)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    expected = sum(ends)
    clients = [
        {
            "index": r["index"],
            "messages": r["messages"],
            "cpu_cores": r["cpu_cores"],
            "cpu_bound": r["cpu_cores"] >= CPU_BOUND,
            "errors": r["errors"],
            "first_error": r["first_error"],
        }
        for r in results
    ]
    return {
        "consumers": n,
        "expected": expected,
        "messages": msgs,
        "complete": msgs == expected,
        "bytes": nbytes,
        "seconds": seconds,
        "mb_per_s": mb_per_s(nbytes, seconds),
        "msgs_per_s": msgs / seconds if seconds > 0 else math.nan,
        "tail_cache_share": min(1.0, ctx.tail_cache_bytes / max(1, expected * (MESSAGE_SIZE + 70))),
        "clients": clients,
        "clients_cpu_bound": any(c["cpu_bound"] for c in clients),
        "other_cpu_cores": other_cpu(usage, clients),
        "broker": usage,
        "profile": profile,
    }


def latency_phase(ctx: RunContext) -> dict[str, Any]:
    args, plan, broker = ctx.args, ctx.plan, ctx.broker
    topic = "bench-latency"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    total_rate = args.rate_mb * MB / MESSAGE_SIZE
    n = args.latency_producers
    jobs = [
        ProduceJob(
            i,
            broker.bootstrap,
            topic,
            PARTITIONS,
            plan.latency_seconds,
            int(total_rate / n * plan.latency_seconds) + 1,
            total_rate / n,
            1,
            args.latency_linger_ms,
            args.batch_size,
            plan.flush_timeout,
        )
        for i in range(n)
    ]
    meter_box: list[PhaseMeter] = []
    ctx.start_profile("latency", plan.latency_seconds + plan.flush_timeout)
    results, _ = run_workers(
        "produce",
        jobs,
        plan.latency_seconds + plan.flush_timeout + 60,
        on_start=lambda: meter_box.append(PhaseMeter(broker.pid, ctx.wal_dir)),
    )
    usage = meter_box[0].finish()
    profile = ctx.stop_profile()
    ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
    cut = max(r["start"] for r in results) + plan.latency_warmup
    app = [
        d - s
        for r in results
        for s, d in zip(r["sent_times"], r["done_times"], strict=True)
        if s >= cut
    ]
    lib = [
        x
        for r in results
        for s, x in zip(r["sent_times"], r["librdkafka_latency"], strict=True)
        if s >= cut
    ]
    sent = sum(r["sent"] for r in results)
    seconds = max(r["stopped"] for r in results) - min(r["start"] for r in results)
    summary = latency_summary(app)
    clients = [
        {
            "index": r["index"],
            "sent": r["sent"],
            "cpu_cores": r["cpu_cores"],
            "cpu_bound": r["cpu_cores"] >= CPU_BOUND,
            "errors": r["errors_sampled"],
            "first_error": r["first_error"],
        }
        for r in results
    ]
    return {
        "topic": topic,
        "producers": n,
        "linger_ms": args.latency_linger_ms,
        "offered_mb_per_s": args.rate_mb,
        "achieved_mb_per_s": mb_per_s(sent * MESSAGE_SIZE, seconds),
        "sent": sent,
        "delivered": sum(ends),
        "errors": sum(r["errors_sampled"] for r in results),
        "latency_ms": summary,
        "librdkafka_latency_ms": latency_summary(lib),
        "p99_target_ms": LATENCY_P99_TARGET_MS,
        "p99_ok": summary["p99"] <= LATENCY_P99_TARGET_MS,
        "clients": clients,
        "clients_cpu_bound": any(c["cpu_bound"] for c in clients),
        "other_cpu_cores": other_cpu(usage, clients),
        "broker": usage,
        "profile": profile,
    }


# --- the run ------------------------------------------------------------------------------


class RunContext:
    def __init__(
        self, args: argparse.Namespace, plan: Plan, workdir: Path, out: Path, stamp: str
    ) -> None:
        self.args = args
        self.plan = plan
        self.workdir = workdir
        self.out = out
        self.stamp = stamp
        self.broker = BrokerProcess(workdir / "data", workdir / "broker.log", args.broker_arg)
        self.wal_dir = workdir / "data" / "wal"
        self.tail_cache_bytes = 128 * MIB
        self._profiler: Profiler | None = None

    def memory(self) -> dict[str, int]:
        return proc_memory(self.broker.pid)

    def start_profile(self, phase: str, max_seconds: float) -> None:
        if self.args.profile:
            path = self.out / f"single_node-{self.stamp}-{phase}.speedscope.json"
            self._profiler = Profiler(self.broker.pid, path, max_seconds)
            time.sleep(0.3)  # let py-spy attach before the load starts

    def stop_profile(self) -> dict[str, Any] | None:
        profiler, self._profiler = self._profiler, None
        return profiler.stop() if profiler is not None else None

    def check_broker(self, phase: str) -> None:
        if not self.broker.alive():
            raise RuntimeError(f"broker died during {phase}:\n{self.broker.log_tail()}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    if args.produce_seconds:
        plan = replace(plan, produce_seconds=args.produce_seconds)
    if args.latency_seconds:
        plan = replace(plan, latency_seconds=args.latency_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="strata-bench-", dir=args.data_parent))
    ctx = RunContext(args, plan, workdir, out, stamp)
    for i, a in enumerate(args.broker_arg):
        if a == "--tail-cache-bytes" and i + 1 < len(args.broker_arg):
            ctx.tail_cache_bytes = int(args.broker_arg[i + 1])
        elif a.startswith("--tail-cache-bytes="):
            ctx.tail_cache_bytes = int(a.split("=", 1)[1])
    report: dict[str, Any] = {
        "benchmark": "single_node",
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "plan": asdict(plan),
        "units": {"MB": "10^6 bytes", "latency": "ms"},
        "memory": {},
    }
    try:
        step("disk: write+fdatasync")
        report["disk"] = disk_phase(workdir, plan)
        step(f"broker: starting in {workdir}")
        ctx.broker.start()
        report["broker"] = {
            "pid": ctx.broker.pid,
            "bootstrap": ctx.broker.bootstrap,
            "args": args.broker_arg,
            "tail_cache_bytes": ctx.tail_cache_bytes,
        }
        time.sleep(0.5)
        report["memory"]["idle"] = ctx.memory()

        step(f"produce: {args.producers} producers for {plan.produce_seconds:g}s")
        produce = produce_phase(ctx)
        ctx.check_broker("produce")
        report["memory"]["after_produce"] = ctx.memory()
        report["produce"] = produce

        step(f"consume: {args.consumers} consumers reading {produce['delivered']:,} messages")
        report["consume"] = consume_phase(ctx, produce["topic"], produce["end_offsets"])
        ctx.check_broker("consume")
        report["memory"]["after_consume"] = ctx.memory()

        step(f"latency: {args.rate_mb:g} MB/s offered for {plan.latency_seconds:g}s")
        report["latency"] = latency_phase(ctx)
        ctx.check_broker("latency")
        report["memory"]["after_latency"] = ctx.memory()
        ctx.broker.stop()
        step("disk: write+fdatasync again")
        report["disk_after"] = disk_recheck(workdir, plan)
        score_produce(report)
    except BaseException as e:
        report["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        with contextlib.suppress(Exception):
            ctx.stop_profile()
        code = ctx.broker.stop()
        report["broker_exit_code"] = code
        log_copy = out / f"single_node-{stamp}-broker.log"
        report["broker_log"] = log_copy.name
        with contextlib.suppress(OSError):
            shutil.copyfile(ctx.broker.log_path, log_copy)
        if args.keep_data:
            print(f"data kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        path = out / f"single_node-{stamp}.json"
        path.write_text(json.dumps(report, indent=2, default=json_default) + "\n")
        report["json_path"] = str(path)
        print(f"JSON: {path}", file=sys.stderr)
    return report


def score_produce(report: dict[str, Any]) -> None:
    """Produce MB/s against the sustained 1 MiB append+fdatasync rate (and the burst rates)."""
    disk, produce = report["disk"], report["produce"]
    reference = disk["reference_mb_per_s"]
    produce["fdatasync_reference_mb_per_s"] = reference
    produce["ratio_to_fdatasync"] = produce["mb_per_s"] / reference
    produce["ratio_to_burst_fdatasync"] = produce["mb_per_s"] / max(
        disk["sequential"][str(DISK_REFERENCE)]["mb_per_s"],
        report["disk_after"]["reference"]["mb_per_s"],
    )
    produce["ratio_target"] = PRODUCE_RATIO_TARGET
    produce["ratio_ok"] = produce["ratio_to_fdatasync"] >= PRODUCE_RATIO_TARGET


# --- the table ----------------------------------------------------------------------------


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(report: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, note: str = "") -> None:
        rows.append((name, value, note))

    disk = report.get("disk")
    if disk:
        mount = disk["mount"]
        row("disk", f"{mount['device']} ({mount['fstype']}) at {mount['mount']}")
        sus = disk["sustained"]
        each = sorted(sus["mb_per_s_each_second"]) or [math.nan]
        row(
            f"  1 MiB append+fdatasync, {sus['seconds']:.0f}s",
            f"{_fmt(disk['reference_mb_per_s'])} MB/s",
            f"<- reference: the median second (min {_fmt(each[0], 0)}, max {_fmt(each[-1], 0)}, "
            f"mean {_fmt(sus['mb_per_s'], 0)} MB/s)",
        )
        for size, r in disk["sequential"].items():
            kib = int(size) // KIB
            label = f"{kib // 1024} MiB" if kib >= 1024 else f"{kib} KiB"
            lat = r["latency_ms"]
            row(
                f"  {label} append+fdatasync, {r['seconds']:.0f}s",
                f"{_fmt(r['mb_per_s'])} MB/s",
                f"per write p50 {_fmt(lat['p50'], 2)} / p99 {_fmt(lat['p99'], 2)} ms",
            )
        over = disk["overwrite_preallocated"]
        row(
            "  1 MiB overwrite+fdatasync",
            f"{_fmt(over['mb_per_s'])} MB/s",
            f"per write p50 {_fmt(over['latency_ms']['p50'], 2)} / "
            f"p99 {_fmt(over['latency_ms']['p99'], 2)} ms (pre-zeroed 256 MiB file, wrapping)",
        )
        for label, key in (
            ("4 KiB write+fdatasync", "small_sync"),
            ("  4 KiB, overwriting", "small_sync_overwrite_preallocated"),
        ):
            r = disk[key]
            s = r["latency_ms"]
            row(
                f"  {label.strip()}",
                f"p50 {_fmt(s['p50'], 2)} / p99 {_fmt(s['p99'], 2)} ms",
                f"p999 {_fmt(s['p999'], 2)} ms, {r['writes']:,} syncs, {_fmt(r['mb_per_s'])} MB/s",
            )
    after = report.get("disk_after")
    if after:
        r, s = after["reference"], after["small_sync"]["latency_ms"]
        row(
            f"  after the broker: 1 MiB, {r['seconds']:.0f}s",
            f"{_fmt(r['mb_per_s'])} MB/s",
            f"4 KiB sync p50 {_fmt(s['p50'], 2)} / p99 {_fmt(s['p99'], 2)} ms",
        )

    def usage(phase: dict[str, Any]) -> None:
        b = phase["broker"]
        clients = ", ".join(f"{c['cpu_cores'] * 100:.0f}%" for c in phase["clients"])
        note = "  CLIENT CPU-BOUND" if phase["clients_cpu_bound"] else ""
        other = phase.get("other_cpu_cores", 0.0)
        if other >= 0.1:
            note += f"; OTHER PROCESSES ~{other * 100:.0f}%"
        cpu, loop = b["broker_cpu_cores"] * 100, b["broker_loop_thread_cpu_cores"] * 100
        row(
            "  CPU (1 core = 100%)",
            f"broker {cpu:.0f}% (loop thread {loop:.0f}%)",
            f"clients {clients}; machine {b['machine_cpu_busy'] * 100:.0f}% busy{note}",
        )

    p = report.get("produce")
    if p:
        row(
            f"produce ({p['producers']} procs, acks=all)",
            f"{_fmt(p['mb_per_s'])} MB/s",
            f"{_fmt(p['msgs_per_s'], 0)} msgs/s steady; "
            f"{_fmt(p['overall_mb_per_s'])} MB/s incl. ramp/drain",
        )
        if "ratio_to_fdatasync" in p:
            row(
                "  / sustained fdatasync",
                _fmt(p["ratio_to_fdatasync"], 2),
                f"target >= {p['ratio_target']}  {_verdict(p['ratio_ok'])}  "
                f"(vs short 1 MiB bursts: {_fmt(p['ratio_to_burst_fdatasync'], 2)})",
            )
        row(
            "  delivered / sent",
            f"{p['delivered']:,} / {p['sent']:,}",
            f"WAL {_fmt(p['wal_mb_per_s'])} MB/s, "
            f"~{_fmt(p['broker']['broker_bytes_per_write_syscall'] / KIB, 0)} KiB per WAL write",
        )
        sat = p["latency_at_saturation_ms"]
        row(
            "  latency at saturation",
            f"p50 {_fmt(sat['p50'])} / p99 {_fmt(sat['p99'])} ms",
            "queueing in the client included",
        )
        usage(p)
    c = report.get("consume")
    if c:
        row(
            f"consume ({c['consumers']} procs, from 0)",
            f"{_fmt(c['mb_per_s'])} MB/s",
            f"{_fmt(c['msgs_per_s'], 0)} msgs/s, {c['messages']:,}/{c['expected']:,} read"
            + ("" if c["complete"] else "  INCOMPLETE")
            + f"; ~{c['tail_cache_share'] * 100:.0f}% fits the tail cache",
        )
        usage(c)
    la = report.get("latency")
    if la:
        lat = la["latency_ms"]
        row(
            f"latency @ {la['offered_mb_per_s']:g} MB/s (linger {la['linger_ms']:g} ms)",
            f"p50 {_fmt(lat['p50'], 2)} / p99 {_fmt(lat['p99'], 2)} / "
            f"p999 {_fmt(lat['p999'], 2)} ms",
            f"target p99 <= {la['p99_target_ms']:g} ms  {_verdict(la['p99_ok'])}; "
            f"achieved {_fmt(la['achieved_mb_per_s'])} MB/s",
        )
        lib = la["librdkafka_latency_ms"]
        row(
            "  librdkafka msg.latency()",
            f"p50 {_fmt(lib['p50'], 2)} / p99 {_fmt(lib['p99'], 2)} ms",
            f"max {_fmt(lat['max'], 1)} ms, errors {la['errors']}",
        )
        usage(la)
    for phase, mem in report.get("memory", {}).items():
        row(
            f"broker memory {phase}",
            f"RSS {mem['VmRSS'] / MIB:,.0f} MiB",
            f"HWM {mem['VmHWM'] / MIB:,.0f} MiB",
        )

    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    head = (
        f"Strata single-node benchmark ({report['mode']}), {report['started']}, "
        f"{report['environment']['cpus']} CPUs, commit {report['environment']['git_commit']}"
        + (" + local edits" if report["environment"]["git_dirty"] else "")
    )
    lines = [head, "-" * len(head)]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {n}".rstrip() for a, b, n in rows]
    for name in ("produce", "consume", "latency"):
        prof = (report.get(name) or {}).get("profile")
        if prof and "self" in prof:
            lines.append("")
            lines.append(
                f"py-spy, broker event-loop thread during {name} "
                f"({prof['main_thread_samples']} samples, "
                f"{prof['main_thread_idle_share'] * 100:.0f}% idle in select): "
                f"{prof['file']}"
            )
            lines.append("  self time:")
            lines += [f"    {share * 100:5.1f}%  {fn}" for fn, share in prof["self"][:10]]
            lines.append("  inclusive:")
            lines += [f"    {share * 100:5.1f}%  {fn}" for fn, share in prof["inclusive"][:10]]
    return "\n".join(lines)


# --- entry point --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.single_node",
        description="Measure the disk's fdatasync limit, then Strata's produce throughput, "
        "consume throughput and produce latency on this machine.",
    )
    ap.add_argument("--quick", action="store_true", help="a few seconds of load per phase")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where the JSON (and profiles) go")
    ap.add_argument("--producers", type=int, default=2, help="producer processes (throughput)")
    ap.add_argument("--consumers", type=int, default=2, help="consumer processes")
    ap.add_argument("--latency-producers", type=int, default=1, help="producer processes (latency)")
    ap.add_argument("--rate-mb", type=float, default=20.0, help="offered load of the latency phase")
    ap.add_argument("--linger-ms", type=float, default=5.0, help="linger.ms of the produce phase")
    ap.add_argument(
        "--latency-linger-ms",
        type=float,
        default=5.0,
        help="linger.ms of the latency phase (it counts toward the latency)",
    )
    ap.add_argument("--batch-size", type=int, default=1_000_000, help="librdkafka batch.size")
    ap.add_argument("--produce-seconds", type=float, default=0.0, help="override the plan")
    ap.add_argument("--latency-seconds", type=float, default=0.0, help="override the plan")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the broker in each load phase (perturbs the figures)",
    )
    ap.add_argument(
        "--data-parent",
        default=None,
        help="where the temp data dir goes (its disk is the one measured)",
    )
    ap.add_argument("--keep-data", action="store_true", help="keep the temp data dir")
    ap.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        help="extra argument for `broker serve` (repeat, e.g. --broker-arg=--log-level "
        "--broker-arg=WARNING)",
    )
    args = ap.parse_args(argv)
    if args.producers < 1 or args.consumers < 1 or args.latency_producers < 1:
        ap.error("process counts must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with sigterm_as_interrupt():
        try:
            report = run(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    print(render(report))
    print(f"\nJSON: {report['json_path']}")
    print(f"broker log: {Path(report['json_path']).with_name(report['broker_log'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
