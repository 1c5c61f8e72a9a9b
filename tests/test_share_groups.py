"""Acceptance: share groups (KIP-932) with confluent-kafka's ShareConsumer and raw requests.

- four consumers of one share group on a 2-partition topic all receive records; 20,000
  records are each acknowledged exactly once across the group.
- a consumer killed with records acquired: after the lock duration they go to another
  member; a rejected record is not delivered again, a released one is.
- a broker restart mid-run: nothing acknowledged is delivered again, nothing is lost.
- a record that keeps being released is archived at the delivery-count limit, and the
  metrics count it.
- bad input gets Kafka's error codes and leaves the group usable.
- a read_committed share group never delivers an aborted transaction's records.
- kafka-share-groups describes members and start offsets, resets an empty group's start
  offsets and deletes them (slow: JVMs).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import AcknowledgeType, ShareConsumer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from devkit.broker import BrokerProcess, metric
from protocol.errors import ErrorCode
from tests.test_groups import create_topic, produce
from tests.wire import WireClient

SHARE_HEARTBEAT = (76, 1)
SHARE_FETCH = (78, 1)
SHARE_ACK = (79, 1)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def set_group_configs(bootstrap: str, group: str, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    r = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
            for k, v in configs.items()
        ],
    )
    admin.incremental_alter_configs([r])[r].result(15)


def share_consumer(bootstrap: str, group: str, topic: str, **extra: str) -> ShareConsumer:
    c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group, **extra})
    c.subscribe([topic])
    return c


def consume(
    c: ShareConsumer,
    until: threading.Event,
    seen: list[tuple[int, int]],
    lock: threading.Lock,
    deadline: float,
) -> None:
    """Poll (implicit acknowledgement: a poll accepts the previous one's records) until
    `until` is set; every delivery is recorded."""
    while not until.is_set() and time.monotonic() < deadline:
        msgs = [m for m in c.poll(0.5) if m.error() is None]
        with lock:
            seen.extend((m.partition(), m.offset()) for m in msgs)
    c.commit_sync()


def test_four_share_consumers_on_two_partitions_each_record_acknowledged_exactly_once(broker):
    topic, group = _name("queue"), _name("workers")
    create_topic(broker.bootstrap, topic, 2)
    set_group_configs(broker.bootstrap, group, share_auto_offset_reset="earliest")
    produced = produce(broker.bootstrap, topic, 20_000, "job", partitions=2)
    assert len(produced) == 20_000
    consumers = [share_consumer(broker.bootstrap, group, topic) for _ in range(4)]
    seen: list[list[tuple[int, int]]] = [[] for _ in consumers]
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.monotonic() + 90
    threads = [
        threading.Thread(target=consume, args=(c, done, s, lock, deadline))
        for c, s in zip(consumers, seen, strict=True)
    ]
    try:
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            with lock:
                if len({x for s in seen for x in s}) >= 20_000:
                    break
            time.sleep(0.2)
        time.sleep(1)  # a last poll each, which accepts what the previous one took
        done.set()
        for t in threads:
            t.join(30)
    finally:
        done.set()
        for c in consumers:
            c.close()
    deliveries = Counter(x for s in seen for x in s)
    assert set(deliveries) == set(produced), "every record delivered"
    assert max(deliveries.values()) == 1, "none delivered twice"
    assert all(len(s) > 0 for s in seen), [len(s) for s in seen]
    # every record was acknowledged: a new member of the group finds nothing left
    late = share_consumer(broker.bootstrap, group, topic)
    try:
        end = time.monotonic() + 4
        extra = []
        while time.monotonic() < end:
            extra += [m for m in late.poll(0.5) if m.error() is None]
        assert extra == []
    finally:
        late.close()


_KILLED = """
import os, signal, sys
from confluent_kafka import ShareConsumer
c = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                   "share.acknowledgement.mode": "explicit"})
c.subscribe([sys.argv[3]])
while True:
    msgs = [m for m in c.poll(1.0) if m.error() is None]
    if msgs:
        print(" ".join(f"{m.partition()}:{m.offset()}" for m in msgs), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_consumers_records_reach_another_member_after_the_lock_duration(broker):
    topic, group = _name("jobs"), _name("pool")
    create_topic(broker.bootstrap, topic, 1)
    set_group_configs(
        broker.bootstrap,
        group,
        share_auto_offset_reset="earliest",
        share_record_lock_duration_ms="3000",
    )
    produce(broker.bootstrap, topic, 20, "job", partitions=1)
    out = subprocess.run(
        [sys.executable, "-c", _KILLED, broker.bootstrap, group, topic],
        capture_output=True,
        text=True,
        timeout=60,
    )
    held = {tuple(map(int, x.split(":"))) for x in out.stdout.split()}
    assert held, out.stderr[-2000:]
    killed_at = time.monotonic()
    c = share_consumer(broker.bootstrap, group, topic, **{"share.acknowledgement.mode": "explicit"})
    try:
        got: dict[tuple[int, int], int] = {}
        while not held <= set(got) and time.monotonic() - killed_at < 30:
            for m in c.poll(0.5):
                if m.error() is None:
                    got[(m.partition(), m.offset())] = m.delivery_count()
                    c.acknowledge(m)
            c.commit_sync()
        elapsed = time.monotonic() - killed_at
        assert held <= set(got)
        assert all(got[k] == 2 for k in held), "the killed member's records, delivered again"
        assert elapsed >= 2.0, "not before the lock could expire"
    finally:
        c.close()


def test_a_rejected_record_is_not_delivered_again_and_a_released_one_is(broker):
    topic, group = _name("evals"), _name("graders")
    create_topic(broker.bootstrap, topic, 1)
    set_group_configs(broker.bootstrap, group, share_auto_offset_reset="earliest")
    produce(broker.bootstrap, topic, 4, "eval", partitions=1)
    c = share_consumer(broker.bootstrap, group, topic, **{"share.acknowledgement.mode": "explicit"})
    deliveries: list[tuple[int, int]] = []
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and len(deliveries) < 5:
            for m in c.poll(0.5):
                if m.error() is not None:
                    continue
                deliveries.append((m.offset(), m.delivery_count()))
                if m.offset() == 1 and m.delivery_count() == 1:
                    c.acknowledge(m, AcknowledgeType.RELEASE)
                elif m.offset() == 2:
                    c.acknowledge(m, AcknowledgeType.REJECT)
                else:
                    c.acknowledge(m)
            c.commit_sync()
        settle = time.monotonic() + 2
        while time.monotonic() < settle:
            for m in c.poll(0.5):
                if m.error() is None:
                    deliveries.append((m.offset(), m.delivery_count()))
                    c.acknowledge(m)
            c.commit_sync()
    finally:
        c.close()
    assert sorted(deliveries) == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]


