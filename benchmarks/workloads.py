"""The workloads, each run against one started system; every call is one repetition.

Each returns {"figures": {key: value}, "details": {...}}: the figures are what the table shows
(median/min/max over repetitions), the details what explains them (CPU shares, counts, errors).
Every topic is new, so repetitions and systems never share data. MB = 10^6 bytes.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import javaperf, objectstore
from benchmarks.common import CPU_BOUND, MB, PhaseMeter, latency_summary, mb_per_s, step
from benchmarks.loadgen import (
    ConsumeJob,
    LatencyConsumeJob,
    ProduceJob,
    TxnProduceJob,
    coprime_stride,
    create_topic,
    end_offsets,
    other_cpu,
    run_workers,
    steady_rate,
)
from benchmarks.physical import evict_page_cache
from benchmarks.profiling import Profiler
from benchmarks.systems import System

LATENCY_QUANTILES = (50, 75, 90, 95, 99, 99.5, 99.9, 99.99)
# librdkafka's local queue per producer process: enough to keep either broker saturated, small
# enough that acks start flowing well inside the measured window (256 MiB queued made the first
# acks of a 60-partition Kafka run arrive after 1.6 s)
QUEUE_KBYTES = 64 * 1024


class WorkloadError(RuntimeError):
    """The system under test failed the workload (errors, lost or unacknowledged messages)."""


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run; every loop is also bounded by a count or a timeout."""

    reps: int
    tcp_seconds: float
    disk_seconds: float
    sync_seconds: float
    cold_read_bytes: int
    produce_seconds: float
    produce_warmup: float
    produce_matrix: tuple[tuple[int, int], ...]  # (message bytes, partitions)
    producers: int
    consumers: int
    consume_seconds: float
    latency_rate_mb: float
    latency_seconds: float
    latency_warmup: float
    latency_linger_ms: float
    catchup_bytes: int
    catchup_seconds: float
    rebalance_members: int  # the stable group; one more member then joins it
    java_records: int
    flush_timeout: float
    linger_ms: float = 5.0
    batch_size: int = 1_000_000
    # --- the object store (Strata only) ---
    # before the catch-up restart, wait this long at most for the upload backlog to drain (0:
    # don't; the broker's shutdown uploads what is left)
    catchup_upload_wait: float = 60.0
    objects_put_rate_mb: float = 20.0  # the steady load PUTs per GiB are counted at
    objects_put_seconds: float = 60.0
    objects_settle_seconds: float = 40.0  # then at most this long for uploads and compaction
    objects_housekeeping_ms: int = 2000  # --retention-check-interval-ms: compaction's period
    objects_upload_interval_ms: int = 0  # --upload-interval-ms; 0: the broker's default
    objects_latency_rate_mb: float = 5.0  # produce latency, durability object vs wal
    objects_latency_seconds: float = 20.0
    objects_latency_warmup: float = 2.0
    # --- session replay (benchmarks/replay.py): the 10M events, 100k sessions ---
    replay_events: int = 10_000_000
    replay_sessions: int = 100_000
    replay_partitions: int = 12
    replay_samples: int = 100
    replay_scans: int = 1
    replay_block_bytes: int = 1024 * 1024
    # --- transactions (1 KiB records, 6 partitions, `producers` transactional producers) ---
    txn_records: tuple[int, ...] = (100, 1000)  # records per transaction
    txn_seconds: float = 10.0
    txn_warmup: float = 2.0


FULL = Plan(
    reps=3,
    tcp_seconds=2.0,
    disk_seconds=5.0,
    sync_seconds=1.5,
    cold_read_bytes=512 << 20,
    produce_seconds=8.0,
    produce_warmup=2.0,
    produce_matrix=((1024, 6), (1024, 60), (100, 6), (100, 60)),
    producers=2,
    consumers=2,
    consume_seconds=40.0,
    latency_rate_mb=20.0,
    latency_seconds=10.0,
    latency_warmup=2.0,
    latency_linger_ms=1.0,
    catchup_bytes=1 << 30,
    catchup_seconds=120.0,
    rebalance_members=2,
    java_records=500_000,
    flush_timeout=60.0,
)
SMOKE = Plan(
    reps=1,
    tcp_seconds=0.3,
    disk_seconds=0.5,
    sync_seconds=0.3,
    cold_read_bytes=16 << 20,
    produce_seconds=1.0,
    produce_warmup=0.3,
    produce_matrix=((1024, 6), (1024, 60), (100, 6), (100, 60)),
    producers=2,
    consumers=2,
    consume_seconds=15.0,
    latency_rate_mb=2.0,
    latency_seconds=1.5,
    latency_warmup=0.3,
    latency_linger_ms=1.0,
    catchup_bytes=16 << 20,
    catchup_seconds=30.0,
    rebalance_members=2,
    java_records=20_000,
    flush_timeout=30.0,
    catchup_upload_wait=0.0,  # 16 MiB stays under --upload-bytes: the restart uploads it
    objects_put_seconds=2.0,
    objects_settle_seconds=6.0,
    objects_housekeeping_ms=500,
    objects_upload_interval_ms=1000,  # the default 10 s would be most of the smoke run
    objects_latency_seconds=1.0,
    objects_latency_warmup=0.3,
    replay_events=20_000,
    replay_sessions=500,
    replay_samples=20,
    replay_block_bytes=64 * 1024,  # 20k events in 1 MiB blocks: a block per partition
    txn_seconds=1.0,
    txn_warmup=0.3,
)

