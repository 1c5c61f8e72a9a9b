"""Load generators: confluent-kafka (librdkafka) producers and consumers in separate processes.

Several processes, so the Python client loop is not the bottleneck; they start together behind a
barrier and report back through a queue. Every loop is bounded by count and time.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing as mp
import os
import signal
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.common import MESSAGE_SIZE, MIB, rusage_cpu

STAMP = struct.Struct("<d")  # time.monotonic() at produce(): one clock for every process

# --- load generator processes -------------------------------------------------------------


@dataclass(frozen=True)
class ProduceJob:
    index: int
    bootstrap: str
    topic: str
    partitions: int
    seconds: float
    max_messages: int
    rate: float  # messages/s for this process; 0 = as fast as the broker acks
    sample_every: int  # timestamp every n-th message's delivery (1 = all)
    linger_ms: float
    batch_size: int
    flush_timeout: float
    message_size: int = MESSAGE_SIZE
    stamp: bool = False  # sampled messages carry their send time (monotonic) in 8 bytes
    acks: str = "all"
    queue_kbytes: int = 256 * 1024  # librdkafka's local queue: what can wait for acks


@dataclass(frozen=True)
class ConsumeJob:
    index: int
    bootstrap: str
    topic: str
    ranges: tuple[tuple[int, int, int], ...]  # (partition, start offset, end offset)
    seconds: float
    isolation_level: str = "read_committed"  # librdkafka's default
    expected: int = -1  # records to read; -1: every offset of the ranges (no control batches)


@dataclass(frozen=True)
class TxnProduceJob:
    """A transactional producer: each transaction spreads `records_per_txn` records over every
    partition (round-robin from partition 0, so each partition's share is known), then commits."""

    index: int
    bootstrap: str
    topic: str
    partitions: int
    seconds: float
    max_txns: int
    records_per_txn: int
    linger_ms: float
    batch_size: int
    txn_timeout: float  # seconds commit_transaction may take
    transactional_id: str
    message_size: int = MESSAGE_SIZE


class _Deliveries:
    """Send and delivery times of sampled messages (time.monotonic: one clock for all processes)."""

    def __init__(self) -> None:
        self.sent = array("d")
        self.done = array("d")
        self.librdkafka = array("d")  # librdkafka's own produce()-to-ack latency
        self.errors = 0
        self.first_error = ""

    def record(self, t_send: float, err: Any, msg: Any) -> None:
        now = time.monotonic()
        if err is not None:
            self.errors += 1
            self.first_error = self.first_error or str(err)
            return
        self.sent.append(t_send)
        self.done.append(now)
        self.librdkafka.append(msg.latency() or 0.0)


def producer_config(job: ProduceJob) -> dict[str, Any]:
    return {
        "bootstrap.servers": job.bootstrap,
        "client.id": f"strata-bench-producer-{job.index}",
        "acks": job.acks,
        "linger.ms": job.linger_ms,
        "batch.size": job.batch_size,
        "compression.type": "none",
        "enable.idempotence": False,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": job.queue_kbytes,
        "message.timeout.ms": 120_000,
    }


def _run_producer(job: ProduceJob, barrier: Any) -> dict[str, Any]:
    from confluent_kafka import Producer

    p = Producer(producer_config(job))
    md = p.list_topics(job.topic, timeout=20)
    found = len(md.topics[job.topic].partitions)
    if found != job.partitions:
        raise RuntimeError(f"topic {job.topic} has {found} partitions, expected {job.partitions}")
    value = os.urandom(job.message_size)
    stamp, pack_time = job.stamp, STAMP.pack
    pad = value[STAMP.size :]
    topic, partitions, sample_every = job.topic, job.partitions, job.sample_every
    deliveries = _Deliveries()
    record = deliveries.record
    produce, poll = p.produce, p.poll
    monotonic = time.monotonic
    sent = queue_full = 0
    next_sample = 0
    part = job.index % partitions  # producers start on different partitions

    barrier.wait(60)
    cpu0 = rusage_cpu()
    start = monotonic()
    deadline = start + job.seconds
    burst = 512
    while sent < job.max_messages:
        now = monotonic()
        if now >= deadline:
            break
        n = burst
        if job.rate > 0:
            due = int((now - start) * job.rate) + 1 - sent
            if due <= 0:  # wait about a millisecond (less if a delivery comes), then burst
                poll(0.001)
                continue
            n = min(due, burst)
        for _ in range(n):
            try:
                if sent == next_sample:
                    t_send = monotonic()
                    produce(
                        topic,
                        pack_time(t_send) + pad if stamp else value,
                        partition=part,
                        on_delivery=functools.partial(record, t_send),
                    )
                    next_sample += sample_every
                else:
                    produce(topic, value, partition=part)
            except BufferError:  # the local queue is full: the broker is the bottleneck
                queue_full += 1
                poll(0.001)
                break
            sent += 1
            part = part + 1 if part + 1 < partitions else 0
        poll(0)
    stopped = monotonic()
    unflushed = p.flush(job.flush_timeout)
    flushed = monotonic()
    cpu = rusage_cpu() - cpu0
    return {
        "index": job.index,
        "sent": sent,
        "unflushed": unflushed,
        "queue_full": queue_full,
        "start": start,
        "stopped": stopped,
        "flushed": flushed,
        "cpu_seconds": cpu,
        "cpu_cores": cpu / (flushed - start),
        "errors_sampled": deliveries.errors,
        "first_error": deliveries.first_error,
        "sent_times": deliveries.sent,
        "done_times": deliveries.done,
        "librdkafka_latency": deliveries.librdkafka,
    }


def _run_consumer(job: ConsumeJob, barrier: Any) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": job.bootstrap,
            "client.id": f"strata-bench-consumer-{job.index}",
            "group.id": f"strata-bench-{os.getpid()}",  # required by the client; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": job.isolation_level,
            "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": 4 * MIB,
            "fetch.max.bytes": 64 * MIB,
            "queued.max.messages.kbytes": 256 * 1024,
        }
    )
    try:
        c.list_topics(job.topic, timeout=20)
        expected = (
            job.expected if job.expected >= 0 else sum(end - start for _, start, end in job.ranges)
        )
        barrier.wait(60)
        cpu0 = rusage_cpu()
        start = time.monotonic()
        deadline = start + job.seconds
        c.assign([TopicPartition(job.topic, p, s) for p, s, e in job.ranges if e > s])
        got = nbytes = errors = 0
        first_error = ""
        last = start
        while got < expected and time.monotonic() < deadline:
            msgs = c.consume(10_000, 0.2)
            if not msgs:
                continue
            last = time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    errors += 1
                    first_error = first_error or str(m.error())
                    continue
                got += 1
                nbytes += len(m.value())
        cpu = rusage_cpu() - cpu0
        return {
            "index": job.index,
            "expected": expected,
            "messages": got,
            "bytes": nbytes,
            "errors": errors,
            "first_error": first_error,
            "start": start,
            "end": last,
            "cpu_seconds": cpu,
            "cpu_cores": cpu / max(1e-9, last - start),
        }
    finally:
        c.close()