def test_a_broker_restart_redelivers_nothing_acknowledged_and_loses_nothing(broker_factory):
    b = broker_factory()
    topic, group = _name("tasks"), _name("agents")
    create_topic(b.bootstrap, topic, 2)
    set_group_configs(b.bootstrap, group, share_auto_offset_reset="earliest")
    produced = produce(b.bootstrap, topic, 2000, "task", partitions=2)
    acked: set[tuple[int, int]] = set()
    c = share_consumer(b.bootstrap, group, topic, **{"share.acknowledgement.mode": "explicit"})
    try:
        end = time.monotonic() + 30
        while len(acked) < 1000 and time.monotonic() < end:
            for m in c.poll(0.5):
                if m.error() is None:
                    c.acknowledge(m)
                    acked.add((m.partition(), m.offset()))
            c.commit_sync()
    finally:
        c.close()
    assert len(acked) >= 1000
    b.stop()
    b.start()
    after: Counter = Counter()
    c = share_consumer(b.bootstrap, group, topic, **{"share.acknowledgement.mode": "explicit"})
    try:
        end = time.monotonic() + 60
        while len(acked) + len(after) < len(produced) and time.monotonic() < end:
            for m in c.poll(0.5):
                if m.error() is None:
                    c.acknowledge(m)
                    after[(m.partition(), m.offset())] += 1
            c.commit_sync()
    finally:
        c.close()
    assert not acked & set(after), "acknowledged before the restart, delivered after it"
    assert acked | set(after) == set(produced), "nothing lost"


def test_a_record_that_keeps_failing_is_archived_at_the_delivery_count_limit(broker_factory):
    b = broker_factory()
    b.stop()
    b = BrokerProcess(b.data_dir, None, metrics=True).start()
    try:
        topic, group = _name("flaky"), _name("retriers")
        create_topic(b.bootstrap, topic, 1)
        set_group_configs(
            b.bootstrap, group, share_auto_offset_reset="earliest", share_delivery_count_limit="3"
        )
        produce(b.bootstrap, topic, 1, "poison", partitions=1)
        c = share_consumer(b.bootstrap, group, topic, **{"share.acknowledgement.mode": "explicit"})
        counts = []
        try:
            end = time.monotonic() + 15
            while time.monotonic() < end:
                for m in c.poll(0.5):
                    if m.error() is None:
                        counts.append(m.delivery_count())
                        c.acknowledge(m, AcknowledgeType.RELEASE)
                c.commit_sync()
                if len(counts) >= 3 and time.monotonic() > end - 12:
                    break
            time.sleep(1.5)
            for m in c.poll(1.0):
                if m.error() is None:
                    counts.append(m.delivery_count())
        finally:
            c.close()
        assert counts == [1, 2, 3]
        assert metric(b.metrics_port, "strata_share_delivery_limit_archived_total") == 1
        assert metric(b.metrics_port, "strata_share_redeliveries_total") == 2
    finally:
        b.stop()


