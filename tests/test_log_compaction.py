"""Compacted topics (`cleanup.policy=compact`): the log cleaner, end to end.

A broker subprocess, confluent-kafka producing and reading, the bucket looked at
directly: after a clean a reader from offset 0 sees each key's latest record at the
offset it was written at, tombstones until `delete.retention.ms` and not after, the
bucket holding a fraction of what was written; the same from the bucket alone after
a restart on an empty data directory.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from devkit.broker import metric
from devkit.procs import free_port, wait_for

TOPIC = "sessions-state"
KEYS = 1000
UPDATES = 100_000
DELETED = 100
DELETE_RETENTION_MS = 8000
RATIO = f'strata_log_cleaner_dirty_ratio{{partition="0",topic="{TOPIC}"}}'


def _bucket_bytes(objects: Path) -> int:
    return sum(p.stat().st_size for p in (objects / "data").rglob("*.obj"))


def _read_from_zero(
    bootstrap: str, topic: str = TOPIC, partition: int = 0
) -> list[tuple[int, bytes, bytes | None]]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, partition, 0)])
    out = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    return out
                raise AssertionError(m.error())
            out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()
    raise AssertionError("no end of partition within 60 s")


def _produce(
    bootstrap: str, items: list[tuple[bytes, bytes | None]], topic: str = TOPIC, partition: int = 0
) -> dict[int, bytes]:
    """Send in order; returns offset -> key of each acknowledged record."""
    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4", "acks": "all"}
    )
    acked: dict[int, bytes] = {}

    def done(err, msg) -> None:
        assert err is None, err
        acked[msg.offset()] = msg.key()

    for key, value in items:
        while True:
            try:
                p.produce(topic, value, key, partition=partition, on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0
    return acked


def _latest(
    written: list[tuple[int, bytes, bytes | None]],
) -> dict[bytes, tuple[int, bytes | None]]:
    out: dict[bytes, tuple[int, bytes | None]] = {}
    for offset, key, value in sorted(written):
        out[key] = (offset, value)
    return out


def _check_compacted(got, latest, tombstones: bool) -> None:
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets)), "offsets out of order or twice"
    seen = {k: (o, v) for o, k, v in got}
    assert len(seen) == len(got), "a key appears twice after cleaning"
    for key, (offset, value) in latest.items():
        if value is None and not tombstones:
            assert key not in seen, f"deleted key {key!r} still there"
            continue
        assert seen.get(key) == (offset, value), f"{key!r}: {seen.get(key)} != {(offset, value)}"
    assert set(seen) <= set(latest)


@pytest.mark.slow
def test_a_compacted_topic_keeps_the_latest_record_per_key_at_its_offset_and_from_the_bucket(
    broker_factory, tmp_path: Path
) -> None:
    objects = tmp_path / "bucket"
    mport = free_port()
    args = [
        "--object-store",
        objects.as_uri(),
        "--metrics-listen",
        f"127.0.0.1:{mport}",
        "--retention-check-interval-ms",
        "500",
        "--upload-interval-ms",
        "200",
        "--object-delete-delay-ms",
        "500",
    ]
    b = broker_factory(*args)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    configs = {"cleanup.policy": "compact", "segment.ms": "1000"}
    configs["delete.retention.ms"] = str(DELETE_RETENTION_MS)
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=configs)])[TOPIC].result(30)

    items: list[tuple[bytes, bytes | None]] = []
    for i in range(UPDATES):
        key = b"session-%04d" % (i % KEYS)
        items.append((key, b"%s update %06d " % (key, i) + b"x" * 60))
    items += [(b"session-%04d" % k, None) for k in range(DELETED)]
    acked = _produce(b.bootstrap, items)
    assert len(acked) == len(items)
    written = [(o, k, v) for (o, k), (_, v) in zip(sorted(acked.items()), items, strict=True)]
    tombstoned_at = time.time()
    bytes_in = metric(mport, f'strata_topic_bytes_in_total{{topic="{TOPIC}"}}')
    wait_for(lambda: _bucket_bytes(objects) >= bytes_in * 0.9, timeout=30)
    before = _bucket_bytes(objects)

    time.sleep(1.2)  # past segment.ms: the next record rolls the segment, the rest is cleanable
    sentinel = _produce(b.bootstrap, [(b"sentinel-1", b"roll")])
    written += [(o, k, b"roll") for o, k in sentinel.items()]
    assert wait_for(lambda: metric(mport, "strata_log_cleaner_runs_total") >= 1, timeout=30)

    got = _read_from_zero(b.bootstrap)
    assert time.time() - tombstoned_at < DELETE_RETENTION_MS / 1000, "too slow to see tombstones"
    _check_compacted(got, _latest(written), tombstones=True)
    assert len(got) == KEYS + 1
    assert metric(mport, RATIO) == 0

    # a live setting: with max.compaction.lag.ms the sentinel's segment is cleaned soon
    # after the next roll although it is far below the dirty ratio
    res = ConfigResource("topic", TOPIC)
    res.add_incremental_config(
        ConfigEntry("max.compaction.lag.ms", "1000", incremental_operation=AlterConfigOpType.SET)
    )
    admin.incremental_alter_configs([res])[res].result(30)
    described = admin.describe_configs([ConfigResource("topic", TOPIC)])
    entries = next(iter(described.values())).result(30)
    assert entries["max.compaction.lag.ms"].value == "1000"
    assert entries["cleanup.policy"].value == "compact"
    time.sleep(max(0.0, tombstoned_at + DELETE_RETENTION_MS / 1000 - time.time()) + 0.5)
    sentinel = _produce(b.bootstrap, [(b"sentinel-2", b"roll")])
    written += [(o, k, b"roll") for o, k in sentinel.items()]
    assert wait_for(lambda: metric(mport, "strata_log_cleaner_runs_total") >= 2, timeout=30)
    got = _read_from_zero(b.bootstrap)
    _check_compacted(got, _latest(written), tombstones=False)
    assert len(got) == KEYS - DELETED + 2
    assert wait_for(lambda: _bucket_bytes(objects) < before / 20, timeout=30)
    after = _bucket_bytes(objects)
    print(f"bucket data objects: {before} bytes before cleaning, {after} after")

    # the machine is gone: a broker on an empty data directory serves the cleaned log
    b.stop()
    shutil.rmtree(b.data_dir)
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    got = _read_from_zero(b.bootstrap)
    _check_compacted(got, _latest(written), tombstones=False)
    assert len(got) == KEYS - DELETED + 2
    # the cleaned end came back with the catalog: nothing counts as dirty again
    assert metric(mport, RATIO) == 0


@pytest.mark.slow
def test_in_a_cluster_only_the_leader_cleans_a_partition_and_its_successor_goes_on(
    etcd, s3_bucket, tmp_path: Path
) -> None:
    from tests.cluster import Cluster

    moto, bucket = s3_bucket
    c = Cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/c", "--s3-endpoint", moto.endpoint],
        "--upload-interval-ms",
        "200",
        "--retention-check-interval-ms",
        "500",
        "--object-delete-delay-ms",
        "500",
    )
    topic = "agents-state"
    try:
        c.start(1)
        c.start(2)
        admin = AdminClient({"bootstrap.servers": c.bootstrap})
        configs = {"cleanup.policy": "compact", "segment.ms": "1000"}
        admin.create_topics([NewTopic(topic, 2, 1, config=configs)])[topic].result(30)
        assert wait_for(lambda: sorted(c.leaders(topic).values()) == [1, 2], timeout=60)
        leaders = c.leaders(topic)
        written: dict[int, list] = {0: [], 1: []}

        def feed(rounds: int, tag: bytes) -> None:
            for part in (0, 1):
                items = [(b"agent-%03d" % (i % 200), b"%s %d" % (tag, i)) for i in range(rounds)]
                acked = _produce(c.bootstrap, items, topic, part)
                written[part] += [
                    (o, k, v) for (o, k), (_, v) in zip(sorted(acked.items()), items, strict=True)
                ]

        def roll(tag: bytes) -> None:
            time.sleep(1.2)  # past segment.ms: this record starts a new segment
            for part in (0, 1):
                acked = _produce(c.bootstrap, [(tag, b"roll")], topic, part)
                written[part] += [(o, k, b"roll") for o, k in acked.items()]

        def runs(broker_id: int) -> float:
            return c.metric(broker_id, "strata_log_cleaner_runs_total")

        def ratio_reported(broker_id: int, part: int) -> bool:
            sample = f'strata_log_cleaner_dirty_ratio{{partition="{part}",topic="{topic}"}}'
            try:
                c.metric(broker_id, sample)
            except KeyError:
                return False
            return True

        feed(5000, b"first")
        roll(b"roll-1")
        assert wait_for(lambda: runs(1) >= 1 and runs(2) >= 1, timeout=60)
        for part, leader in leaders.items():
            other = 3 - leader
            assert ratio_reported(leader, part) and not ratio_reported(other, part)
        for part in (0, 1):
            got = _read_from_zero(c.bootstrap, topic, part)
            _check_compacted(got, _latest(written[part]), tombstones=True)
            assert len(got) == 201

        # broker 1 leaves (a hand-off): broker 2 leads both and cleans what 1 cleaned
        c.brokers[1].stop()
        assert wait_for(lambda: set(c.leaders(topic).values()) == {2}, timeout=60)
        before = runs(2)
        feed(2000, b"second")
        roll(b"roll-2")
        assert wait_for(lambda: runs(2) >= before + 2, timeout=60)
        for part in (0, 1):
            got = _read_from_zero(c.bootstrap, topic, part)
            _check_compacted(got, _latest(written[part]), tombstones=True)
            assert len(got) == 202
    finally:
        c.stop_all()