WORKLOADS = ("catchup", "produce", "latency", "rebalance", "java", "objects", "replay", "txn")


def size_label(nbytes: int) -> str:
    if nbytes >= 1 << 30 and nbytes % (1 << 30) == 0:
        return f"{nbytes >> 30} GiB"
    if nbytes >= 1 << 20:
        return f"{nbytes >> 20} MiB"
    if nbytes >= 1024 and nbytes % 1024 == 0:
        return f"{nbytes >> 10} KiB"
    return f"{nbytes} B"


def produce_key(size: int, partitions: int) -> str:
    return f"produce_{size}b_{partitions}p"


class Context:
    """One system's run: the plan, where files go, and the optional py-spy of Strata."""

    def __init__(
        self,
        system: System,
        plan: Plan,
        out: Path,
        profile: bool,
        java_classpath: str | None,
    ) -> None:
        self.system = system
        self.plan = plan
        self.out = out
        self.profile = profile and system.is_strata
        self.java_classpath = java_classpath
        self.profiles: dict[str, Any] = {}
        self.objects_runs = 0  # object-store workload repetitions so far (names its brokers)
        self.last_rep = False  # the last repetition: the objects workload leaves the broker down

    def topic(self, what: str) -> str:
        return f"bench-{what}-{uuid.uuid4().hex[:8]}"

    def check(self, what: str) -> None:
        if not self.system.alive():
            raise RuntimeError(f"{self.system.name} died during {what}:\n{self.system.log_tail()}")

    def meter(self) -> PhaseMeter:
        return PhaseMeter(self.system.pid, self.system.data_dir)

    @contextlib.contextmanager
    def profiled(self, name: str, max_seconds: float) -> Any:
        """py-spy the broker during one workload (its first repetition only)."""
        if not self.profile or name in self.profiles:
            yield
            return
        path = self.out / f"profile-{self.system.name}-{name}.speedscope.json"
        prof = Profiler(self.system.pid, path, max_seconds)
        time.sleep(0.3)  # attached before the load starts
        try:
            yield
        finally:
            summary = prof.stop()
            self.profiles[name] = summary or {"error": "py-spy wrote nothing"}


def _clients(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "index": r["index"],
            "cpu_cores": round(r.get("cpu_cores", 0.0), 3),
            "cpu_bound": r.get("cpu_cores", 0.0) >= CPU_BOUND,
        }
        for r in results
        if "cpu_cores" in r
    ]


def _usage(meter: PhaseMeter, results: list[dict[str, Any]]) -> dict[str, Any]:
    u = meter.finish()
    clients = _clients(results)
    return {
        "broker_cpu_cores": round(u["broker_cpu_cores"], 3),
        # Strata's event loop runs on the main thread (for Kafka: just its main thread, idle)
        "broker_main_thread_cpu_cores": round(u["broker_loop_thread_cpu_cores"], 3),
        "machine_cpu_busy": round(u["machine_cpu_busy"], 3),
        "clients": clients,
        "clients_cpu_bound": any(c["cpu_bound"] for c in clients),
        "other_cpu_cores": round(other_cpu(u, clients), 3),
    }


# --- produce (and tail consume) -----------------------------------------------------------


def produce_once(
    ctx: Context, size: int, partitions: int, seconds: float, warmup: float, max_messages: int
) -> dict[str, Any]:
    """Producers in separate processes, as fast as the broker acks, acks=all."""
    plan, system = ctx.plan, ctx.system
    topic = ctx.topic(f"p{size}b{partitions}")
    create_topic(system.bootstrap, topic, partitions)
    stride = coprime_stride(64, partitions)
    jobs = [
        ProduceJob(
            i,
            system.bootstrap,
            topic,
            partitions,
            seconds,
            max_messages,
            0.0,
            stride,
            plan.linger_ms,
            plan.batch_size,
            plan.flush_timeout,
            message_size=size,
            queue_kbytes=QUEUE_KBYTES,
        )
        for i in range(plan.producers)
    ]
    box: list[PhaseMeter] = []
    results, _ = run_workers(
        "produce",
        jobs,
        seconds + plan.flush_timeout + 60,
        on_start=lambda: box.append(ctx.meter()),
    )
    usage = _usage(box[0], results)
    ends = end_offsets(system.bootstrap, topic, partitions)
    steady = steady_rate(results, warmup, stride)
    sent = sum(r["sent"] for r in results)
    first, last = min(r["start"] for r in results), max(r["flushed"] for r in results)
    overall_mps = sum(ends) / (last - first) if last > first else math.nan
    # too few acks inside the window (a very short run): the whole run, ramp and drain included
    short = steady["messages"] < 20 * stride
    mps = overall_mps if short else steady["msgs_per_s"]
    errors = sum(r["errors_sampled"] for r in results)
    if errors or sum(ends) < sent:
        first_error = next((r["first_error"] for r in results if r["first_error"]), "")
        raise WorkloadError(
            f"{system.name} acknowledged {sum(ends):,} of {sent:,} messages "
            f"({errors} sampled errors, first: {first_error or 'none'})"
        )
    return {
        "topic": topic,
        "ends": ends,
        "msgs_per_s": mps,
        "mb_per_s": mps * size / MB,
        "details": {
            "message_bytes": size,
            "partitions": partitions,
            "producers": plan.producers,
            "sent": sent,
            "delivered": sum(ends),
            "errors_sampled": errors,
            "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
            "steady_seconds": round(steady["seconds"], 3),
            "steady_window_too_short": short,
            "overall_mb_per_s": round(mb_per_s(sum(ends) * size, last - first), 2),
            "ack_latency_at_saturation_ms": latency_summary(steady["latencies"]),
            **usage,
        },
    }


