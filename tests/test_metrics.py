"""Acceptance: Prometheus metrics, /healthz and /readyz on --metrics-listen.

A confluent-kafka producer writes N messages and a consumer group reads them back,
committing halfway and at the end. Scrapes of /metrics in between check that the
counters moved by exactly what happened, in terms a user can check from outside:

- records in equals the messages produced; bytes in equals the record-batch bytes a raw
  Fetch reads back from the partitions, and bytes out equals bytes in after one consumer
  read everything once (twice after the raw read);
- produce requests counted equal those librdkafka's own statistics say it sent;
- WAL bytes synced equal the WAL's size on disk, with nothing left un-synced;
- lag is the high watermark minus the committed offset, sums to the records not yet
  committed, and returns to 0 once the consumer has caught up and committed;
- per-partition error codes and a connection-closing request land in their counters.

A second test starts a broker in this process to see /readyz answer 503 while the WAL
is replayed and once shutdown begins, with /healthz at 200 throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from broker.app import Broker
from broker.config import BrokerConfig
from devkit.procs import free_port
from protocol import records
from tests.wire import WireClient
from wal.segment import list_segments, segment_path

N = 3000
PARTITIONS = 3
OFFSETS_PARTITIONS = 4
TXN_PARTITIONS = 2
DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "strata.json"


class Scrape:
    """One /metrics scrape: samples by name and labels."""

    def __init__(self, port: int) -> None:
        text = _get(port, "/metrics")[1]
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((s.labels, s.value))

    def get(self, name: str, **labels: str) -> float:
        """The one sample of `name` with exactly these labels (0 if there is none)."""
        found = [v for ls, v in self.samples.get(name, []) if ls == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0

    def by(self, name: str, key: str, **labels: str) -> dict[str, float]:
        """Samples of `name` matching `labels`, keyed by the value of label `key`."""
        return {
            ls[key]: v
            for ls, v in self.samples.get(name, [])
            if all(ls.get(k) == want for k, want in labels.items())
        }


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _wait_ready(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _get(port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "/readyz never said 200"
        time.sleep(0.05)


def _raw_log_bytes(bootstrap: str, topic: str, partitions: int) -> tuple[int, int]:
    """(record-batch bytes, records) in the topic, read with raw Fetch requests from 0."""
    total = count = 0
    with WireClient(bootstrap) as c:
        for p in range(partitions):
            offset = 0
            while True:
                part = c.fetch(topic, p, offset)
                assert part.error_code == 0
                if not part.records:
                    assert offset == part.high_watermark
                    break
                for batch in records.split_batches(part.records):
                    h = records.parse_header(batch)
                    total += len(batch)
                    count += h.record_count
                    offset = h.base_offset + h.last_offset_delta + 1
    return total, count


def test_metrics_follow_a_produce_consume_run(broker_factory) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    mport = free_port()
    broker = broker_factory(
        "--metrics-listen",
        f"127.0.0.1:{mport}",
        "--group-initial-rebalance-delay-ms",
        "0",
        "--offsets-topic-num-partitions",
        str(OFFSETS_PARTITIONS),
        "--transaction-state-log-num-partitions",
        str(TXN_PARTITIONS),
    )
    _wait_ready(mport)
    assert _get(mport, "/healthz") == (200, "ok\n")
    assert _get(mport, "/nothing-here")[0] == 404
    topic, group = f"metrics-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)

    m0 = Scrape(mport)
    assert m0.get("strata_topics") == 3  # and __consumer_offsets, __transaction_state
    assert m0.get("strata_partitions") == PARTITIONS + OFFSETS_PARTITIONS + TXN_PARTITIONS
    assert m0.get("strata_leader_partitions") == PARTITIONS + OFFSETS_PARTITIONS + TXN_PARTITIONS
    assert m0.get("strata_topic_bytes_in_total", topic=topic) == 0

    # --- produce ------------------------------------------------------------------------
    stats: list[dict] = []
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "statistics.interval.ms": 100,
            "stats_cb": lambda s: stats.append(json.loads(s)),
        }
    )
    delivered: list[object] = []
    for i in range(N):
        value = f"event-{i:06d}-".encode() + b"x" * 90
        producer.produce(
            topic, value, str(i).encode(), on_delivery=lambda e, m: delivered.append(e)
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert delivered == [None] * N
    time.sleep(0.3)  # a statistics report taken after the last response
    producer.poll(0.1)
    sent = sum(b["req"].get("Produce", 0) for b in stats[-1]["brokers"].values())

    m1 = Scrape(mport)
    assert m1.get("strata_topic_records_in_total", topic=topic) == N
    bytes_in = m1.get("strata_topic_bytes_in_total", topic=topic)
    assert bytes_in > N * 100  # every value is 100 bytes, uncompressed
    produce_requests = m1.get("strata_requests_total", api="produce")
    assert produce_requests == sent > 0
    assert m1.get("strata_request_duration_seconds_count", api="produce") == produce_requests
    assert m1.get("strata_request_errors_total", api="produce") == 0
    assert m1.get("strata_requests_in_flight", api="produce") == 0
    hw = {
        int(p): int(v)
        for p, v in m1.by("strata_partition_high_watermark", "partition", topic=topic).items()
    }
    assert sum(hw.values()) == N and len(hw) == PARTITIONS
    # the WAL: every byte appended was synced, and the sync sizes add up to the file sizes
    wal_dir = broker.data_dir / "wal"
    on_disk = sum(segment_path(wal_dir, b).stat().st_size for b in list_segments(wal_dir))
    assert m1.get("strata_wal_unsynced_bytes") == 0
    assert m1.get("strata_wal_retained_bytes") == on_disk
    assert m1.get("strata_wal_sync_bytes_sum") == on_disk
    assert (
        m1.get("strata_wal_fsync_duration_seconds_count")
        == m1.get("strata_wal_sync_bytes_count")
        > 0
    )

    # --- a consumer group: half, commit, lag; the rest, commit, no lag --------------------
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    consumed = 0
    deadline = time.monotonic() + 30
    while consumed < N // 2 and time.monotonic() < deadline:
        for m in consumer.consume(100, 1.0):
            assert m.error() is None, m.error()
            consumed += 1
    assert N // 2 <= consumed < N
    consumer.commit(asynchronous=False)
    committed = {
        tp.partition: tp.offset
        for tp in consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 10)
    }
    m2 = Scrape(mport)
    lag = m2.by("strata_consumer_group_lag", "partition", group=group, topic=topic)
    offsets = m2.by("strata_consumer_group_committed_offset", "partition", group=group, topic=topic)
    for p in range(PARTITIONS):
        if committed[p] < 0:  # nothing read from it yet, so nothing committed: no series
            assert str(p) not in lag and str(p) not in offsets
            continue
        assert offsets[str(p)] == committed[p]
        assert lag[str(p)] == hw[p] - committed[p]
    assert sum(hw[p] - max(committed[p], 0) for p in range(PARTITIONS)) == N - consumed
    assert sum(lag.values()) == N - consumed - sum(hw[p] for p in hw if committed[p] < 0)
    assert m2.get("strata_consumer_groups", state="Stable") == 1
    assert m2.get("strata_group_rebalances_total") >= 1

    while consumed < N and time.monotonic() < deadline:
        for m in consumer.consume(500, 1.0):
            assert m.error() is None, m.error()
            consumed += 1
    assert consumed == N
    consumer.commit(asynchronous=False)
    m3 = Scrape(mport)
    lag = m3.by("strata_consumer_group_lag", "partition", group=group, topic=topic)
    assert lag == {str(p): 0 for p in range(PARTITIONS)}
    assert (
        sum(m3.by("strata_consumer_group_committed_offset", "partition", group=group).values()) == N
    )
    # one consumer read every batch once: what went out is what came in
    assert m3.get("strata_topic_bytes_out_total", topic=topic) == bytes_in
    hits, misses = m3.get("strata_tail_cache_hits_total"), m3.get("strata_tail_cache_misses_total")
    assert hits > 0 and misses == 0  # all of it was still in the tail cache
    assert m3.get("strata_tail_cache_bytes") >= bytes_in
    assert m3.get("strata_requests_in_flight", api="produce") == 0
    consumer.close()

    # --- what a raw Fetch reads back is exactly what bytes in counted ---------------------
    raw_bytes, raw_records = _raw_log_bytes(broker.bootstrap, topic, PARTITIONS)
    assert (raw_bytes, raw_records) == (bytes_in, N)
    m4 = Scrape(mport)
    assert m4.get("strata_topic_bytes_out_total", topic=topic) == 2 * bytes_in
    assert m4.get("strata_consumer_groups", state="Empty") == 1  # the consumer left

    # --- errors -------------------------------------------------------------------------
    with WireClient(broker.bootstrap) as c:
        assert c.produce(topic, 99, b"\0" * 70).error_code != 0  # no partition 99
        assert c.fetch(topic, 0, hw[0] + 100).error_code != 0  # past the log end
        # Metadata v99: header only; the broker closes the connection without answering
        header = struct.pack(">hhih", 3, 99, 7, 5) + b"tests"
        c.send_raw(struct.pack(">i", len(header)) + header)
        c.sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert c.sock.recv(1) == b""
    m5 = Scrape(mport)
    errors = m5.by("strata_partition_errors_total", "error", api="produce")
    assert errors == {"unknown_topic_or_partition": 1}
    assert m5.by("strata_partition_errors_total", "error", api="fetch") == {
        "offset_out_of_range": 1
    }
    assert m5.get("strata_request_errors_total", api="metadata") == 1
    assert m5.get("strata_request_errors_total", api="produce") == 0

    # every metric the Grafana dashboard queries is one the broker serves
    exprs = [
        t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])
    ]
    queried = {n for e in exprs for n in re.findall(r"\b((?:strata|process)_[a-z_]+)", e)}
    assert queried - set(m5.samples) == set()
    assert _get(mport, "/readyz") == (200, "ready\n")


def test_readyz_waits_for_recovery_and_drops_at_shutdown(tmp_path: Path) -> None:
    async def main() -> None:
        mport = free_port()
        broker = Broker(
            BrokerConfig(
                data_dir=tmp_path / "data",
                listen="127.0.0.1:0",
                metrics_listen=f"127.0.0.1:{mport}",
            )
        )

        async def get(path: str) -> int:
            return (await asyncio.to_thread(_get, mport, path))[0]

        recovered, stopping = asyncio.Event(), asyncio.Event()
        real_open, real_stop = broker.logs.open, broker.server.stop

        async def slow_open() -> None:
            await recovered.wait()
            await real_open()

        async def slow_stop() -> None:
            await stopping.wait()
            await real_stop()

        broker.logs.open = slow_open  # type: ignore[method-assign]
        broker.server.stop = slow_stop  # type: ignore[method-assign]
        starting = asyncio.create_task(broker.start())
        await asyncio.sleep(0.05)
        assert not starting.done()
        assert (await get("/healthz"), await get("/readyz"), await get("/metrics")) == (
            200,
            503,
            200,
        )
        recovered.set()
        await starting
        assert (await get("/healthz"), await get("/readyz")) == (200, 200)

        stop = asyncio.create_task(broker.stop())
        await asyncio.sleep(0.05)
        assert (await get("/healthz"), await get("/readyz")) == (200, 503)
        stopping.set()
        await stop
        try:
            status = await get("/healthz")
        except OSError:
            status = None
        assert status is None  # the HTTP server is gone with the broker

    asyncio.run(main())
