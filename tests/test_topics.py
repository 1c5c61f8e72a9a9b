"""Topic administration through confluent-kafka's AdminClient, as Kafka answers it."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from protocol.errors import ErrorCode
from tests.wire import WireClient


def _admin(b) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap})


def _error_of(future) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(10)
    return info.value.args[0]


def test_create_list_describe_delete(shared_broker) -> None:
    admin = _admin(shared_broker)
    name = f"orders-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(name, 4, 1, config={"retention.ms": "3600000"})])[name].result(10)
    md = admin.list_topics(timeout=10)
    assert name in md.topics
    assert sorted(md.topics[name].partitions) == [0, 1, 2, 3]
    assert all(p.leader == 0 for p in md.topics[name].partitions.values())

    assert (
        _error_of(admin.create_topics([NewTopic(name, 1, 1)])[name]).code()
        == KafkaError.TOPIC_ALREADY_EXISTS
    )

    admin.delete_topics([name])[name].result(10)
    assert name not in admin.list_topics(timeout=10).topics
    assert _error_of(admin.delete_topics([name])[name]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_topic_ids_are_stable_across_restart(broker_factory) -> None:
    b = broker_factory()
    with WireClient(b.bootstrap) as c:
        created = c.create_topic("stable", 2)
    b.stop()
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        md = c.call(
            3,
            12,
            {
                "topics": [{"name": "stable", "topic_id": uuid.UUID(int=0)}],
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False,
            },
        )
    assert md.topics[0].topic_id == created.topic_id != uuid.UUID(int=0)


def test_validate_only_and_invalid_requests(shared_broker) -> None:
    admin = _admin(shared_broker)
    name = f"dry-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(name, 3, 1)], validate_only=True)[name].result(10)
    assert name not in admin.list_topics(timeout=10).topics

    bad_name = _error_of(admin.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"])
    assert bad_name.code() == KafkaError.TOPIC_EXCEPTION
    bad_config = _error_of(
        admin.create_topics([NewTopic(name, 1, 1, config={"no.such": "1"})])[name]
    )
    assert bad_config.code() == KafkaError.INVALID_CONFIG
    bad_value = _error_of(
        admin.create_topics([NewTopic(name, 1, 1, config={"message.timestamp.type": "Sometimes"})])[
            name
        ]
    )
    assert bad_value.code() == KafkaError.INVALID_CONFIG
    bad_partitions = _error_of(admin.create_topics([NewTopic(name, 0, 1)])[name])
    assert bad_partitions.code() == KafkaError.INVALID_PARTITIONS


def test_metadata_auto_creates_when_enabled(broker_factory, tmp_path) -> None:
    on = broker_factory("--num-partitions", "3")
    with WireClient(on.bootstrap) as c:
        md = c.call(
            3,
            9,
            {
                "topics": [{"name": "auto-made"}],
                "allow_auto_topic_creation": True,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False,
            },
        )
        assert md.topics[0].error_code == ErrorCode.none
        assert len(md.topics[0].partitions) == 3
        md = c.call(
            3,
            9,
            {
                "topics": [{"name": "not-asked"}],
                "allow_auto_topic_creation": False,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False,
            },
        )
        assert md.topics[0].error_code == ErrorCode.unknown_topic_or_partition

    off = broker_factory("--auto-create-topics", "false", data_dir=tmp_path / "off")
    p = Producer({"bootstrap.servers": off.bootstrap, "message.timeout.ms": 3000})
    errors = []
    p.produce("never-created", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None
    assert "never-created" not in _admin(off).list_topics(timeout=10).topics
