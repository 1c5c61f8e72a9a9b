"""Transactions (KIP-98, KIP-447) through real clients: commit and abort, read_committed,
exactly-once consume-transform-produce across kills, zombie fencing, a coordinator
crash between the two phases, abandoned transactions, and Kafka's error codes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import REPO_ROOT
from protocol.errors import ErrorCode
from protocol.record_codec import encode_batch
from protocol.records import TRANSACTIONAL
from tests.wire import JOIN_GROUP, WireClient, join_group_body

INIT_PRODUCER_ID = (22, 4)
ADD_PARTITIONS = (24, 3)
END_TXN = (26, 3)
TXN_OFFSET_COMMIT = (28, 3)
SYNC_GROUP = (14, 3)


def _topics(bootstrap: str, *partitions: int) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"txn-{uuid.uuid4().hex[:8]}" for _ in partitions]
    futures = admin.create_topics(
        [NewTopic(n, p, 1) for n, p in zip(names, partitions, strict=True)]
    )
    for f in futures.values():
        f.result(15)
    return names


def _txn_producer(bootstrap: str, txn_id: str, **extra) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, **extra})
    p.init_transactions(20)
    return p


def _read(
    bootstrap: str,
    topic: str,
    partitions: int,
    isolation: str,
    timeout: float = 30,
    expect: int | None = None,
) -> dict[int, list[bytes]]:
    """Every record a consumer of `isolation` gets, per partition, from the start.

    Done when its position reaches each high watermark, or (the position of a
    partition ending in a transaction marker stays before the marker) when nothing
    arrives for 2 s; with `expect`, once that many arrived and 1 s more brought none.
    """
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    parts = [TopicPartition(topic, i, 0) for i in range(partitions)]
    ends = {i: c.get_watermark_offsets(TopicPartition(topic, i), 10)[1] for i in range(partitions)}
    c.assign(parts)
    got: dict[int, list[bytes]] = {i: [] for i in range(partitions)}
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            for m in c.consume(500, 0.3):
                assert m.error() is None, m.error()
                got[m.partition()].append(m.value())
                last = time.monotonic()
            idle = time.monotonic() - last
            if expect is not None:
                if sum(map(len, got.values())) >= expect and idle > 1:
                    return got
                continue
            positions = {tp.partition: tp.offset for tp in c.position(parts)}
            if all(positions[i] >= ends[i] for i in range(partitions)) or idle > 2:
                return got
    finally:
        c.close()
    raise AssertionError(f"{topic}: expected {expect} records by {timeout}s; read {got}")


def test_read_committed_consumers_see_exactly_the_committed_transactions(broker) -> None:
    topics = _topics(broker.bootstrap, 4, 4, 4)
    p = _txn_producer(broker.bootstrap, f"tx-{uuid.uuid4().hex[:6]}")
    committed: dict[tuple[str, int], list[bytes]] = {}
    everything: dict[tuple[str, int], list[bytes]] = {}
    for txn in range(8):
        p.begin_transaction()
        for n in range(48):
            topic, partition = topics[n % 3], n % 4
            value = f"{txn}-{n}".encode()
            p.produce(topic, value=value, partition=partition)
            everything.setdefault((topic, partition), []).append(value)
            if txn % 3 != 1:
                committed.setdefault((topic, partition), []).append(value)
        if txn % 3 == 1:
            p.flush(10)  # on the wire before the abort, so there is something to skip
            p.abort_transaction(20)
        else:
            p.commit_transaction(20)
    for topic in topics:
        rc = _read(broker.bootstrap, topic, 4, "read_committed")
        ru = _read(broker.bootstrap, topic, 4, "read_uncommitted")
        for i in range(4):
            assert rc[i] == committed[(topic, i)]  # exactly, in order, no control records
            assert ru[i] == everything[(topic, i)]


def test_kafka_python_transactions_commit_and_abort(broker) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition

    topics = _topics(broker.bootstrap, 4, 4, 4)
    p = KafkaProducer(
        bootstrap_servers=broker.bootstrap, transactional_id=f"kp-{uuid.uuid4().hex[:6]}"
    )
    p.init_transactions()
    expected: dict[tuple[str, int], list[bytes]] = {}
    for txn in range(4):
        p.begin_transaction()
        for n in range(24):
            topic, partition = topics[n % 3], n % 4
            p.send(topic, value=f"{txn}-{n}".encode(), partition=partition)
            if not txn % 2:
                expected.setdefault((topic, partition), []).append(f"{txn}-{n}".encode())
        if txn % 2:
            p.flush()
            p.abort_transaction()
        else:
            p.commit_transaction()
    p.close()
    c = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    c.assign([KTopicPartition(t, i) for t in topics for i in range(4)])
    got: dict[tuple[str, int], list[bytes]] = {}
    for m in c:
        got.setdefault((m.topic, m.partition), []).append(m.value)
    c.close()
    assert got == expected  # exactly the committed records, in order per partition
    for topic in topics:
        everything = _read(broker.bootstrap, topic, 4, "read_uncommitted")
        assert sum(map(len, everything.values())) == 4 * 8


def _input(bootstrap: str, topic: str, partitions: int, count: int) -> set[bytes]:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    values = set()
    for n in range(count):
        value = f"in-{n}".encode()
        p.produce(topic, value=value, partition=n % partitions)
        values.add(value)
    assert p.flush(30) == 0
    return values


def _start_app(log: Path, bootstrap: str, inp: str, out: str, group: str, txn_id: str, n: int):
    """The application as a process; its output goes to `log` (a pipe nobody reads
    while the test kills things would fill up and stall it)."""
    with open(log, "a") as f:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.txn_app",
                bootstrap,
                inp,
                out,
                group,
                txn_id,
                "4",
                str(n),
            ],
            cwd=REPO_ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def _wait_committed(app: subprocess.Popen, log: Path, transactions: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.read_text().count("committed ") >= transactions:
            return
        assert app.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {transactions} transactions in 60 s: {log.read_text()[-3000:]}")


def _check_exactly_once(bootstrap: str, inp: str, out: str, group: str, values: set, parts: int):
    read = _read(bootstrap, out, parts, "read_committed", expect=len(values))
    got = [v for vs in read.values() for v in vs]
    assert len(got) == len(values)  # nothing twice
    assert set(got) == {v + b":done" for v in values}  # nothing missing
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = c.committed([TopicPartition(inp, i) for i in range(parts)], timeout=10)
        ends = [c.get_watermark_offsets(TopicPartition(inp, i), 10)[1] for i in range(parts)]
    finally:
        c.close()
    assert [tp.offset for tp in committed] == ends


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["broker", "application"])
def test_consume_transform_produce_is_exactly_once_across_a_kill(broker_factory, tmp_path, victim):
    broker = broker_factory()
    inp, out = _topics(broker.bootstrap, 4, 4)
    values = _input(broker.bootstrap, inp, 4, 3000)
    group, txn_id = f"eos-{uuid.uuid4().hex[:6]}", f"eos-tx-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "app.log"
    app = _start_app(log, broker.bootstrap, inp, out, group, txn_id, len(values))
    try:
        _wait_committed(app, log, 5)
        if victim == "broker":
            broker.kill()
            time.sleep(1)
            broker_factory(data_dir=broker.data_dir, port=broker.port)
        else:
            app.kill()
            app.wait(10)
            app = _start_app(log, broker.bootstrap, inp, out, group, txn_id, len(values))
        assert app.wait(170) == 0, log.read_text()[-3000:]
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)
    _check_exactly_once(broker.bootstrap, inp, out, group, values, 4)


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(broker) -> None:
    (topic,) = _topics(broker.bootstrap, 2)
    txn_id = f"zombie-{uuid.uuid4().hex[:6]}"
    first = _txn_producer(broker.bootstrap, txn_id)
    first.begin_transaction()
    first.produce(topic, value=b"zombie-1", partition=0)
    first.flush(10)
    second = _txn_producer(broker.bootstrap, txn_id)  # aborts the first one's transaction
    with pytest.raises(KafkaException) as fenced:
        first.produce(topic, value=b"zombie-2", partition=1)
        first.flush(10)
        first.commit_transaction(10)
    assert fenced.value.args[0].fatal()  # librdkafka: _FENCED, from PRODUCER_FENCED
    second.begin_transaction()
    second.produce(topic, value=b"current", partition=0)
    second.commit_transaction(20)
    got = _read(broker.bootstrap, topic, 2, "read_committed")
    assert got == {0: [b"current"], 1: []}


def test_a_transaction_prepared_before_a_coordinator_crash_completes_after_restart(
    broker_factory,
) -> None:
    broker = broker_factory("--crash-point", "txn-after-prepare")
    (topic,) = _topics(broker.bootstrap, 3)
    p = _txn_producer(broker.bootstrap, f"crash-{uuid.uuid4().hex[:6]}")
    p.begin_transaction()
    for n in range(30):
        p.produce(topic, value=f"v{n}".encode(), partition=n % 3)
    p.flush(10)
    with pytest.raises(KafkaException):
        p.commit_transaction(5)  # the coordinator exits once PrepareCommit is durable
    assert broker.proc is not None and broker.proc.wait(10) == 137
    restarted = broker_factory(data_dir=broker.data_dir, port=broker.port)
    got = _read(restarted.bootstrap, topic, 3, "read_committed", expect=30)
    assert sorted(v for vs in got.values() for v in vs) == sorted(
        f"v{n}".encode() for n in range(30)
    )


_ABANDON = """
import sys, time
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": sys.argv[3],
              "transaction.timeout.ms": 2000})