def consume_once(
    ctx: Context,
    topic: str,
    ends: list[int],
    seconds: float,
    isolation_level: str = "read_committed",
    records: list[int] | None = None,
) -> dict[str, Any]:
    """Consumers (assign(), no group) in separate processes read partitions 0..end.

    `records`: the data records per partition when the offsets also hold control batches
    (transaction markers, which consumers never see); by default every offset is a record.
    """
    system = ctx.system
    n = max(1, min(ctx.plan.consumers, len(ends)))
    per = records if records is not None else ends
    jobs = [
        ConsumeJob(
            i,
            system.bootstrap,
            topic,
            tuple((p, 0, ends[p]) for p in range(len(ends)) if p % n == i),
            seconds,
            isolation_level,
            sum(per[p] for p in range(len(ends)) if p % n == i),
        )
        for i in range(n)
    ]
    box: list[PhaseMeter] = []
    results, _ = run_workers(
        "consume", jobs, seconds + 60, on_start=lambda: box.append(ctx.meter())
    )
    usage = _usage(box[0], results)
    msgs = sum(r["messages"] for r in results)
    nbytes = sum(r["bytes"] for r in results)
    if msgs < sum(per):
        raise WorkloadError(
            f"{system.name}: consumers read {msgs:,} of {sum(per):,} messages in {seconds:g}s "
            f"({isolation_level})"
        )
    took = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "mb_per_s": mb_per_s(nbytes, took),
        "details": {
            "consumers": n,
            "isolation_level": isolation_level,
            "messages": msgs,
            "expected": sum(per),
            "complete": msgs == sum(per),
            "bytes": nbytes,
            "seconds": round(took, 3),
            "errors": sum(r["errors"] for r in results),
            **usage,
        },
    }


def produce_workload(ctx: Context) -> dict[str, Any]:
    """One repetition of the produce matrix; the 1 KiB / 6-partition data is then tail-read."""
    plan = ctx.plan
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    for size, partitions in plan.produce_matrix:
        key = produce_key(size, partitions)
        step(f"  {ctx.system.name}: produce {size_label(size)} x {partitions} partitions")
        with ctx.profiled(key, plan.produce_seconds + plan.flush_timeout):
            r = produce_once(
                ctx, size, partitions, plan.produce_seconds, plan.produce_warmup, 50_000_000
            )
        ctx.check(key)
        figures[f"{key}_mb_s"] = r["mb_per_s"]
        figures[f"{key}_msgs_s"] = r["msgs_per_s"]
        details[key] = r["details"]
        if (size, partitions) == plan.produce_matrix[0]:
            step(f"  {ctx.system.name}: tail consume of {sum(r['ends']):,} messages")
            with ctx.profiled("tail_consume", plan.consume_seconds):
                c = consume_once(ctx, r["topic"], r["ends"], plan.consume_seconds)
            ctx.check("tail consume")
            figures["tail_consume_mb_s"] = c["mb_per_s"]
            details["tail_consume"] = c["details"]
    return {"figures": figures, "details": details}


# --- transactions ------------------------------------------------------------------------


def txn_key(records_per_txn: int) -> str:
    return f"txn_{records_per_txn}"