@dataclass(frozen=True)
class LatencyConsumeJob:
    """Tail a fresh topic from offset 0 and time every stamped message from produce() to here."""

    index: int
    bootstrap: str
    topic: str
    partitions: int
    seconds: float  # gives up after this long
    expected: int  # stops once this many messages arrived
    min_seconds: float = 0.0  # past this, also stops after a second without messages


def _run_latency_consumer(job: LatencyConsumeJob, barrier: Any) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": job.bootstrap,
            "client.id": f"strata-bench-e2e-{job.index}",
            "group.id": f"strata-bench-e2e-{os.getpid()}",  # required by the client; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100,
            "fetch.error.backoff.ms": 10,
        }
    )
    try:
        c.list_topics(job.topic, timeout=20)
        c.assign([TopicPartition(job.topic, p, 0) for p in range(job.partitions)])
        c.consume(1, 0.5)  # connected and fetching before the producers start
        barrier.wait(60)
        monotonic, unpack = time.monotonic, STAMP.unpack_from
        sent, latency = array("d"), array("d")
        errors, first_error = 0, ""
        cpu0 = rusage_cpu()
        start = monotonic()
        deadline = start + job.seconds
        got = 0
        last = start
        while got < job.expected and monotonic() < deadline:
            first = c.poll(0.05)  # returns as soon as one message is there
            if first is None:
                now = monotonic()
                if now - start > job.min_seconds and now - last > 1.0:
                    break  # the producer is done (it may send fewer than `expected`)
                continue
            now = last = monotonic()
            for m in [first, *c.consume(10_000, 0)]:  # and whatever else already arrived
                if m.error() is not None:
                    errors += 1
                    first_error = first_error or str(m.error())
                    continue
                got += 1
                t = unpack(m.value())[0]
                sent.append(t)
                latency.append(now - t)
        return {
            "index": job.index,
            "messages": got,
            "errors": errors,
            "first_error": first_error,
            "sent_times": sent,
            "latencies": latency,
            "cpu_cores": (rusage_cpu() - cpu0) / max(1e-9, monotonic() - start),
        }
    finally:
        c.close()


