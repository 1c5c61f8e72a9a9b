"""The per-connection contract of broker/server.py, through the raw wire client and
librdkafka's admin client: a client that leaves in the middle of a change never wedges
the broker, and requests on one connection take effect in the order they were sent."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from devkit.procs import wait_for
from tests.wire import (
    CREATE_TOPICS,
    DELETE_RECORDS,
    DELETE_TOPICS,
    DESCRIBE_CONFIGS,
    FETCH,
    INCREMENTAL_ALTER_CONFIGS,
    JOIN_GROUP,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    PRODUCE,
    WireClient,
    alter_topic_configs_body,
    create_topics_body,
    delete_records_body,
    delete_topics_body,
    describe_topic_configs_body,
    fetch_body,
    join_group_body,
    list_offsets_body,
    make_batch,
    metadata_body,
    offset_commit_body,
    offset_fetch_body,
    produce_body,
)

ROUNDS = 5  # each leave is repeated: the race it covers is won or lost per request
GROUP = "leaver-group"


def _state(bootstrap: str) -> dict[str, Any]:
    """What a client can see of the broker's state: topics with their partition counts,
    explicit topic configs, log start offsets, and the test group's committed offsets."""
    with WireClient(bootstrap) as c:
        meta = c.call(*METADATA, {**metadata_body(auto_create=False), "topics": None})
        topics = {t.name: len(t.partitions) for t in meta.topics if not t.name.startswith("__")}
        configs, starts, offsets = {}, {}, {}
        for name in sorted(topics):
            r = c.call(*DESCRIBE_CONFIGS, describe_topic_configs_body(name))
            configs[name] = sorted(
                (e.name, e.value) for e in r.results[0].configs if e.config_source == 1
            )
            starts[name] = c.list_offset(name, 0, -2).offset
            f = c.call(*OFFSET_FETCH, offset_fetch_body(GROUP, name, 0))
            offsets[name] = f.groups[0].topics[0].partitions[0].committed_offset
    return {"topics": topics, "configs": configs, "log_starts": starts, "offsets": offsets}


def _leave(what: str, name: str) -> tuple[int, int, dict]:
    """The request a leaving client sends, and about `name`-derived topics."""
    return {
        "auto-creation": lambda: (*METADATA, metadata_body(f"{name}-auto-a", f"{name}-auto-b")),
        "CreateTopics": lambda: (*CREATE_TOPICS, create_topics_body(f"{name}-created", 2)),
        "DeleteTopics": lambda: (*DELETE_TOPICS, delete_topics_body(name)),
        "IncrementalAlterConfigs": lambda: (
            *INCREMENTAL_ALTER_CONFIGS,
            alter_topic_configs_body(name, {"retention.ms": "7200000"}),
        ),
        "OffsetCommit": lambda: (*OFFSET_COMMIT, offset_commit_body(GROUP, name, 0, 3)),
    }[what]()


def _took_effect(what: str, name: str, state: dict[str, Any]) -> bool:
    topics = state["topics"]
    return {
        "auto-creation": lambda: {f"{name}-auto-a", f"{name}-auto-b"} <= set(topics),
        "CreateTopics": lambda: topics.get(f"{name}-created") == 2,
        "DeleteTopics": lambda: name not in topics,
        "IncrementalAlterConfigs": lambda: ("retention.ms", "7200000") in state["configs"][name],
        "OffsetCommit": lambda: state["offsets"].get(name) == 3,
    }[what]()