def txn_produce_once(ctx: Context, records_per_txn: int) -> dict[str, Any]:
    """`producers` transactional producers in separate processes, transactions back to back,
    each over all partitions; throughput counts records of transactions that committed."""
    plan, system = ctx.plan, ctx.system
    size, partitions = 1024, 6
    topic = ctx.topic(f"txn{records_per_txn}")
    create_topic(system.bootstrap, topic, partitions)
    run = uuid.uuid4().hex[:8]
    jobs = [
        TxnProduceJob(
            i,
            system.bootstrap,
            topic,
            partitions,
            plan.txn_seconds,
            1_000_000,
            records_per_txn,
            plan.linger_ms,
            plan.batch_size,
            plan.flush_timeout,
            f"bench-txn-{run}-{i}",
            message_size=size,
        )
        for i in range(plan.producers)
    ]
    box: list[PhaseMeter] = []
    results, _ = run_workers(
        "txn-produce",
        jobs,
        plan.txn_seconds + plan.flush_timeout + 60,
        on_start=lambda: box.append(ctx.meter()),
    )
    usage = _usage(box[0], results)
    txns = sum(r["txns"] for r in results)
    records = sum(r["records"] for r in results)
    ends = end_offsets(system.bootstrap, topic, partitions)
    # every transaction wrote to every partition: one commit marker each per partition
    data = [e - txns for e in ends]
    if records_per_txn < partitions or sum(data) != records or min(data) < 0:
        raise WorkloadError(
            f"{system.name}: {txns:,} transactions of {records_per_txn} committed, but the "
            f"partitions end at {ends} ({sum(ends):,} offsets for {records:,} records)"
        )
    # steady: the records of transactions committed while every producer ran, past warm-up
    t0 = max(r["start"] for r in results) + plan.txn_warmup
    t1 = min(r["stopped"] for r in results)
    in_window = sum(records_per_txn for r in results for t in r["committed"] if t0 <= t < t1)
    first, last = min(r["start"] for r in results), max(r["stopped"] for r in results)
    overall = records / (last - first) if last > first else math.nan
    short = in_window < 4 * records_per_txn * len(results) or t1 <= t0
    rps = overall if short else in_window / (t1 - t0)
    commits = [
        d - s
        for r in results
        for s, d in zip(r["commit_started"], r["committed"], strict=True)
        if short or s >= t0
    ]
    commit_ms = latency_summary(commits)
    return {
        "topic": topic,
        "ends": ends,
        "records": data,
        "records_per_s": rps,
        "mb_per_s": rps * size / MB,
        "commit_ms": commit_ms,
        "details": {
            "records_per_txn": records_per_txn,
            "message_bytes": size,
            "partitions": partitions,
            "producers": plan.producers,
            "transactions": txns,
            "records": records,
            "end_offsets": sum(ends),
            "steady_seconds": round(t1 - t0, 3),
            "steady_window_too_short": short,
            "overall_mb_per_s": round(overall * size / MB, 2),
            "commit_ms": commit_ms,
            "commit_quantiles_ms": _quantiles(sorted(commits)),
            "queue_full": sum(r["queue_full"] for r in results),
            **usage,
        },
    }


def txn_workload(ctx: Context) -> dict[str, Any]:
    """Transactional produce throughput and commit latency at each transaction size, then the
    last size's data tail-read twice at each isolation level, in the order uncommitted,
    committed, committed, uncommitted; each level's figure is the mean of its two reads, and
    their ratio is what read_committed costs (the LSO bound, control batches skipped)."""
    plan, system = ctx.plan, ctx.system
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for n in plan.txn_records:
        key = txn_key(n)
        step(f"  {system.name}: transactional produce, {n:,} records per transaction")
        with ctx.profiled(key, plan.txn_seconds + plan.flush_timeout):
            last = txn_produce_once(ctx, n)
        ctx.check(key)
        figures[f"{key}_mb_s"] = last["mb_per_s"]
        figures[f"{key}_msgs_s"] = last["records_per_s"]
        figures[f"{key}_commit_p50_ms"] = last["commit_ms"]["p50"]
        figures[f"{key}_commit_p99_ms"] = last["commit_ms"]["p99"]
        details[key] = last["details"]
    # A B B A: neither level gets only the first (or only a warmer) read of the data
    reads: dict[str, list[float]] = {"read_uncommitted": [], "read_committed": []}
    for level in ("read_uncommitted", "read_committed", "read_committed", "read_uncommitted"):
        step(f"  {system.name}: tail consume of {sum(last['records']):,} records, {level}")
        with ctx.profiled(f"txn_{level}", plan.consume_seconds):
            c = consume_once(
                ctx, last["topic"], last["ends"], plan.consume_seconds, level, last["records"]
            )
        ctx.check(f"txn tail consume {level}")
        reads[level].append(c["mb_per_s"])
        details.setdefault(f"consume_{level}", c["details"])  # the first read's CPU shares
        details.setdefault("consume_mb_s", []).append({level: round(c["mb_per_s"], 2)})
    for level, rates in reads.items():
        figures[f"txn_consume_{level}_mb_s"] = sum(rates) / len(rates)
    figures["txn_read_committed_ratio"] = (
        figures["txn_consume_read_committed_mb_s"] / figures["txn_consume_read_uncommitted_mb_s"]
    )
    return {"figures": figures, "details": details}


# --- end-to-end latency -------------------------------------------------------------------


