"""Topic-level compression.type, and cleanup.policy=compact accepted, with real clients.

As in Kafka: a topic whose `compression.type` is not `producer` stores every batch in its
codec (the broker recompresses those produced with another one, in a thread, keeping the
batch's producer id, sequence and timestamps); librdkafka's admin client creates such
topics, IncrementalAlterConfigs changes the codec of later batches, DescribeConfigs and
`kafka-topics --describe` report the setting. Checked on the bytes a Fetch returns (the
codec bits of each batch) and on what confluent-kafka, kafka-python and the Java client
consume.
"""

from __future__ import annotations

import re
import shutil
import uuid

import pytest

from protocol.record_codec import CODECS, decode_records
from protocol.records import iter_headers
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(180)

N = 2_000


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def _create(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    from confluent_kafka.admin import NewTopic

    admin = _admin(bootstrap)  # kept alive until the result is in
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(15)


def _described(bootstrap: str, topic: str) -> dict:
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = _admin(bootstrap)
    return admin.describe_configs([res])[res].result(15)


def _values(i: int) -> tuple[bytes, bytes]:
    return f"session-{i % 50}".encode(), (
        f'{{"turn": {i}, "text": "' + "ab" * (i % 200) + '"}'
    ).encode()


def _produce(bootstrap: str, topic: str, codec: str, start: int = 0, n: int = N) -> None:
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "enable.idempotence": True,
            "linger.ms": 20,
        }
    )
    errors: list = []
    for i in range(start, start + n):
        key, value = _values(i)
        p.produce(topic, value, key, on_delivery=lambda e, m: e and errors.append(e))
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors


def _fetched_batches(bootstrap: str, topic: str) -> list[tuple[int, list]]:
    """(codec bits, decoded records) of every batch a raw Fetch returns from offset 0."""
    out: list[tuple[int, list]] = []
    with WireClient(bootstrap) as c:
        offset = 0
        while True:
            p = c.fetch(topic, 0, offset)
            assert p.error_code == 0, p
            data = p.records or b""
            got = [
                (h.compression, decode_records(data[pos : pos + h.size]))
                for pos, h in iter_headers(data)
            ]
            if not got:
                return out
            out += got
            offset = got[-1][1][-1].offset + 1


def _consume_confluent(bootstrap: str, topic: str, n: int) -> list[tuple[bytes, bytes]]:
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    try:
        for _ in range(300):
            for m in c.consume(1000, 1.0):
                assert m.error() is None, m.error()
                got.append((m.key(), m.value()))
            if len(got) >= n:
                break
    finally:
        c.close()
    return got


@pytest.mark.parametrize(
    ("wanted", "sent"),
    [
        ("gzip", "none"),
        ("snappy", "lz4"),
        ("lz4", "none"),
        ("zstd", "gzip"),
        ("uncompressed", "zstd"),
    ],
)
def test_batches_are_stored_and_fetched_in_the_topic_codec(
    shared_broker, wanted: str, sent: str
) -> None:
    bootstrap = shared_broker.bootstrap
    topic = _topic(f"codec-{wanted}")
    _create(bootstrap, topic, {"compression.type": wanted})
    _produce(bootstrap, topic, sent)

    batches = _fetched_batches(bootstrap, topic)
    assert {codec for codec, _ in batches} == {CODECS[wanted]}, batches[:2]
    records = [r for _, rs in batches for r in rs]
    assert [r.offset for r in records] == list(range(N))
    assert [(r.key, r.value) for r in records] == [_values(i) for i in range(N)]

    got = _consume_confluent(bootstrap, topic, N)
    assert got == [_values(i) for i in range(N)]


def test_kafka_python_reads_what_the_broker_recompressed(shared_broker) -> None:
    from kafka import KafkaConsumer

    bootstrap = shared_broker.bootstrap
    for wanted in ("snappy", "lz4"):
        topic = _topic(f"kp-{wanted}")
        _create(bootstrap, topic, {"compression.type": wanted})
        _produce(bootstrap, topic, "none")
        c = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
            enable_auto_commit=False,
        )
        got = []
        try:
            for m in c:  # ends after 10 s without a record, or once all have come
                got.append((m.key, m.value))
                if len(got) == N:
                    break
        finally:
            c.close()
        assert got == [_values(i) for i in range(N)], wanted


