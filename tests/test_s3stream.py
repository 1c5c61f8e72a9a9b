"""Acceptance of the object-store tier, against moto's S3 server and the directory backend.

The bucket, not the broker's disk, holds the log: uploads shrink the WAL, a broker on
a wiped data directory serves everything from the bucket, crashes lose nothing
acknowledged and serve nothing twice, an outage turns into backpressure, and
retention and compaction act on objects.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable
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
from devkit.procs import wait_for
from protocol.record_codec import decode_records
from protocol.records import iter_headers
from tests.test_crash_recovery import PARTITIONS, _produce_then_kill, _read_all
from tests.wire import WireClient, make_batch


class Bucket:
    """Where a test's broker keeps its objects, and a look at what is there."""

    def __init__(self, args: list[str], keys: Callable[[], list[str]]) -> None:
        self.args = args
        self._keys = keys

    def data_objects(self) -> list[str]:
        return [k for k in self._keys() if re.search(r"data/b\d+/\d+\.obj$", k)]


def _s3_bucket(s3_bucket) -> Bucket:
    server, name = s3_bucket
    return Bucket(
        ["--object-store", f"s3://{name}/strata", "--s3-endpoint", server.endpoint],
        lambda: server.list_keys(name, "strata/"),
    )


def _dir_bucket(path: Path) -> Bucket:
    def keys() -> list[str]:
        return [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]

    return Bucket(["--object-store", path.as_uri()], keys)


@pytest.fixture(params=["s3", "dir"])
def bucket(request, tmp_path: Path) -> Bucket:
    if request.param == "s3":
        return _s3_bucket(request.getfixturevalue("s3_bucket"))
    return _dir_bucket(tmp_path / "bucket")


@pytest.fixture
def s3(s3_bucket) -> Bucket:
    return _s3_bucket(s3_bucket)


def _wal_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "wal").glob("*"))


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=12).digest()


def _produce_volume(bootstrap: str, topic: str, count: int, size: int) -> dict:
    """`count` random values of `size` bytes, acks=all; (partition, offset) -> digest."""
    pool = os.urandom(1 << 20)
    acked: dict[tuple[int, int], bytes] = {}
    errors: list = []

    def report(err, msg) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = _digest(msg.value())
        else:
            errors.append(err)

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20}
    )
    for i in range(count):
        start = (i * 7919) % (len(pool) - size)
        value = b"%010d" % i + pool[start : start + size - 10]
        while True:
            try:
                producer.produce(topic, value, key=b"%d" % i, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]
    assert len(acked) == count
    return acked


def _consume_digests(bootstrap: str, topic: str, partitions: int) -> dict:
    """Everything from offset 0, as (partition, offset) -> digest; no offset twice."""
    return _read_all(bootstrap, topic, partitions, value=_digest, timeout=120)


def _create(bootstrap: str, topic: str, partitions: int, configs: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=configs or {})])[topic].result(10)


# --- 1. uploads, a shrinking WAL, and cold reads from the objects ------------------------


def test_uploads_shrink_the_wal_and_cold_reads_come_from_objects(broker_factory, bucket) -> None:
    from devkit.procs import free_port

    metrics_port = free_port()
    args = [
        *bucket.args,
        "--upload-bytes",
        str(4 << 20),
        "--wal-segment-bytes",
        str(8 << 20),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    ]
    b = broker_factory(*args)
    _create(b.bootstrap, "volume", 4)
    acked = _produce_volume(b.bootstrap, "volume", 200_000, 1000)  # 200 MB
    assert wait_for(lambda: metric(metrics_port, "strata_upload_backlog_bytes") < 1 << 20)
    assert len(bucket.data_objects()) >= 5, bucket.data_objects()
    # the WAL keeps only what is not uploaded, in whole segments: far below the 200 MB
    assert wait_for(lambda: _wal_bytes(b.data_dir) < 40 << 20), _wal_bytes(b.data_dir)

    b.stop()  # a restart empties the tail cache: every read below is cold
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    got = _consume_digests(b.bootstrap, "volume", 4)
    assert got == acked, f"{len(got)} records read back, {len(acked)} acknowledged"
    downloaded = metric(metrics_port, 'strata_object_store_bytes_total{direction="down"}')
    assert downloaded >= 200_000 * 1000, f"only {downloaded} bytes came from the object store"


# --- 2. a wiped data directory after a clean stop ---------------------------------------


