"""`__transaction_state` is cleaned by the log cleaner like any compacted topic.

Every transaction writes its transactional id's state several times (ongoing, prepare,
complete), so one busy producer fills the state log with records of a single key. As
in Kafka, the topic is compacted (segment.bytes from
`transaction.state.log.segment.bytes`) and the same cleaner as user topics keeps each
id's latest state. Shown with confluent-kafka's transactional producer: after the clean
the state log holds a few records, and a broker started on an empty data directory
(from the bucket alone) still knows the producer: the next `init_transactions` of the
same transactional id gets the same producer id with the next epoch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devkit.broker import metric
from devkit.procs import free_port, wait_for
from protocol.records import iter_headers
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(180)

TOPIC = "orders"
STATE = "__transaction_state"
TXNS = 150


def _producer(bootstrap: str):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-cleaned", "linger.ms": 0})
    p.init_transactions(30)
    return p


def _transactions(p, start: int, n: int) -> None:
    for i in range(start, start + n):
        p.begin_transaction()
        p.produce(TOPIC, b"order %d" % i, b"k%d" % (i % 7))
        p.commit_transaction(30)


def _batches(bootstrap: str, topic: str) -> list:
    """The headers of every batch a raw Fetch returns from offset 0."""
    out: list = []
    with WireClient(bootstrap) as c:
        offset = 0
        while True:
            r = c.fetch(topic, 0, offset)
            assert r.error_code == 0, r
            got = [h for _, h in iter_headers(r.records or b"")]
            if not got:
                return out
            out += got
            offset = got[-1].last_offset + 1


def _state_records(bootstrap: str) -> int:
    return sum(h.record_count for h in _batches(bootstrap, STATE))


def _committed(bootstrap: str) -> list[bytes]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(TOPIC, 0, 0)])
    got = []
    try:
        while True:
            m = c.poll(10)
            assert m is not None, "no end of partition within 10 s"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return got
            got.append(m.value())
    finally:
        c.close()


def test_the_transaction_state_log_is_cleaned_and_restores_the_producer_from_the_bucket(
    broker_factory, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    mport = free_port()
    args = [
        "--object-store",
        (tmp_path / "bucket").as_uri(),
        "--metrics-listen",
        f"127.0.0.1:{mport}",
        "--retention-check-interval-ms",
        "500",
        "--upload-interval-ms",
        "200",
        "--object-delete-delay-ms",
        "500",
        "--transaction-state-log-num-partitions",
        "1",
        "--transaction-state-log-segment-bytes",
        "4096",
    ]
    b = broker_factory(*args)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(30)
    p = _producer(b.bootstrap)
    _transactions(p, 0, TXNS)
    assert p.flush(10) == 0
    (first,) = {(h.producer_id, h.producer_epoch) for h in _batches(b.bootstrap, TOPIC)}

    # a few records per transaction, all of one key, most of them cleaned away
    with WireClient(b.bootstrap) as c:
        written = c.fetch(STATE, 0, 0).high_watermark
    assert written >= 2 * TXNS
    wait_for(lambda: metric(mport, "strata_log_cleaner_runs_total") >= 1, timeout=60)
    _transactions(p, TXNS, 1)  # state written after a clean counts too
    wait_for(lambda: _state_records(b.bootstrap) < TXNS // 2, timeout=60)
    assert metric(mport, "strata_log_cleaner_records_removed_total") >= 2 * TXNS - 20
    wait_for(lambda: metric(mport, "strata_uploads_total") > 0, timeout=30)
    del p

    # the machine is gone: the bucket alone holds what the coordinator knows
    b.stop()
    shutil.rmtree(b.data_dir)
    b = broker_factory(*args, data_dir=b.data_dir, port=b.port)
    p = _producer(b.bootstrap)
    _transactions(p, TXNS + 1, 1)
    assert p.flush(10) == 0
    pids = [(h.producer_id, h.producer_epoch) for h in _batches(b.bootstrap, TOPIC)]
    assert pids[-1] == (first[0], first[1] + 1), pids[-3:]
    assert _committed(b.bootstrap) == [b"order %d" % i for i in range(TXNS + 2)]