def _run_txn_producer(job: TxnProduceJob, barrier: Any) -> dict[str, Any]:
    """Transactions back to back until the time or the count is up; commit_transaction timed.

    The commit includes flushing what the transaction still has queued, as it does for an
    application; records count once their transaction committed.
    """
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": job.bootstrap,
            "client.id": f"strata-bench-txn-{job.index}",
            "transactional.id": job.transactional_id,
            "linger.ms": job.linger_ms,
            "batch.size": job.batch_size,
            "compression.type": "none",
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": 256 * 1024,
            "transaction.timeout.ms": 60_000,  # the default; message.timeout.ms may not exceed it
            "message.timeout.ms": 60_000,
        }
    )
    md = p.list_topics(job.topic, timeout=20)
    found = len(md.topics[job.topic].partitions)
    if found != job.partitions:
        raise RuntimeError(f"topic {job.topic} has {found} partitions, expected {job.partitions}")
    p.init_transactions(30)
    value = os.urandom(job.message_size)
    topic, partitions, n = job.topic, job.partitions, job.records_per_txn
    produce, poll = p.produce, p.poll
    monotonic = time.monotonic
    begun, committed = array("d"), array("d")  # per transaction
    txns = queue_full = 0

    barrier.wait(60)
    cpu0 = rusage_cpu()
    start = monotonic()
    deadline = start + job.seconds
    while txns < job.max_txns and monotonic() < deadline:
        p.begin_transaction()
        for i in range(n):
            while True:
                try:
                    produce(topic, value, partition=i % partitions)
                    break
                except BufferError:  # the local queue is full: wait for acks
                    queue_full += 1
                    poll(0.001)
            if i & 511 == 511:
                poll(0)
        t_commit = monotonic()
        p.commit_transaction(job.txn_timeout)
        begun.append(t_commit)
        committed.append(monotonic())
        txns += 1
    stopped = monotonic()
    cpu = rusage_cpu() - cpu0
    return {
        "index": job.index,
        "txns": txns,
        "records": txns * n,
        "queue_full": queue_full,
        "start": start,
        "stopped": stopped,
        "commit_started": begun,
        "committed": committed,
        "cpu_seconds": cpu,
        "cpu_cores": cpu / max(1e-9, stopped - start),
    }


Job = ProduceJob | ConsumeJob | LatencyConsumeJob | TxnProduceJob


