"""A compacted topic refuses records without a key, as Kafka's broker does.

Kafka keeps the latest record per key in a compacted topic, so its LogValidator
rejects a produced batch holding any keyless record: INVALID_RECORD (87) for the
partition, with a record error naming each keyless record's index in the batch, and
nothing of the batch appended. Shown with confluent-kafka and kafka-python (what each
reports to the application), a hand-built batch mixing keyed and keyless records (the
record errors on the wire), and a topic whose policy is changed live.
"""

from __future__ import annotations

import uuid

import pytest

from protocol.errors import ErrorCode
from protocol.record_codec import encode_batch, recompressed
from tests.wire import WireClient, alter_topic_configs_body

pytestmark = pytest.mark.timeout(120)

INCREMENTAL_ALTER_CONFIGS = (44, 0)


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(15)


def _produce_each(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> list:
    """One batch per record (linger 0, flush after each): each one's delivery error."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "retries": 0})
    errors = []
    for key, value in items:
        p.produce(topic, value, key, on_delivery=lambda err, _msg: errors.append(err))
        assert p.flush(15) == 0
    assert len(errors) == len(items)
    return errors


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes | None, bytes]]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "enable.partition.eof": True}
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    try:
        while True:
            m = c.poll(10)
            assert m is not None, "no end of partition within 10 s"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return got
            got.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def test_confluent_kafka_gets_invalid_record_for_a_keyless_record_on_a_compacted_topic(
    shared_broker,
) -> None:
    from confluent_kafka import KafkaError

    bootstrap = shared_broker.bootstrap
    compacted, plain = _topic("keys-compact"), _topic("keys-delete")
    _create(bootstrap, compacted, {"cleanup.policy": "compact,delete"})
    _create(bootstrap, plain, {"cleanup.policy": "delete"})
    items = [(b"k1", b"first"), (None, b"no key"), (b"k2", b"second")]
    errors = _produce_each(bootstrap, compacted, items)
    assert errors[0] is None and errors[2] is None, errors
    assert errors[1] is not None and errors[1].code() == KafkaError.INVALID_RECORD, errors[1]
    assert not errors[1].retriable()
    # nothing of the refused batch is in the log: the keyed ones sit at offsets 0 and 1
    assert _read_all(bootstrap, compacted) == [(0, b"k1", b"first"), (1, b"k2", b"second")]
    # a topic that is not compacted takes records without a key, as before
    assert _produce_each(bootstrap, plain, items) == [None, None, None]
    assert [k for _, k, _ in _read_all(bootstrap, plain)] == [b"k1", None, b"k2"]


def test_kafka_python_raises_invalid_record_error_for_a_keyless_record(shared_broker) -> None:
    from kafka import KafkaProducer
    from kafka.errors import InvalidRecordError

    bootstrap = shared_broker.bootstrap
    topic = _topic("keys-kp")
    _create(bootstrap, topic, {"cleanup.policy": "compact"})
    p = KafkaProducer(bootstrap_servers=bootstrap, retries=0, compression_type="gzip")
    try:
        assert p.send(topic, b"kept", key=b"k").get(15).offset == 0
        with pytest.raises(InvalidRecordError):
            p.send(topic, b"lost").get(15)
    finally:
        p.close(5)


@pytest.mark.parametrize("codec", [0, 4], ids=["uncompressed", "zstd"])
def test_the_record_errors_name_each_keyless_record_of_the_batch(shared_broker, codec) -> None:
    bootstrap = shared_broker.bootstrap
    topic = _topic("keys-wire")
    _create(bootstrap, topic, {"cleanup.policy": "compact"})
    keys = [b"a", None, b"b", b"c", None]
    batch = encode_batch([b"v%d" % i for i in range(len(keys))], keys=keys)
    if codec:
        batch = recompressed(batch, codec)
    with WireClient(bootstrap) as client:
        r = client.produce(topic, 0, batch)
        assert r.error_code == ErrorCode.invalid_record
        assert [e.batch_index for e in r.record_errors] == [1, 4]
        assert all(
            f"without key in topic partition {topic}-0" in e.batch_index_error_message
            for e in r.record_errors
        )
        assert "2 record errors" in r.error_message
        # the same records, all keyed, are taken
        keyed = encode_batch([b"v%d" % i for i in range(len(keys))], keys=[b"a", b"b"] * 2 + [b"c"])
        assert client.produce(topic, 0, keyed).error_code == ErrorCode.none


def test_a_topic_altered_to_compact_starts_refusing_keyless_records(shared_broker) -> None:
    from confluent_kafka import KafkaError

    bootstrap = shared_broker.bootstrap
    topic = _topic("keys-alter")
    _create(bootstrap, topic, {"cleanup.policy": "delete"})
    assert _produce_each(bootstrap, topic, [(None, b"before")]) == [None]
    with WireClient(bootstrap) as client:
        r = client.call(
            *INCREMENTAL_ALTER_CONFIGS,
            alter_topic_configs_body(topic, {"cleanup.policy": "compact"}),
        )
        assert r.responses[0].error_code == ErrorCode.none
    [err] = _produce_each(bootstrap, topic, [(None, b"after")])
    assert err is not None and err.code() == KafkaError.INVALID_RECORD