def test_clean_stop_then_wiped_data_dir_serves_everything(broker_factory, bucket) -> None:
    args = [*bucket.args, "--upload-bytes", str(1 << 20)]
    b = broker_factory(*args)
    _create(b.bootstrap, "events", 3, {"retention.ms": "-1"})
    acked = _produce_volume(b.bootstrap, "events", 30_000, 500)
    consumer = Consumer(
        {"bootstrap.servers": b.bootstrap, "group.id": "keepers", "enable.auto.commit": False}
    )
    committed = [TopicPartition("events", p, 1000 + p) for p in range(3)]
    consumer.commit(offsets=committed, asynchronous=False)
    consumer.close()

    b.stop()
    shutil.rmtree(b.data_dir)
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)

    assert _consume_digests(b.bootstrap, "events", 3) == acked
    consumer = Consumer(
        {"bootstrap.servers": b.bootstrap, "group.id": "keepers", "enable.auto.commit": False}
    )
    again = consumer.committed([TopicPartition("events", p) for p in range(3)], timeout=10)
    consumer.close()
    assert [(tp.partition, tp.offset) for tp in again] == [(p, 1000 + p) for p in range(3)]
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, "events")
    assert admin.describe_configs([res])[res].result(10)["retention.ms"].value == "-1"
    # offsets go on from where the bucket says the log ends
    ends = {p: 1 + max(o for (q, o) in acked if q == p) for p in range(3)}
    with WireClient(b.bootstrap) as c:
        for p in range(3):
            assert c.produce("events", p, make_batch([b"after"])).base_offset == ends[p]


# --- 3. kill -9 while uploads run ---------------------------------------------------------


def _produce_to_new_topic_then_kill(broker, records: int, also=lambda: True) -> dict:
    _create(broker.bootstrap, "events", PARTITIONS)
    acked, _ = _produce_then_kill(broker, records, timeout=60, also=also)
    return acked


def test_kill_during_uploads_loses_nothing_and_serves_nothing_twice(broker_factory, s3) -> None:
    args = [*s3.args, "--upload-bytes", str(256 << 10), "--wal-segment-bytes", str(1 << 20)]
    b = broker_factory(*args)
    # the kill lands while the producer runs and uploads go on: at least one object is in
    # the bucket (a fast producer can reach the count before the first upload completes)
    acked = _produce_to_new_topic_then_kill(b, 30_000, also=s3.data_objects)
    assert s3.data_objects(), "no object was uploaded before the kill"

    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    got = _read_all(b.bootstrap, "events")  # asserts: no offset twice, no gap
    missing = [k for k in acked if k not in got]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    assert all(got[k] == v for k, v in acked.items())
    ids = [v[:8] for v in got.values()]
    assert len(ids) == len(set(ids)), "a record is served at two offsets"


# --- 4. object durability: losing the machine loses nothing -----------------------------


def test_object_mode_survives_kill_and_lost_data_dir(broker_factory, s3) -> None:
    args = [*s3.args, "--durability", "object"]
    b = broker_factory(*args)
    acked = _produce_to_new_topic_then_kill(b, 10_000)
    shutil.rmtree(b.data_dir)  # the machine is gone: only the bucket is left

    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    got = _read_all(b.bootstrap, "events")
    missing = [k for k in acked if k not in got]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    assert all(got[k] == v for k, v in acked.items())


# --- 5. the store goes away for 20 s --------------------------------------------------------


def test_store_outage_backpressure_then_recovery(broker_factory, s3, s3_bucket) -> None:
    from devkit.procs import free_port

    server, _ = s3_bucket
    metrics_port = free_port()
    args = [
        *s3.args,
        "--upload-bytes",
        str(256 << 10),
        "--max-upload-backlog-bytes",
        str(4 << 20),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    ]
    b = broker_factory(*args)
    _create(b.bootstrap, "events", 1)
    acked: dict[int, bytes] = {}
    codes: list[tuple[float, int]] = []
    pool = os.urandom(1 << 20)

    def produce_one(c: WireClient, i: int) -> int:
        value = b"%08d" % i + pool[(i * 4099) % 900_000 :][:60_000]
        r = c.produce("events", 0, make_batch([value]))
        if r.error_code == 0:
            acked[r.base_offset] = value
        codes.append((time.monotonic(), r.error_code))
        return r.error_code

    i = 0
    with WireClient(b.bootstrap, timeout=30) as c:
        for _ in range(40):  # ~2.4 MB with the store up
            assert produce_one(c, i) == 0
            i += 1
        server.pause()
        paused_at = time.monotonic()
        try:
            while time.monotonic() - paused_at < 20:
                produce_one(c, i)
                i += 1
                time.sleep(0.01)
        finally:
            server.resume()
        during = [code for t, code in codes if t >= paused_at]
        assert during[0] == 0, "produce should go on into the WAL while the store is down"
        assert 19 in during, "produce was never pushed back (NOT_ENOUGH_REPLICAS)"
        assert set(during) <= {0, 19}, f"unexpected error codes {set(during)}"
        first_refusal = during.index(19)
        assert sum(1 for code in during[:first_refusal] if code == 0) >= 30
        # the store is back: uploads drain the backlog and produce is accepted again
        assert wait_for(lambda: produce_one(c, i) == 0, 60), "produce did not recover"
        # the first acceptance can come with the backlog just under its bound: once the
        # uploads have drained it, produce is accepted steadily
        assert wait_for(
            lambda: metric(metrics_port, "strata_upload_backlog_bytes") < 1 << 20, 60
        ), "the upload backlog did not drain"
        for j in range(20):
            assert produce_one(c, i + 1 + j) == 0

    b.stop()
    shutil.rmtree(b.data_dir)  # what was acknowledged must all be in the bucket now
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    got: dict[int, bytes] = {}
    with WireClient(b.bootstrap) as c:
        offset = 0
        end = c.list_offset("events", 0, -1).offset
        while offset < end:
            part = c.fetch("events", 0, offset)
            assert part.error_code == 0
            for pos, h in iter_headers(part.records):
                for rec in decode_records(part.records[pos : pos + h.size]):
                    got[rec.offset] = rec.value
                    offset = rec.offset + 1
    assert got == acked, f"{len(acked)} acknowledged, {len(got)} read back"


