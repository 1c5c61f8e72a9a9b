"""confluent-kafka's AdminClient against Strata: configs, partitions, records, cluster.

What a Kafka operator's scripts do, with the answers Kafka gives for the same calls.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)

from tests.wire import WireClient, make_batch


def _setup(
    bootstrap: str, partitions: int = 2, config: dict | None = None
) -> tuple[AdminClient, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"adm-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(10)
    return admin, name


def _describe(admin: AdminClient, topic: str) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([res])[res].result(10)


def test_describe_configs_shows_values_and_sources(shared_broker) -> None:
    admin, topic = _setup(shared_broker.bootstrap, config={"retention.ms": "3600000"})
    configs = _describe(admin, topic)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["max.message.bytes"].value == "1048588"
    assert configs["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not configs["retention.ms"].is_read_only

    broker_res = ConfigResource(ConfigResource.Type.BROKER, "0")
    broker_configs = admin.describe_configs([broker_res])[broker_res].result(10)
    assert broker_configs["num.partitions"].value == "1"
    assert not broker_configs["num.partitions"].is_read_only  # a live broker default
    assert broker_configs["broker.id"].is_read_only


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")  # Kafka's CLI still uses it
def test_alter_and_incremental_alter_take_effect_live_and_survive_restart(broker_factory) -> None:
    b = broker_factory()
    admin, topic = _setup(b.bootstrap, partitions=1)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"max.message.bytes": "2000"})
    admin.alter_configs([res])[res].result(10)
    with WireClient(b.bootstrap) as c:  # the new limit applies to the very next produce
        assert c.produce(topic, 0, make_batch([b"x" * 5000])).error_code == 10

    inc = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    admin.incremental_alter_configs([inc])[inc].result(10)
    configs = _describe(admin, topic)
    assert configs["retention.ms"].value == "60000"
    assert configs["max.message.bytes"].value == "1048588"

    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.ms": "soon"})
    with pytest.raises(KafkaException) as info:
        admin.alter_configs([bad])[bad].result(10)
    assert info.value.args[0].code() == KafkaError.INVALID_CONFIG

    b.stop()
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    admin2 = AdminClient({"bootstrap.servers": b2.bootstrap})
    assert _describe(admin2, topic)["retention.ms"].value == "60000"


def test_create_partitions(shared_broker) -> None:
    admin, topic = _setup(shared_broker.bootstrap, partitions=2)
    admin.create_partitions([NewPartitions(topic, 5)])[topic].result(10)
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 5
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    delivered = []
    p.produce(topic, b"to-the-new-one", partition=4, on_delivery=lambda e, m: delivered.append(e))
    p.flush(10)
    assert delivered == [None]
    with pytest.raises(KafkaException) as info:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(10)
    assert info.value.args[0].code() == KafkaError.INVALID_PARTITIONS


def test_delete_records_moves_the_log_start(broker_factory) -> None:
    b = broker_factory()
    admin, topic = _setup(b.bootstrap, partitions=1)
    with WireClient(b.bootstrap) as c:
        for i in range(10):
            c.produce(topic, 0, make_batch([b"%d" % i]))
    result = admin.delete_records([TopicPartition(topic, 0, 4)])
    deleted = result[TopicPartition(topic, 0, 4)].result(10)
    assert deleted.low_watermark == 4
    with WireClient(b.bootstrap) as c:
        assert c.list_offset(topic, 0, -2).offset == 4
        assert c.fetch(topic, 0, 2).error_code == 1  # OFFSET_OUT_OF_RANGE below the start
    b.stop()
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        assert c.list_offset(topic, 0, -2).offset == 4


def test_describe_cluster(shared_broker) -> None:
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    cluster = admin.describe_cluster().result(10)
    assert cluster.cluster_id
    assert [n.id for n in cluster.nodes] == [0]
    assert cluster.controller.id == 0