def _worker(kind: str, job: Job, barrier: Any, results: Any) -> None:
    """Process entry point: run one job and send back its result (or its failure)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        if isinstance(job, ProduceJob):
            result = _run_producer(job, barrier)
        elif isinstance(job, ConsumeJob):
            result = _run_consumer(job, barrier)
        elif isinstance(job, TxnProduceJob):
            result = _run_txn_producer(job, barrier)
        else:
            result = _run_latency_consumer(job, barrier)
    except BaseException as e:  # reported to the parent, which fails the run
        with contextlib.suppress(Exception):
            barrier.abort()
        result = {"index": job.index, "failed": f"{type(e).__name__}: {e}"}
    results.put(result)


def run_workers(
    kind: str,
    jobs: Sequence[Job],
    timeout: float,
    on_start: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Run jobs in spawned processes that start together; (results, start time). Bounded.

    Results come back sorted by job index, so jobs of different kinds need distinct indexes.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(jobs) + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(kind, job, barrier, results), name=f"{kind}-{job.index}")
        for job in jobs
    ]
    out: list[dict[str, Any]] = []
    try:
        for proc in procs:
            proc.start()
        try:
            barrier.wait(90)
        except Exception:  # a worker failed before the start line, or never got there
            barrier.abort()
        started = time.monotonic()
        if on_start is not None:
            on_start()
        deadline = time.monotonic() + timeout
        while len(out) < len(jobs) and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                out.append(results.get(timeout=min(1.0, max(0.01, deadline - time.monotonic()))))
            if len(out) < len(jobs) and not any(p.is_alive() for p in procs) and results.empty():
                break
        for proc in procs:
            proc.join(10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    failed = [r for r in out if "failed" in r]
    if failed or len(out) < len(jobs):
        raise RuntimeError(f"{kind} workers failed: {failed or f'{len(out)}/{len(jobs)} reported'}")
    return sorted(out, key=lambda r: r["index"]), started


# --- kafka admin helpers ------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)
    futures[topic].result(timeout=30)
    wait_topic_ready(admin, topic, partitions)


def wait_topic_ready(admin: Any, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Until every partition has a leader that answers ListOffsets.

    CreateTopics can return before the partitions are led (Kafka elects and creates the logs
    asynchronously); a producer started then spends its first seconds retrying, which would be
    counted against the broker in a short produce measurement.
    """
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(topic, timeout=5).topics[topic]
            led = [p for p in md.partitions.values() if p.leader >= 0 and p.error is None]
            if md.error is None and len(led) == partitions:
                specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
                for f in admin.list_offsets(specs, request_timeout=5).values():
                    f.result(timeout=10)
                return
            last = f"{len(led)}/{partitions} partitions led"
        except Exception as e:  # not yet: retry until the deadline
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.05)
    raise TimeoutError(f"topic {topic} not ready after {timeout}s: {last}")


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "strata-bench-offsets",
            "enable.auto.commit": False,
        }
    )
    try:
        return [
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=20, cached=False)[1]
            for p in range(partitions)
        ]
    finally:
        c.close()


def other_cpu(usage: dict[str, Any], clients: Sequence[dict[str, Any]]) -> float:
    """CPU (in cores) used by processes that are neither the broker nor our clients: noise."""
    busy = usage["machine_cpu_busy"] * (os.cpu_count() or 1)
    return max(0.0, busy - usage["broker_cpu_cores"] - sum(c["cpu_cores"] for c in clients))


def coprime_stride(at_least: int, partitions: int) -> int:
    """A sampling stride that visits every partition under round-robin assignment."""
    stride = at_least
    while math.gcd(stride, partitions) != 1:
        stride += 1
    return stride


def steady_rate(results: Sequence[dict[str, Any]], warmup: float, stride: int) -> dict[str, Any]:
    """Acked messages/s while every producer was running, past `warmup`, from sampled acks.

    Producers timestamp every `stride`-th message's delivery; the window runs from the last
    producer's start plus warmup to the first producer's stop, so ramp-up and drain are out.
    Also the produce-to-ack latencies (seconds) of the sampled messages sent in the window.
    """
    window_start = max(r["start"] for r in results) + warmup
    window_end = min(r["stopped"] for r in results)
    in_window = (
        sum(sum(1 for t in r["done_times"] if window_start <= t < window_end) for r in results)
        * stride
    )
    seconds = window_end - window_start
    latencies = [
        d - s
        for r in results
        for s, d in zip(r["sent_times"], r["done_times"], strict=True)
        if s >= window_start
    ]
    return {
        "seconds": seconds,
        "messages": in_window,
        "msgs_per_s": in_window / seconds if seconds > 0 else math.nan,
        "latencies": latencies,
    }