# --- 6. retention and compaction on objects ----------------------------------------------


def _produce_burst(bootstrap: str, topic: str, n: int, timestamp_ms: int | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(n):
        kw = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        p.produce(topic, b"v%06d" % i + b"x" * 2000, partition=0, **kw)
    assert p.flush(30) == 0


def test_retention_deletes_objects_and_moves_log_start(broker_factory, bucket) -> None:
    from devkit.procs import free_port

    metrics_port = free_port()

    def uploaded() -> bool:
        return metric(metrics_port, "strata_upload_backlog_bytes") == 0

    args = [
        *bucket.args,
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--upload-interval-ms",
        "200",
        "--retention-check-interval-ms",
        "500",
        "--object-delete-delay-ms",
        "0",
        "--compaction-min-objects",
        "1000",  # no merging here: this is about retention alone
    ]
    b = broker_factory(*args)
    _create(b.bootstrap, "aging", 1)
    hour_ago = int(time.time() * 1000) - 3_600_000
    for _ in range(3):
        before = len(bucket.data_objects())
        _produce_burst(b.bootstrap, "aging", 300, hour_ago)
        assert wait_for(lambda before=before: len(bucket.data_objects()) > before)
        assert wait_for(uploaded)  # so no old batch shares an object with a fresh one
    old_objects = len(bucket.data_objects())
    _produce_burst(b.bootstrap, "aging", 100)  # fresh
    assert wait_for(lambda: len(bucket.data_objects()) > old_objects)
    with WireClient(b.bootstrap) as c:
        assert c.list_offset("aging", 0, -2).offset == 0

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        "aging",
        incremental_configs=[
            ConfigEntry("retention.ms", "1800000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(10)
    with WireClient(b.bootstrap) as c:
        assert wait_for(lambda: c.list_offset("aging", 0, -2).offset == 900)
        assert c.fetch("aging", 0, 0).error_code == 1  # OFFSET_OUT_OF_RANGE
    assert wait_for(lambda: len(bucket.data_objects()) <= old_objects - 2), bucket.data_objects()

    b.stop()  # and it stays so after a restart
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    with WireClient(b.bootstrap) as c:
        assert c.list_offset("aging", 0, -2).offset == 900
        assert c.list_offset("aging", 0, -1).offset == 1000


def test_compaction_merges_small_objects(broker_factory, bucket) -> None:
    args = [
        *bucket.args,
        "--upload-interval-ms",
        "100",
        "--retention-check-interval-ms",
        "1000",
        "--object-delete-delay-ms",
        "0",
        "--compaction-min-objects",
        "4",
    ]
    b = broker_factory(*args, "--compaction-min-objects", "1000")  # let small objects pile up
    _create(b.bootstrap, "events", PARTITIONS)
    acked: dict[tuple[int, int], bytes] = {}
    producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})

    def report(err, msg) -> None:
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = msg.value()

    for burst in range(12):
        before = len(bucket.data_objects())
        for i in range(200):
            producer.produce("events", b"%08d" % (burst * 200 + i), on_delivery=report)
        assert producer.flush(10) == 0
        assert wait_for(lambda before=before: len(bucket.data_objects()) > before)
    piled_up = len(bucket.data_objects())
    assert piled_up >= 12

    b.stop()
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)  # compaction on
    assert wait_for(lambda: len(bucket.data_objects()) <= 4, 60), bucket.data_objects()
    b.stop()  # read the merged objects cold
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    got = _read_all(b.bootstrap, "events")
    assert got == acked


def test_idempotent_retry_after_losing_the_data_dir_is_a_duplicate(broker_factory, s3) -> None:
    """Producer state comes back from the objects when the WAL that held it is gone."""
    args = [*s3.args, "--durability", "object"]
    b = broker_factory(*args)
    with WireClient(b.bootstrap) as c:
        c.create_topic("idem", 1)
        pid, epoch = c.init_producer_id()
        batches = [
            make_batch([b"m%d" % i], producer_id=pid, producer_epoch=epoch, base_sequence=i)
            for i in range(5)
        ]
        for i, batch in enumerate(batches):
            assert c.produce("idem", 0, batch).base_offset == i
    b.kill()
    shutil.rmtree(b.data_dir)
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    with WireClient(b.bootstrap) as c:
        retry = c.produce("idem", 0, batches[-1])  # its acknowledgement was lost, say
        assert (retry.error_code, retry.base_offset) == (0, 4)
        assert c.list_offset("idem", 0, -1).offset == 5, "the retry was written twice"
        nxt = make_batch([b"m5"], producer_id=pid, producer_epoch=epoch, base_sequence=5)
        assert c.produce("idem", 0, nxt).base_offset == 5