@pytest.mark.parametrize(
    "what",
    ["auto-creation", "CreateTopics", "DeleteTopics", "IncrementalAlterConfigs", "OffsetCommit"],
)
def test_a_client_that_leaves_mid_change_never_wedges_later_changes(broker_factory, what) -> None:
    b = broker_factory()
    names = [f"leave-{uuid.uuid4().hex[:8]}" for _ in range(ROUNDS)]
    with WireClient(b.bootstrap) as c:
        for name in names:
            assert c.create_topic(name).error_code == 0
            assert c.produce(name, 0, make_batch([b"a", b"b", b"c", b"d"])).error_code == 0

    for name in names:  # each client sends its change and is gone before the answer
        WireClient(b.bootstrap).send_and_leave(*_leave(what, name))
    # a request that had started still takes effect, as in Kafka: only its answer is lost
    for name in names:
        assert wait_for(lambda name=name: _took_effect(what, name, _state(b.bootstrap)), 15), name

    # the same change and others still succeed, through the wire and a real client
    after = f"after-{uuid.uuid4().hex[:8]}"
    with WireClient(b.bootstrap) as c:
        retry = c.call(*_leave(what, names[0]))  # the very change that was interrupted
        assert retry is not None
        meta = c.call(*METADATA, metadata_body(f"{after}-auto"))
        assert meta.topics[0].error_code in (0, 5)  # created (LEADER_NOT_AVAILABLE at first)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(after, 3, 1)])[after].result(15)
    survivor = after if what == "DeleteTopics" else names[0]
    gone = names[-1]  # deleted by the leaves, or below
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        survivor,
        incremental_configs=[
            ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    offsets = ConsumerGroupTopicPartitions(GROUP, [TopicPartition(survivor, 0, 2)])
    admin.alter_consumer_group_offsets([offsets])[GROUP].result(15)
    if what != "DeleteTopics":
        admin.delete_topics([gone])[gone].result(15)

    def settled() -> bool:
        s = _state(b.bootstrap)
        return f"{after}-auto" in s["topics"] and gone not in s["topics"]

    assert wait_for(settled, 15), _state(b.bootstrap)
    before = _state(b.bootstrap)
    assert ("retention.bytes", "1048576") in before["configs"][survivor]
    assert before["offsets"][survivor] == 2

    b.stop()
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    assert _state(b2.bootstrap) == before  # nothing held only in memory, nothing unlogged
    assert "PreconditionFailed" not in b.log()


# --- ordering on one connection -------------------------------------------------------


def _new_topic(c: WireClient, records: int = 5) -> str:
    name = f"order-{uuid.uuid4().hex[:8]}"
    assert c.create_topic(name).error_code == 0
    assert c.produce(name, 0, make_batch([b"%d" % i for i in range(records)])).error_code == 0
    return name


def test_pipelined_delete_records_is_seen_by_the_next_list_offsets(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        for _ in range(ROUNDS):
            t = _new_topic(c)
            deleted, earliest = c.pipeline(
                [
                    (*DELETE_RECORDS, delete_records_body(t, 0, 2)),
                    (*LIST_OFFSETS, list_offsets_body(t, 0, -2)),
                ]
            )
            assert deleted.topics[0].partitions[0].low_watermark == 2
            assert earliest.topics[0].partitions[0].offset == 2


def test_pipelined_create_topics_is_seen_by_the_next_metadata(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        for _ in range(ROUNDS):
            t = f"order-{uuid.uuid4().hex[:8]}"
            created, meta = c.pipeline(
                [
                    (*CREATE_TOPICS, create_topics_body(t, 3)),
                    (*METADATA, metadata_body(t, auto_create=False)),
                ]
            )
            assert created.topics[0].error_code == 0
            assert meta.topics[0].error_code == 0
            assert len(meta.topics[0].partitions) == 3


def test_pipelined_offset_commit_is_seen_by_the_next_offset_fetch(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        t = _new_topic(c)
        for offset in range(1, ROUNDS + 1):
            committed, fetched = c.pipeline(
                [
                    (*OFFSET_COMMIT, offset_commit_body(GROUP, t, 0, offset)),
                    (*OFFSET_FETCH, offset_fetch_body(GROUP, t, 0)),
                ]
            )
            assert committed.topics[0].partitions[0].error_code == 0
            assert fetched.groups[0].topics[0].partitions[0].committed_offset == offset


def test_pipelined_alter_configs_is_seen_by_the_next_describe_configs(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        t = _new_topic(c)
        for i in range(ROUNDS):
            v = str(3_600_000 + i)
            altered, described = c.pipeline(
                [
                    (
                        *INCREMENTAL_ALTER_CONFIGS,
                        alter_topic_configs_body(t, {"retention.ms": v}),
                    ),
                    (*DESCRIBE_CONFIGS, describe_topic_configs_body(t)),
                ]
            )
            assert altered.responses[0].error_code == 0
            got = {e.name: e.value for e in described.results[0].configs}
            assert got["retention.ms"] == v


def test_librdkafka_admin_requests_sent_without_waiting_see_each_other(broker) -> None:
    """confluent-kafka's admin client queues each call on the broker's one connection and
    relies on the answers reflecting every earlier call."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with WireClient(broker.bootstrap) as c:
        t = _new_topic(c, records=10)
    for cut in (2, 4, 6):
        tp = TopicPartition(t, 0, cut)
        deleted = admin.delete_records([tp])
        earliest = admin.list_offsets({TopicPartition(t, 0): OffsetSpec.earliest()})
        assert deleted[tp].result(15).low_watermark == cut
        assert earliest[TopicPartition(t, 0)].result(15).offset == cut

    for value in ("3600001", "3600002"):
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            t,
            incremental_configs=[
                ConfigEntry("retention.ms", value, incremental_operation=AlterConfigOpType.SET)
            ],
        )
        altered = admin.incremental_alter_configs([resource])
        described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t)])
        altered[resource].result(15)
        configs = next(iter(described.values())).result(15)
        assert configs["retention.ms"].value == value

    for offset in (3, 7):
        request = ConsumerGroupTopicPartitions(GROUP, [TopicPartition(t, 0, offset)])
        altered = admin.alter_consumer_group_offsets([request])
        listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(GROUP)])
        altered[GROUP].result(15)
        (tp,) = [p for p in listed[GROUP].result(15).topic_partitions if p.topic == t]
        assert tp.offset == offset


def test_pipelined_produce_is_seen_by_the_next_list_offsets(broker) -> None:
    """The high watermark moves when the produce is durable; a later request on the same
    connection sees it, as on Kafka."""
    with WireClient(broker.bootstrap) as c:
        t = _new_topic(c, records=1)
        for n in range(2, 2 + ROUNDS):
            produced, latest = c.pipeline(
                [
                    (*PRODUCE, produce_body(t, 0, make_batch([b"x"]))),
                    (*LIST_OFFSETS, list_offsets_body(t, 0, -1)),
                ]
            )
            assert produced.responses[0].partition_responses[0].error_code == 0
            assert latest.topics[0].partitions[0].offset == n


def test_a_client_that_leaves_a_parked_long_poll_leaves_nothing_behind(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        t = f"poll-{uuid.uuid4().hex[:8]}"
        assert c.create_topic(t).error_code == 0
    for _ in range(ROUNDS):  # each parks waiting for data, then is gone
        WireClient(broker.bootstrap).send_and_leave(*FETCH, fetch_body(t, {0: 0}, 5000))
    with WireClient(broker.bootstrap) as c:
        assert c.produce(t, 0, make_batch([b"after"])).error_code == 0
        (part,) = c.fetch_many(t, {0: 0}, max_wait_ms=5000)
        assert part.error_code == 0 and part.records
    assert broker.stop() == 0  # nothing left parked holds the shutdown
    assert "Traceback" not in broker.log() and "request failed" not in broker.log()


def test_a_member_that_leaves_while_its_join_is_parked_does_not_stall_the_group(broker) -> None:
    """A JoinGroup parks until the rebalance completes; its client leaving meanwhile
    leaves a member that expires with its session, and a real consumer of the same
    group still gets the partitions and reads."""
    group = f"parked-{uuid.uuid4().hex[:8]}"
    with WireClient(broker.bootstrap) as c:
        t = _new_topic(c, records=3)
        first = c.call(*JOIN_GROUP, join_group_body(group, t))
        assert first.error_code == 79  # MEMBER_ID_REQUIRED (KIP-394): join again with it
    WireClient(broker.bootstrap).send_and_leave(
        *JOIN_GROUP, join_group_body(group, t, first.member_id)
    )
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    try:
        consumer.subscribe([t])
        got = []
        deadline = time.monotonic() + 45
        while len(got) < 3 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
        assert got == [b"0", b"1", b"2"]
    finally:
        consumer.close()