def latency_workload(ctx: Context) -> dict[str, Any]:
    """One producer at a fixed offered load; one consumer timing each message produce->fetch."""
    plan, system = ctx.plan, ctx.system
    size, partitions = 1024, 6
    topic = ctx.topic("latency")
    create_topic(system.bootstrap, topic, partitions)
    rate = plan.latency_rate_mb * MB / size
    max_messages = int(rate * plan.latency_seconds) + 1
    producer = ProduceJob(
        0,
        system.bootstrap,
        topic,
        partitions,
        plan.latency_seconds,
        max_messages,
        rate,
        1,
        plan.latency_linger_ms,
        plan.batch_size,
        plan.flush_timeout,
        message_size=size,
        stamp=True,
    )
    consumer = LatencyConsumeJob(
        1,
        system.bootstrap,
        topic,
        partitions,
        plan.latency_seconds + 30,
        max_messages,
        min_seconds=plan.latency_seconds,
    )
    step(f"  {system.name}: latency at {plan.latency_rate_mb:g} MB/s")
    box: list[PhaseMeter] = []
    with ctx.profiled("latency", plan.latency_seconds + plan.flush_timeout):
        results, _ = run_workers(
            "latency",
            [producer, consumer],
            plan.latency_seconds + plan.flush_timeout + 60,
            on_start=lambda: box.append(ctx.meter()),
        )
    ctx.check("latency")
    prod, cons = results
    if prod["errors_sampled"] or cons["errors"]:
        raise WorkloadError(
            f"{system.name}: latency run had {prod['errors_sampled']} produce and "
            f"{cons['errors']} consume errors (first: {prod['first_error'] or cons['first_error']})"
        )
    usage = _usage(box[0], [prod, cons])
    cut = prod["start"] + plan.latency_warmup
    e2e = sorted(
        lat for t, lat in zip(cons["sent_times"], cons["latencies"], strict=True) if t >= cut
    )
    ack = sorted(
        d - s for s, d in zip(prod["sent_times"], prod["done_times"], strict=True) if s >= cut
    )
    e2e_ms = latency_summary(e2e)
    took = prod["stopped"] - prod["start"]
    return {
        "figures": {
            "e2e_latency_p50_ms": e2e_ms["p50"],
            "e2e_latency_p99_ms": e2e_ms["p99"],
            "e2e_latency_p999_ms": e2e_ms["p999"],
        },
        "details": {
            "offered_mb_per_s": plan.latency_rate_mb,
            "achieved_mb_per_s": round(mb_per_s(prod["sent"] * size, took), 2),
            "linger_ms": plan.latency_linger_ms,
            "sent": prod["sent"],
            "received": cons["messages"],
            "errors": prod["errors_sampled"] + cons["errors"],
            "e2e_ms": e2e_ms,
            "e2e_quantiles_ms": _quantiles(e2e),
            "ack_ms": latency_summary(ack),
            **usage,
        },
    }


def _quantiles(ordered: list[float]) -> dict[str, float]:
    from benchmarks.common import percentile

    return {str(q): percentile(ordered, q) * 1e3 for q in LATENCY_QUANTILES}


# --- consumer-group rebalance -------------------------------------------------------------


class _Member:
    """A subscribed confluent-kafka consumer polled on its own thread; records its assignments."""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str) -> None:
        from confluent_kafka import Consumer

        self.name = name
        self.assigned: list[tuple[float, frozenset[int]]] = []
        self.stop = threading.Event()
        self.error = ""
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": name,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 500,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
            }
        )
        self.topic = topic
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned.append((time.monotonic(), frozenset(p.partition for p in partitions)))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned.append((time.monotonic(), frozenset()))

    def _run(self) -> None:
        try:
            self.consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            while not self.stop.is_set():
                self.consumer.poll(0.05)
        except Exception as e:  # reported through the result
            self.error = f"{type(e).__name__}: {e}"

    def current(self) -> frozenset[int]:
        return self.assigned[-1][1] if self.assigned else frozenset()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        with contextlib.suppress(Exception):
            self.consumer.close()


def _settled(members: list[_Member], partitions: int, since: float) -> float | None:
    """When every member got an assignment after `since` and together they cover the topic."""
    if any(not m.assigned or m.assigned[-1][0] < since for m in members):
        return None
    parts = [m.current() for m in members]
    if sum(len(p) for p in parts) != partitions or frozenset().union(*parts) != frozenset(
        range(partitions)
    ):
        return None
    if any(not p for p in parts):
        return None
    return max(m.assigned[-1][0] for m in members)