@pytest.mark.slow
@pytest.mark.parametrize("wanted", ["snappy", "lz4"])
def test_the_java_client_reads_what_the_broker_recompressed(shared_broker, wanted: str) -> None:
    """snappy (xerial framing) and lz4 (independent-block frames) are where a codec's own
    framing must match what the Java client reads; it produces uncompressed batches here."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH")
    from devkit.javaclient import run_client_check

    topic = _topic(f"java-{wanted}")
    _create(shared_broker.bootstrap, topic, {"compression.type": wanted})
    result = run_client_check(shared_broker.bootstrap, topic, messages=5_000, compression="none")
    assert result["consumed"] == 5_000, result
    assert {codec for codec, _ in _fetched_batches(shared_broker.bootstrap, topic)} == {
        CODECS[wanted]
    }


def test_librdkafka_admin_creates_topics_with_every_compression_type(shared_broker) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    bootstrap = shared_broker.bootstrap
    for value in ("uncompressed", "gzip", "snappy", "lz4", "zstd", "producer"):
        topic = _topic(f"admin-{value}")
        _create(bootstrap, topic, {"compression.type": value})
        entry = _described(bootstrap, topic)["compression.type"]
        assert entry.value == value
        assert entry.source == 1  # DYNAMIC_TOPIC_CONFIG: the topic's own setting
    bad = _topic("admin-bad")
    admin = _admin(bootstrap)
    fut = admin.create_topics([NewTopic(bad, 1, 1, config={"compression.type": "brotli"})])[bad]
    with pytest.raises(KafkaException, match="compression.type"):
        fut.result(15)


def test_incremental_alter_configs_changes_the_codec_of_later_batches(shared_broker) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    bootstrap = shared_broker.bootstrap
    topic = _topic("alter")
    _create(bootstrap, topic, {})
    _produce(bootstrap, topic, "none", 0, 100)

    def alter(op, value: str | None) -> None:
        res = ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[ConfigEntry("compression.type", value, incremental_operation=op)],
        )
        admin = _admin(bootstrap)
        admin.incremental_alter_configs([res])[res].result(15)

    alter(AlterConfigOpType.SET, "zstd")
    assert _described(bootstrap, topic)["compression.type"].value == "zstd"
    _produce(bootstrap, topic, "none", 100, 100)
    alter(AlterConfigOpType.DELETE, None)  # back to Kafka's default, producer
    assert _described(bootstrap, topic)["compression.type"].value == "producer"
    _produce(bootstrap, topic, "none", 200, 100)

    by_offset = {r.offset: codec for codec, rs in _fetched_batches(bootstrap, topic) for r in rs}
    assert sorted(by_offset) == list(range(300))
    assert {by_offset[o] for o in range(100)} == {0}
    assert {by_offset[o] for o in range(100, 200)} == {CODECS["zstd"]}
    assert {by_offset[o] for o in range(200, 300)} == {0}


def test_compacted_topics_are_created_and_described_with_their_policy(shared_broker) -> None:
    """What Kafka Connect and schema registries check before they use their topics."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    bootstrap = shared_broker.bootstrap
    compact, both = _topic("compact"), _topic("compact-delete")
    _create(bootstrap, compact, {"cleanup.policy": "compact"})
    _create(bootstrap, both, {"cleanup.policy": "compact,delete"})
    assert _described(bootstrap, compact)["cleanup.policy"].value == "compact"
    assert _described(bootstrap, both)["cleanup.policy"].value == "compact,delete"
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        compact,
        incremental_configs=[
            ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND)
        ],
    )
    admin = _admin(bootstrap)
    admin.incremental_alter_configs([res])[res].result(15)
    assert _described(bootstrap, compact)["cleanup.policy"].value == "compact,delete"


@pytest.mark.slow
def test_kafka_topics_describe_shows_the_codec_and_the_policy(shared_broker) -> None:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH")
    from devkit.kafka_cli import TOPIC_COMMAND, KafkaCli

    tools = KafkaCli()
    topic = _topic("cli")
    boot = ("--bootstrap-server", shared_broker.bootstrap)
    r = tools.run(
        TOPIC_COMMAND,
        *boot,
        "--create",
        "--topic",
        topic,
        "--config",
        "compression.type=lz4",
        "--config",
        "cleanup.policy=compact",
    )
    assert r.returncode == 0, r.describe()
    r = tools.run(TOPIC_COMMAND, *boot, "--describe", "--topic", topic)
    assert r.returncode == 0, r.describe()
    configs = re.search(r"Configs: (\S*)", r.stdout)
    assert configs, r.stdout
    assert {"compression.type=lz4", "cleanup.policy=compact"} <= set(configs[1].split(",")), (
        r.stdout
    )


def test_the_broker_default_codec_applies_to_topics_that_set_none(broker) -> None:
    """kafka-configs --entity-type brokers --entity-name 0 --add-config compression.type=..."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    bootstrap = broker.bootstrap
    own, plain = _topic("own"), _topic("plain")
    _create(bootstrap, own, {"compression.type": "gzip"})
    _create(bootstrap, plain, {})
    res = ConfigResource(
        ConfigResource.Type.BROKER,
        "0",
        incremental_configs=[
            ConfigEntry("compression.type", "zstd", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin = _admin(bootstrap)
    admin.incremental_alter_configs([res])[res].result(15)
    entry = _described(bootstrap, plain)["compression.type"]
    assert (entry.value, entry.source) == ("zstd", 2)  # DYNAMIC_BROKER_CONFIG
    for topic in (own, plain):
        _produce(bootstrap, topic, "none", 0, 200)
    assert {c for c, _ in _fetched_batches(bootstrap, own)} == {CODECS["gzip"]}
    assert {c for c, _ in _fetched_batches(bootstrap, plain)} == {CODECS["zstd"]}


def test_transactional_batches_keep_their_transaction_when_recompressed(shared_broker) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    bootstrap = shared_broker.bootstrap
    topic = _topic("txn")
    _create(bootstrap, topic, {"compression.type": "zstd"})
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"tx-{topic}",
            "compression.type": "none",
            "linger.ms": 5,
        }
    )
    p.init_transactions(30)
    for commit, start in ((True, 0), (False, 100), (True, 200)):
        p.begin_transaction()
        for i in range(start, start + 100):
            key, value = _values(i)
            p.produce(topic, value, key)
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    try:
        while True:
            m = c.poll(10)
            assert m is not None, "no end of partition within 10 s"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                break
            got.append((m.key(), m.value()))
    finally:
        c.close()
    assert got == [_values(i) for i in (*range(100), *range(200, 300))]
    data = {c for c, _ in _fetched_batches(bootstrap, topic) if c}  # markers are uncompressed
    assert data == {CODECS["zstd"]}