p.init_transactions(20)
p.begin_transaction()
p.produce(sys.argv[2], value=b"abandoned", partition=0)
p.flush(10)
print("open", flush=True)
time.sleep(600)
"""


def test_an_abandoned_transaction_is_aborted_after_its_timeout(broker_factory) -> None:
    broker = broker_factory("--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200")
    (topic,) = _topics(broker.bootstrap, 1)
    txn_id = f"abandoned-{uuid.uuid4().hex[:6]}"
    dying = subprocess.Popen(
        [sys.executable, "-c", _ABANDON, broker.bootstrap, topic, txn_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dying.stdout is not None and dying.stdout.readline().strip() == "open"
    finally:
        dying.kill()
        dying.wait(10)
    after = Producer({"bootstrap.servers": broker.bootstrap})
    after.produce(topic, value=b"after", partition=0)
    assert after.flush(10) == 0
    # the open transaction holds read_committed readers back until it is aborted
    got = _read(broker.bootstrap, topic, 1, "read_committed", timeout=30, expect=1)
    assert got == {0: [b"after"]}
    assert "open longer than 2000 ms" in broker.log()


def _init(c: WireClient, txn_id: str, timeout_ms: int = 60000) -> tuple[int, int, int]:
    r = c.call(*INIT_PRODUCER_ID, {"transactional_id": txn_id, "transaction_timeout": timeout_ms})
    return r.error_code, r.producer_id, r.producer_epoch


def _add(c: WireClient, txn_id: str, pid: int, epoch: int, topic: str, partition: int) -> int:
    r = c.call(
        *ADD_PARTITIONS,
        {
            "v3_and_below_transactional_id": txn_id,
            "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch,
            "v3_and_below_topics": [{"name": topic, "partitions": [partition]}],
        },
    )
    return r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code


def _end(c: WireClient, txn_id: str, pid: int, epoch: int, commit: bool) -> int:
    body = {
        "transactional_id": txn_id,
        "producer_id": pid,
        "producer_epoch": epoch,
        "committed": commit,
    }
    return c.call(*END_TXN, body).error_code


def _txn_offset_commit(
    c: WireClient,
    txn_id: str,
    group: str,
    pid: int,
    epoch: int,
    generation: int,
    member: str,
    topic: str,
) -> int:
    r = c.call(
        *TXN_OFFSET_COMMIT,
        {
            "transactional_id": txn_id,
            "group_id": group,
            "producer_id": pid,
            "producer_epoch": epoch,
            "generation_id": generation,
            "member_id": member,
            "group_instance_id": None,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": 1,
                            "committed_leader_epoch": -1,
                            "committed_metadata": "",
                        }
                    ],
                }
            ],
        },
    )
    return r.topics[0].partitions[0].error_code


def _joined_member(c: WireClient, group: str, topic: str) -> tuple[str, int]:
    first = c.call(*JOIN_GROUP, join_group_body(group, topic))
    joined = c.call(*JOIN_GROUP, join_group_body(group, topic, first.member_id))
    assert joined.error_code == ErrorCode.none, joined
    synced = c.call(
        *SYNC_GROUP,
        {
            "group_id": group,
            "generation_id": joined.generation_id,
            "member_id": joined.member_id,
            "group_instance_id": None,
            "assignments": [{"member_id": joined.member_id, "assignment": b""}],
        },
    )
    assert synced.error_code == ErrorCode.none, synced
    return joined.member_id, joined.generation_id


def test_bad_transactional_requests_get_kafka_error_codes(broker_factory) -> None:
    broker = broker_factory("--transaction-max-timeout-ms", "60000")
    txn_id = f"bad-{uuid.uuid4().hex[:6]}"
    with WireClient(broker.bootstrap) as c:
        topic = c.create_topic(f"bad-{uuid.uuid4().hex[:6]}", 2).name
        assert _init(c, txn_id, 120_000)[0] == ErrorCode.invalid_transaction_timeout
        error, pid, epoch = _init(c, txn_id)
        assert error == ErrorCode.none
        assert _end(c, txn_id, pid, epoch, commit=True) == ErrorCode.invalid_txn_state
        # a transactional batch for a partition the transaction never added
        batch = encode_batch(
            [b"x"],
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=0,
            attributes=TRANSACTIONAL,
        )
        assert c.produce(topic, 1, batch).error_code == ErrorCode.invalid_txn_state
        # a newer instance bumps the epoch: the old one is stale
        error, pid2, epoch2 = _init(c, txn_id)
        assert (error, pid2, epoch2) == (ErrorCode.none, pid, epoch + 1)
        assert _add(c, txn_id, pid, epoch, topic, 0) == ErrorCode.producer_fenced
        assert _add(c, txn_id, pid, epoch2, topic, 0) == ErrorCode.none
        # TxnOffsetCommit as a member the group does not know, and of an old generation
        group = f"g-{uuid.uuid4().hex[:6]}"
        member, generation = _joined_member(c, group, topic)
        assert (
            _txn_offset_commit(c, txn_id, group, pid, epoch2, generation, "nobody", topic)
            == ErrorCode.unknown_member_id
        )
        assert (
            _txn_offset_commit(c, txn_id, group, pid, epoch2, generation - 1, member, topic)
            == ErrorCode.illegal_generation
        )
        assert (
            _txn_offset_commit(c, txn_id, group, pid, epoch2, generation, member, topic)
            == ErrorCode.none
        )
        assert _end(c, txn_id, pid, epoch2, commit=False) == ErrorCode.none
        assert _end(c, txn_id, pid, epoch2, commit=False) == ErrorCode.none  # a retry
    # everything still works for everyone
    p = _txn_producer(broker.bootstrap, txn_id)
    p.begin_transaction()
    p.produce(topic, value=b"fine", partition=0)
    p.commit_transaction(20)
    assert _read(broker.bootstrap, topic, 2, "read_committed")[0] == [b"fine"]


def test_aborted_ranges_and_open_transactions_survive_a_restart_from_the_bucket(
    broker_factory, tmp_path: Path
) -> None:
    """Object durability, data directory wiped: the catalog's transaction state (and
    the objects uploaded after its snapshot) still tell read_committed what to skip."""
    objects = f"file://{tmp_path / 'bucket'}"
    broker = broker_factory("--object-store", objects, "--durability", "object")
    (topic,) = _topics(broker.bootstrap, 2)
    p = _txn_producer(broker.bootstrap, f"bucket-{uuid.uuid4().hex[:6]}")
    committed = []
    for txn in range(6):
        p.begin_transaction()
        for n in range(10):
            p.produce(topic, value=f"{txn}-{n}".encode(), partition=n % 2)
        p.flush(10)
        if txn % 2:
            p.abort_transaction(20)
        else:
            p.commit_transaction(20)
            committed += [f"{txn}-{n}".encode() for n in range(10)]
    before = _read(broker.bootstrap, topic, 2, "read_committed")
    broker.kill()
    restarted = broker_factory(
        "--object-store",
        objects,
        "--durability",
        "object",
        data_dir=tmp_path / "fresh",
        port=broker.port,
    )
    after = _read(restarted.bootstrap, topic, 2, "read_committed")
    assert after == before
    assert sorted(v for vs in after.values() for v in vs) == sorted(committed)
    everything = _read(restarted.bootstrap, topic, 2, "read_uncommitted")
    assert sum(len(v) for v in everything.values()) == 60
    # a clean stop writes the catalog snapshot, transaction state included: a third
    # broker on yet another empty directory opens from it
    assert restarted.stop() == 0
    third = broker_factory(
        "--object-store",
        objects,
        "--durability",
        "object",
        data_dir=tmp_path / "third",
        port=broker.port,
    )
    assert _read(third.bootstrap, topic, 2, "read_committed") == before