def _heartbeat(group: str, member: str, epoch: int, topics: list[str] | None) -> dict:
    return {
        "group_id": group,
        "member_id": member,
        "member_epoch": epoch,
        "rack_id": None,
        "subscribed_topic_names": topics,
    }


def _fetch(group: str, member: str, epoch: int, topic_id, acks=()) -> dict:
    return {
        "group_id": group,
        "member_id": member,
        "share_session_epoch": epoch,
        "max_wait": 0,
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "max_records": 100,
        "batch_size": 100,
        "topics": [
            {
                "topic_id": topic_id,
                "partitions": [{"partition_index": 0, "acknowledgement_batches": list(acks)}],
            }
        ],
        "forgotten_topics_data": [],
    }


def test_bad_share_requests_get_kafkas_errors_and_the_group_stays_usable(broker):
    topic, group = _name("checks"), _name("share")
    create_topic(broker.bootstrap, topic, 1)
    set_group_configs(broker.bootstrap, group, share_auto_offset_reset="earliest")
    produce(broker.bootstrap, topic, 10, "x", partitions=1)
    member = uuid.uuid4().hex
    with WireClient(broker.bootstrap) as w:
        joined = w.call(*SHARE_HEARTBEAT, _heartbeat(group, member, 0, [topic]))
        assert joined.error_code == ErrorCode.none
        epoch = joined.member_epoch
        stale = w.call(*SHARE_HEARTBEAT, _heartbeat(group, member, epoch + 3, None))
        assert stale.error_code == ErrorCode.fenced_member_epoch
        topic_id = joined.assignment.topic_partitions[0].topic_id
        # a share session that was never opened
        lost = w.call(*SHARE_FETCH, _fetch(group, member, 5, topic_id))
        assert lost.error_code == ErrorCode.share_session_not_found
        first = w.call(*SHARE_FETCH, _fetch(group, member, 0, topic_id))
        assert first.error_code == ErrorCode.none
        acquired = first.responses[0].partitions[0].acquired_records
        assert acquired[0].first_offset == 0
        # another member acknowledging records this one holds
        other = uuid.uuid4().hex
        w.call(*SHARE_HEARTBEAT, _heartbeat(group, other, 0, [topic]))
        w.call(*SHARE_FETCH, {**_fetch(group, other, 0, topic_id), "topics": []})
        ack = {"first_offset": 0, "last_offset": 2, "acknowledge_types": [1]}
        wrong = w.call(
            *SHARE_ACK,
            {
                "group_id": group,
                "member_id": other,
                "share_session_epoch": 1,
                "topics": [
                    {
                        "topic_id": topic_id,
                        "partitions": [{"partition_index": 0, "acknowledgement_batches": [ack]}],
                    }
                ],
            },
        )
        assert wrong.responses[0].partitions[0].error_code == ErrorCode.invalid_record_state
        # the holder still acknowledges them
        mine = w.call(*SHARE_FETCH, _fetch(group, member, 1, topic_id, [ack]))
        assert mine.error_code == ErrorCode.none
        assert mine.responses[0].partitions[0].acknowledge_error_code == ErrorCode.none
        # a classic member joining the share group's id
        join = w.call(
            11,
            5,
            {
                "group_id": group,
                "session_timeout": 10000,
                "rebalance_timeout": 10000,
                "member_id": "",
                "group_instance_id": None,
                "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x00"}],
            },
        )
        assert join.error_code == ErrorCode.inconsistent_group_protocol
        again = w.call(*SHARE_HEARTBEAT, _heartbeat(group, member, epoch, None))
        assert again.error_code == ErrorCode.none
    # a classic group's id is not a share group's
    from confluent_kafka import Consumer

    classic_group = _name("classic")
    cc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": classic_group})
    cc.subscribe([topic])
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end and not cc.assignment():
            cc.poll(0.2)
        assert cc.assignment()
        with WireClient(broker.bootstrap) as w:
            clash = w.call(*SHARE_HEARTBEAT, _heartbeat(classic_group, "", 0, [topic]))
        assert clash.error_code == ErrorCode.group_id_not_found
    finally:
        cc.close()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.mark.slow