def _wait(cond: Callable[[], float | None], timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = cond()
        if t is not None:
            return t
        time.sleep(0.01)
    return None


def rebalance_workload(ctx: Context) -> dict[str, Any]:
    """A stable group of N consumers; one more subscribes; time until all N+1 are assigned.

    Classic protocol, eager range assignor, heartbeat.interval.ms=500 (how soon the existing
    members hear of the rebalance), session.timeout.ms=10000. Also the first join of the group.
    """
    system = ctx.system
    partitions = 6
    topic = ctx.topic("rebalance")
    create_topic(system.bootstrap, topic, partitions)
    group = f"bench-group-{uuid.uuid4().hex[:8]}"
    n = ctx.plan.rebalance_members
    step(f"  {system.name}: rebalance, 1 member joining a group of {n}")
    members: list[_Member] = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            m = _Member(system.bootstrap, group, topic, f"member-{i}")
            members.append(m)
            m.thread.start()
        t_first = _wait(lambda: _settled(members, partitions, t0), 60)
        if t_first is None:
            raise RuntimeError(f"group of {n} did not settle in 60s on {system.name}")
        time.sleep(1.0)  # stable: a heartbeat or two
        joiner = _Member(system.bootstrap, group, topic, f"member-{n}")
        t1 = time.monotonic()
        members.append(joiner)
        joiner.thread.start()
        t_join = _wait(lambda: _settled(members, partitions, t1), 60)
        if t_join is None:
            raise RuntimeError(f"rebalance to {n + 1} members did not finish in 60s")
        errors = [m.error for m in members if m.error]
    finally:
        for m in members:
            m.close()
    ctx.check("rebalance")
    return {
        "figures": {"rebalance_join_ms": (t_join - t1) * 1e3},
        "details": {
            "members_before": n,
            "first_join_ms": round((t_first - t0) * 1e3, 1),
            "assignments": [sorted(m.current()) for m in members],
            "errors": errors,
        },
    }


# --- the Java client ----------------------------------------------------------------------


def java_workload(ctx: Context) -> dict[str, Any]:
    """ProducerPerformance (1 KiB, 6 partitions, acks=all), then ConsumerPerformance reads it."""
    plan, system = ctx.plan, ctx.system
    assert ctx.java_classpath is not None
    size, partitions = 1024, 6
    topic = ctx.topic("java")
    create_topic(system.bootstrap, topic, partitions)
    step(f"  {system.name}: Java ProducerPerformance, {plan.java_records:,} x 1 KiB")
    props = {
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 262_144,
        "compression.type": "none",
        "client.id": "strata-bench-java",
    }
    box: list[PhaseMeter] = [ctx.meter()]
    with ctx.profiled("java_produce", 120):
        p = javaperf.producer_performance(
            ctx.java_classpath, system.bootstrap, topic, plan.java_records, size, props, 600
        )
    pu = box[0].finish()
    ctx.check("java produce")
    step(f"  {system.name}: Java ConsumerPerformance")
    c = javaperf.consumer_performance(
        ctx.java_classpath,
        system.bootstrap,
        topic,
        plan.java_records,
        size,
        600,
        f"bench-java-{uuid.uuid4().hex[:8]}",
    )
    ctx.check("java consume")
    return {
        "figures": {"java_produce_mb_s": p["mb_per_s"], "java_consume_mb_s": c["mb_per_s"]},
        "details": {
            "producer": {**p, "broker_cpu_cores": round(pu["broker_cpu_cores"], 3)},
            "consumer": c,
        },
    }


# --- catch-up read ------------------------------------------------------------------------


class Catchup:
    """Write `catchup_bytes` once; each repetition restarts the broker, evicts its files from
    the page cache and reads everything back from offset 0 (a consumer that fell far behind).

    For Strata the data is then all in the object store (uploaded as it came, the rest by the
    shutdown of the restart, after which the WAL is trimmed), so the read is a cold read of
    objects: the broker's counters say how many bytes it fetched, and the same objects are
    then read straight from the backend (`objectstore.read_direct`) for the ratio.
    """

    size = 1024
    partitions = 6

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.topic = ""
        self.ends: list[int] = []
        self.write: dict[str, Any] = {}

    def prepare(self) -> None:
        ctx, plan = self.ctx, self.ctx.plan
        total = plan.catchup_bytes // self.size
        per = math.ceil(total / plan.producers)
        step(f"  {ctx.system.name}: writing {size_label(plan.catchup_bytes)} for the catch-up read")
        r = produce_once(ctx, self.size, self.partitions, plan.catchup_seconds, 0.0, per)
        self.topic, self.ends = r["topic"], r["ends"]
        self.write = {
            "messages": sum(self.ends),
            "bytes": sum(self.ends) * self.size,
            "mb_per_s": r["details"]["overall_mb_per_s"],
        }
        if _store(ctx.system) is not None:
            t0 = time.monotonic()
            backlog = wait_uploaded(ctx.system, plan.catchup_upload_wait)
            self.write["upload_wait_s"] = round(time.monotonic() - t0, 2)
            self.write["upload_backlog_at_restart"] = backlog  # uploaded by the shutdown

    def run(self) -> dict[str, Any]:
        ctx, system = self.ctx, self.ctx.system
        step(f"  {system.name}: restart, evict the page cache, read back from 0")
        t0 = time.monotonic()
        system.restart()
        restart = time.monotonic() - t0
        evicted = evict_page_cache(system.data_dir)
        store = _store(system)
        before = objectstore.counters(system.scrape()) if store is not None else {}
        with ctx.profiled("catchup", ctx.plan.catchup_seconds):
            c = consume_once(ctx, self.topic, self.ends, ctx.plan.catchup_seconds)
        ctx.check("catch-up read")
        figures = {"catchup_cold_mb_s": c["mb_per_s"], "restart_s": restart}
        details = {**c["details"], "evicted_bytes": evicted, "written": self.write}
        if store is not None:
            used = objectstore.delta(before, objectstore.counters(system.scrape()))
            step(f"  {system.name}: the same objects straight from {store.describe()}")
            direct = objectstore.read_direct(store)
            # the broker's read over the same bytes the direct read moved (the objects)
            via_broker = mb_per_s(direct["bytes"], c["details"]["seconds"])
            figures["catchup_store_mb_s"] = via_broker
            figures["catchup_direct_mb_s"] = direct["mb_per_s"]
            figures["catchup_ratio_to_direct"] = via_broker / direct["mb_per_s"]
            details["object_store"] = {
                "objects_bytes": direct["bytes"],
                "broker_fetched_bytes": used["bytes_down"],
                # about 1.0: the catch-up came from objects (not the WAL, not a cache)
                "fetched_over_objects": used["bytes_down"] / direct["bytes"],
                "broker_gets": used["gets"],
                "broker_get_errors": used["get_errors"],
                "block_cache_hits": used["block_cache_hits"],
                "block_cache_misses": used["block_cache_misses"],
                "broker_mb_per_s_over_objects": round(via_broker, 2),
                "direct": direct,
            }
        return {"figures": figures, "details": details}


def _store(system: System) -> objectstore.StoreLocation | None:
    """The system's object store, if it has one the harness can read (Strata's)."""
    return getattr(system, "store", None)


def wait_uploaded(system: Any, timeout: float, poll: float = 0.2) -> float:
    """Wait until the broker's upload backlog is empty (at most `timeout`); what is left."""
    deadline = time.monotonic() + timeout
    while True:
        backlog = objectstore.counters(system.scrape())["upload_backlog_bytes"]
        if backlog <= 0 or time.monotonic() >= deadline:
            return backlog
        time.sleep(poll)


# --- the object store under steady load ----------------------------------------------------


def objects_workload(ctx: Context) -> dict[str, Any]:
    """Produce latency with acks after the upload (`--durability object`) next to the default
    (`wal`: after the local fdatasync), at a fixed offered load; then, on the `wal` broker,
    object-store PUTs per GiB ingested at a steady rate, housekeeping (compaction) included.

    Each mode runs on a fresh broker of the system's kind (same backend, its own data dir and
    store), while the system's own broker is stopped so the machine is otherwise quiet.
    """
    plan, system = ctx.plan, ctx.system
    if _store(system) is None or not hasattr(system, "variant"):
        raise WorkloadError(f"{system.name} has no object store the harness can read")
    n = ctx.objects_runs = ctx.objects_runs + 1
    figures: dict[str, float] = {}
    details: dict[str, Any] = {}
    system.stop_broker()
    try:
        modes = (
            ("object", ["--durability", "object"]),
            ("wal", ["--durability", "wal"]),
        )
        for mode, args in modes:
            extra = ["--retention-check-interval-ms", str(plan.objects_housekeeping_ms), *args]
            if plan.objects_upload_interval_ms:
                extra += ["--upload-interval-ms", str(plan.objects_upload_interval_ms)]
            v = system.variant(f"{mode}-{n}", extra)
            try:
                step(f"  {system.name}: {mode} durability, fresh broker")
                v.start()
                lat = _ack_latency(ctx, v, mode)
                details[f"latency_{mode}"] = lat
                figures[f"object_ack_{mode}_p50_ms"] = lat["ack_ms"]["p50"]
                figures[f"object_ack_{mode}_p99_ms"] = lat["ack_ms"]["p99"]
                if mode == "wal":
                    puts = _puts_per_gib(ctx, v)
                    details["puts"] = puts
                    figures["object_puts_per_gib"] = puts["puts_per_gib"]
                    figures["object_gets_per_gib"] = puts["gets_per_gib"]
                details.setdefault("brokers", {})[mode] = v.config()
            finally:
                v.discard()
    finally:
        if not ctx.last_rep:
            system.start()
    return {"figures": figures, "details": details}


def _ack_latency(ctx: Context, v: Any, mode: str) -> dict[str, Any]:
    """One paced producer (acks=all, every message timed) on a new topic of broker `v`."""
    plan = ctx.plan
    size, partitions = 1024, 6
    topic = ctx.topic(f"ack-{mode}")
    create_topic(v.bootstrap, topic, partitions)
    rate = plan.objects_latency_rate_mb * MB / size
    seconds = plan.objects_latency_seconds
    job = ProduceJob(
        0,
        v.bootstrap,
        topic,
        partitions,
        seconds,
        int(rate * seconds) + 1,
        rate,
        1,
        plan.latency_linger_ms,
        plan.batch_size,
        plan.flush_timeout,
        message_size=size,
    )
    step(f"  {ctx.system.name}: produce latency at {plan.objects_latency_rate_mb:g} MB/s, {mode}")
    before = objectstore.counters(v.scrape())
    box: list[PhaseMeter] = []
    results, _ = run_workers(
        "ack-latency",
        [job],
        seconds + plan.flush_timeout + 60,
        on_start=lambda: box.append(PhaseMeter(v.pid, v.data_dir)),
    )
    if not v.alive():
        raise RuntimeError(f"{ctx.system.name} ({mode}) died:\n{v.log_tail()}")
    prod = results[0]
    used = objectstore.delta(before, objectstore.counters(v.scrape()))
    if prod["errors_sampled"] or prod["unflushed"]:
        raise WorkloadError(
            f"{ctx.system.name} ({mode}): {prod['errors_sampled']} produce errors, "
            f"{prod['unflushed']} unacknowledged (first: {prod['first_error']})"
        )
    usage = _usage(box[0], [prod])
    cut = prod["start"] + plan.objects_latency_warmup
    ack = sorted(
        d - s for s, d in zip(prod["sent_times"], prod["done_times"], strict=True) if s >= cut
    )
    took = prod["stopped"] - prod["start"]
    return {
        "durability": mode,
        "offered_mb_per_s": plan.objects_latency_rate_mb,
        "achieved_mb_per_s": round(mb_per_s(prod["sent"] * size, took), 2),
        "linger_ms": plan.latency_linger_ms,
        "sent": prod["sent"],
        "ack_ms": latency_summary(ack),
        "ack_quantiles_ms": _quantiles(ack),
        "store_puts": used["puts"],
        "store_bytes_up": used["bytes_up"],
        "uploads": used["uploads"],
        **usage,
    }


def _puts_per_gib(ctx: Context, v: Any) -> dict[str, Any]:
    """A steady paced load for a while, then uploads drain and housekeeping runs: the store
    requests over that whole span per GiB the topic grew by."""
    plan = ctx.plan
    size, partitions = 1024, 6
    topic = ctx.topic("puts")
    create_topic(v.bootstrap, topic, partitions)  # a metadata PUT: before the count starts
    wait_uploaded(v, plan.objects_settle_seconds)
    seconds = plan.objects_put_seconds
    per = plan.objects_put_rate_mb * MB / size / plan.producers
    stride = coprime_stride(997, partitions)
    jobs = [
        ProduceJob(
            i,
            v.bootstrap,
            topic,
            partitions,
            seconds,
            int(per * seconds) + 1,
            per,
            stride,
            plan.linger_ms,
            plan.batch_size,
            plan.flush_timeout,
            message_size=size,
        )
        for i in range(plan.producers)
    ]
    step(
        f"  {ctx.system.name}: {plan.objects_put_rate_mb:g} MB/s for {seconds:g} s, "
        "counting object-store requests"
    )
    m0 = v.scrape()
    results, _ = run_workers("puts", jobs, seconds + plan.flush_timeout + 60)
    stopped = time.monotonic()
    errors = sum(r["errors_sampled"] for r in results)
    if errors or any(r["unflushed"] for r in results):
        raise WorkloadError(f"{ctx.system.name}: {errors} produce errors at a steady rate")
    # uploads drain (the last one waits for --upload-interval-ms), then housekeeping rounds
    # (compaction) until two in a row pass without a PUT
    backlog = wait_uploaded(v, plan.objects_settle_seconds)
    period = plan.objects_housekeeping_ms / 1000 + 0.1
    deadline = stopped + plan.objects_settle_seconds
    last, quiet = objectstore.counters(v.scrape()), 0
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(min(period, max(0.0, deadline - time.monotonic())))
        now = objectstore.counters(v.scrape())
        same = now["puts"] == last["puts"] and now["compactions"] == last["compactions"]
        quiet = quiet + 1 if same else 0
        last = now
    m1 = v.scrape()
    settled = time.monotonic() - stopped
    used = objectstore.delta(objectstore.counters(m0), objectstore.counters(m1))
    ingested = objectstore.topic_bytes_in(m1, topic) - objectstore.topic_bytes_in(m0, topic)
    gib = ingested / (1 << 30)
    sent = sum(r["sent"] for r in results)
    took = max(r["stopped"] for r in results) - min(r["start"] for r in results)
    return {
        "offered_mb_per_s": plan.objects_put_rate_mb,
        "achieved_mb_per_s": round(mb_per_s(sent * size, took), 2),
        "seconds": round(took, 2),
        "settle_seconds": round(settled, 2),
        "upload_backlog_after": backlog,
        "ingested_bytes": ingested,
        "puts": used["puts"],
        "gets": used["gets"],
        "lists": used["lists"],
        "deletes": used["deletes"],
        "request_errors": used["put_errors"] + used["get_errors"],
        "puts_per_gib": used["puts"] / gib if gib else math.nan,
        "gets_per_gib": used["gets"] / gib if gib else math.nan,
        "uploads": used["uploads"],
        "compactions": used["compactions"],
        "objects_deleted": used["objects_deleted"],
        "objects": used["objects"],
        "bytes_up": used["bytes_up"],
        "mean_put_bytes": used["bytes_up"] / used["puts"] if used["puts"] else math.nan,
        "upload_interval_ms": plan.objects_upload_interval_ms or "default",
        "housekeeping_ms": plan.objects_housekeeping_ms,
    }


def dir_size(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
