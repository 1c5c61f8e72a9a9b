"""Broker configuration under Kafka's names, and the broker defaults that change live.

Acceptance (issue 26, section 3): kafka-python's describe_configs for the broker shows
Kafka's names with their sources; an alter of the broker default log.retention.ms
applies to topics without their own value and survives a restart; settings Kafka
cannot change live are refused with Kafka's error.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
)
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import KafkaAdminClient

from devkit.procs import wait_for
from tests.wire import WireClient, make_batch

FAST = ("--retention-check-interval-ms", "200")


def _kafka_python(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)


def _broker_configs(admin: KafkaAdminClient, *keys: str) -> dict:
    res = KConfigResource("BROKER", "0", configs=list(keys) or None)
    return admin.describe_configs([res], include_synonyms=True, config_filter="all")["broker"]["0"]


def _set_default(bootstrap: str, name: str, value: str | None, broker: str = "") -> None:
    """IncrementalAlterConfigs on the broker resource "" (the cluster-wide default, as
    `kafka-configs --entity-default` sends it), raw: neither Python client sends an
    empty broker name."""
    with WireClient(bootstrap) as c:
        r = c.call(
            44,
            1,
            {
                "resources": [
                    {
                        "resource_type": 4,
                        "resource_name": broker,
                        "configs": [
                            {"name": name, "config_operation": 0 if value else 1, "value": value}
                        ],
                    }
                ],
                "validate_only": False,
            },
        )
    assert r.responses[0].error_code == 0, r.responses[0].error_message


def test_describe_configs_of_the_broker_reports_kafka_names_sources_and_synonyms(
    broker_factory,
) -> None:
    b = broker_factory("--num-partitions", "3", "--rack", "r1")
    admin = _kafka_python(b.bootstrap)
    configs = _broker_configs(admin)
    assert configs["advertised.listeners"]["value"] == f"PLAINTEXT://{b.bootstrap}"
    assert configs["listeners"]["value"] == f"PLAINTEXT://{b.bootstrap}"
    assert configs["listeners"]["config_source"] == "STATIC_BROKER_CONFIG"
    assert configs["broker.id"]["value"] == configs["node.id"]["value"] == "0"
    assert configs["broker.rack"]["value"] == "r1"
    assert configs["num.partitions"]["value"] == "3"
    assert configs["num.partitions"]["config_source"] == "STATIC_BROKER_CONFIG"
    assert configs["auto.create.topics.enable"]["value"] == "true"
    assert configs["auto.create.topics.enable"]["config_source"] == "DEFAULT_CONFIG"
    assert configs["default.replication.factor"]["value"] == "1"
    assert configs["message.max.bytes"]["value"] == "1048588"
    assert configs["log.retention.ms"]["value"] == "604800000"
    assert configs["log.retention.bytes"]["value"] == "-1"
    assert configs["offsets.topic.num.partitions"]["value"] == "16"
    assert configs["group.initial.rebalance.delay.ms"]["value"] == "3000"
    assert configs["group.min.session.timeout.ms"]["value"] == "6000"
    assert configs["group.max.session.timeout.ms"]["value"] == "1800000"
    assert configs["log.dirs"]["value"].endswith("/wal")
    assert configs["strata.tail.cache.bytes"]["config_source"] == "DEFAULT_CONFIG"
    # Strata's flag spellings are gone: only Kafka's names, and strata.* for the rest
    assert not {"advertised.listener", "auto.create.topics", "listen", "data.dir"} & set(configs)
    assert "strata.etcd" in configs and "etcd" not in configs
    # read-only: what needs a restart; alterable: the live broker defaults
    assert configs["listeners"]["read_only"] and configs["broker.id"]["read_only"]
    assert not configs["log.retention.ms"]["read_only"]
    assert not configs["message.max.bytes"]["read_only"]
    assert configs["num.partitions"]["synonyms"] == [
        {"name": "num.partitions", "value": "3", "source": "STATIC_BROKER_CONFIG"}
    ]


def test_broker_default_retention_applies_to_topics_without_their_own_and_survives_restart(
    broker_factory, tmp_path
) -> None:
    b = broker_factory(*FAST)
    plain, own = f"plain-{uuid.uuid4().hex[:6]}", f"own-{uuid.uuid4().hex[:6]}"
    old = int(time.time() * 1000) - 3_600_000  # records an hour old
    with WireClient(b.bootstrap) as c:
        c.create_topic(plain, 1)
        c.create_topic(own, 1, {"retention.ms": "86400000"})
        for topic in (plain, own):
            for i in range(5):
                assert (
                    c.produce(topic, 0, make_batch([b"x" * 100], timestamps=[old + i])).error_code
                    == 0
                )

    _set_default(b.bootstrap, "log.retention.ms", "600000")  # the cluster-wide default

    with WireClient(b.bootstrap) as c:
        assert wait_for(lambda: c.list_offset(plain, 0, -2).offset == 5, 20, 0.1), (
            "the broker default retention did not apply to a topic without its own"
        )
        time.sleep(0.5)  # a few more retention runs
        assert c.list_offset(own, 0, -2).offset == 0, "a topic's own retention.ms must win"

    admin = _kafka_python(b.bootstrap)
    topic_cfg = admin.describe_configs(
        [KConfigResource("TOPIC", plain, configs=["retention.ms"])],
        include_synonyms=True,
        config_filter="all",
    )["topic"][plain]["retention.ms"]
    assert topic_cfg["value"] == "600000"
    assert topic_cfg["config_source"] == "DYNAMIC_DEFAULT_BROKER_CONFIG"
    assert topic_cfg["synonyms"][0] == {
        "name": "log.retention.ms",
        "value": "600000",
        "source": "DYNAMIC_DEFAULT_BROKER_CONFIG",
    }
    admin.close()

    b.stop()
    b.start()
    admin = _kafka_python(b.bootstrap)
    after = _broker_configs(admin, "log.retention.ms")["log.retention.ms"]
    assert after["value"] == "600000"
    assert after["config_source"] == "DYNAMIC_DEFAULT_BROKER_CONFIG"
    # still applied after the restart: a new old batch on the plain topic goes too
    with WireClient(b.bootstrap) as c:
        assert c.produce(plain, 0, make_batch([b"y"], timestamps=[old])).error_code == 0
        assert wait_for(lambda: c.list_offset(plain, 0, -2).offset == 6, 20, 0.1)
    # and deleting it brings Kafka's default back
    _set_default(b.bootstrap, "log.retention.ms", None)
    assert _broker_configs(admin, "log.retention.ms")["log.retention.ms"]["value"] == "604800000"


def test_this_brokers_own_dynamic_configs_win_over_the_default_and_apply_live(broker) -> None:
    admin = _kafka_python(broker.bootstrap)
    topic = f"mm-{uuid.uuid4().hex[:6]}"
    with WireClient(broker.bootstrap) as c:
        c.create_topic(topic, 1)
        assert c.produce(topic, 0, make_batch([b"z" * 3000])).error_code == 0

    _set_default(broker.bootstrap, "message.max.bytes", "1500000")
    # kafka-python sends a broker resource to the broker it names
    res = KConfigResource("BROKER", "0", configs={"message.max.bytes": "2000"})
    assert admin.alter_configs([res], incremental=True) == {"broker": {"0": "OK"}}
    cfg = _broker_configs(admin, "message.max.bytes")["message.max.bytes"]
    assert cfg["value"] == "2000" and cfg["config_source"] == "DYNAMIC_BROKER_CONFIG"
    assert [s["source"] for s in cfg["synonyms"]] == [
        "DYNAMIC_BROKER_CONFIG",
        "DYNAMIC_DEFAULT_BROKER_CONFIG",
        "DEFAULT_CONFIG",
    ]
    with WireClient(broker.bootstrap) as c:
        assert c.produce(topic, 0, make_batch([b"z" * 3000])).error_code == 10  # too large

    # auto.create.topics.enable and num.partitions change what Metadata creates
    _set_default(broker.bootstrap, "num.partitions", "3")
    auto = f"auto-{uuid.uuid4().hex[:6]}"
    with WireClient(broker.bootstrap) as c:
        assert len(_metadata(c, auto).partitions) == 3
        _set_default(broker.bootstrap, "auto.create.topics.enable", "false")
        assert _metadata(c, f"no-{auto}").error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION


def _metadata(c: WireClient, topic: str):
    r = c.call(
        3,
        12,
        {
            "topics": [{"name": topic, "topic_id": None}],
            "allow_auto_topic_creation": True,
            "include_topic_authorized_operations": False,
        },
    )
    return r.topics[0]


def test_settings_kafka_cannot_change_live_are_refused_as_kafka_refuses_them(shared_broker) -> None:
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})

    def alter(name: str, value: str, broker: str = "0"):
        res = ConfigResource(
            ConfigResource.Type.BROKER,
            broker,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            ],
        )
        try:
            admin.incremental_alter_configs([res])[res].result(10)
        except Exception as e:
            return e.args[0]
        return None

    err = alter("listeners", "PLAINTEXT://0.0.0.0:1")
    assert err is not None and err.code() == 42  # INVALID_REQUEST, as Kafka
    assert "Cannot update these configs dynamically: Set(listeners)" in err.str()
    err = alter("num.partitions", "0")
    assert err is not None and err.code() == 40  # INVALID_CONFIG
    err = alter("no.such.setting", "1")
    assert err is not None and err.code() == 40
    # nothing was changed by the refused requests
    res = ConfigResource(ConfigResource.Type.BROKER, "0")
    configs = admin.describe_configs([res])[res].result(10)
    assert configs["num.partitions"].source == ConfigSource.DEFAULT_CONFIG.value