def test_kafka_share_groups_describes_members_and_start_offsets_and_resets_an_empty_group(broker):
    import shutil

    from devkit.kafka_cli import SHARE_GROUP_COMMAND, KafkaCli

    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: the Kafka CLI tools need a JVM")
    tools = KafkaCli()

    def cli(*args: str) -> str:
        r = tools.run(SHARE_GROUP_COMMAND, "--bootstrap-server", broker.bootstrap, *args)
        assert r.returncode == 0, (r.stdout, r.stderr[-3000:], broker.log_tail())
        return r.stdout

    topic, group = _name("inbox"), _name("handlers")
    create_topic(broker.bootstrap, topic, 2)
    set_group_configs(broker.bootstrap, group, share_auto_offset_reset="earliest")
    produce(broker.bootstrap, topic, 100, "m", partitions=2)
    c = share_consumer(broker.bootstrap, group, topic)
    try:
        n, end = 0, time.monotonic() + 20
        while n < 100 and time.monotonic() < end:
            n += sum(1 for m in c.poll(0.5) if m.error() is None)
        c.commit_sync()
        assert n == 100
        offsets = cli("--describe", "--group", group)
        rows = [line.split() for line in offsets.splitlines() if line.startswith(group)]
        assert sorted((r[1], r[2], r[3]) for r in rows) == [(topic, "0", "50"), (topic, "1", "50")]
        members = cli("--describe", "--members", "--group", group)
        assert f"{topic}:0,1" in members, members
        assert group in cli("--list")
    finally:
        c.close()
    end = time.monotonic() + 20
    while "Empty" not in cli("--describe", "--state", "--group", group):
        assert time.monotonic() < end, "the group did not become empty"
        time.sleep(0.5)
    cli("--reset-offsets", "--to-earliest", "--topic", topic, "--group", group, "--execute")
    rows = [
        line.split()
        for line in cli("--describe", "--group", group).splitlines()
        if line.startswith(group)
    ]
    assert sorted(r[3] for r in rows) == ["0", "0"]
    again = share_consumer(broker.bootstrap, group, topic)
    try:
        n, end = 0, time.monotonic() + 20
        while n < 100 and time.monotonic() < end:
            n += sum(1 for m in again.poll(0.5) if m.error() is None)
        assert n == 100, "all delivered again from the reset start offsets"
        again.commit_sync()
    finally:
        again.close()
    end = time.monotonic() + 20
    while "Empty" not in cli("--describe", "--state", "--group", group):
        assert time.monotonic() < end, "the group did not become empty"
        time.sleep(0.5)
    cli("--delete-offsets", "--topic", topic, "--group", group)
    with WireClient(broker.bootstrap) as w:
        d = w.call(90, 1, {"groups": [{"group_id": group, "topics": None}]})
    assert d.groups[0].topics == (), "the share-partitions' state is gone"


def test_read_committed_share_groups_never_deliver_aborted_records(broker):
    from confluent_kafka import Producer

    topic = _name("txn-jobs")
    create_topic(broker.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": _name("tx")})
    p.init_transactions(30)
    for outcome, tag in (("abort", "aborted"), ("commit", "committed")):
        p.begin_transaction()
        for i in range(5):
            p.produce(topic, f"{tag}-{i}".encode(), partition=0)
        p.flush(30)
        (p.abort_transaction if outcome == "abort" else p.commit_transaction)(30)
    got: dict[str, list[str]] = {}
    for level in ("read_committed", "read_uncommitted"):
        group = _name(level.replace("_", "-"))
        set_group_configs(
            broker.bootstrap,
            group,
            share_auto_offset_reset="earliest",
            share_isolation_level=level,
        )
        c = share_consumer(broker.bootstrap, group, topic)
        values: list[str] = []
        try:
            end = time.monotonic() + 15
            while time.monotonic() < end and len(values) < (5 if level == "read_committed" else 10):
                values += [m.value().decode() for m in c.poll(0.5) if m.error() is None]
            settle = time.monotonic() + 1.5
            while time.monotonic() < settle:
                values += [m.value().decode() for m in c.poll(0.5) if m.error() is None]
            c.commit_sync()
        finally:
            c.close()
        got[level] = sorted(values)
    assert got["read_committed"] == [f"committed-{i}" for i in range(5)]
    assert got["read_uncommitted"] == sorted(
        [f"aborted-{i}" for i in range(5)] + [f"committed-{i}" for i in range(5)]
    )
