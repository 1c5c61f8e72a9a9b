"""Produce and fetch rules: size limits, timestamps, offsets lookups, long polls, errors."""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from protocol.errors import ErrorCode
from tests.wire import WireClient, make_batch
from tests.wire_records import decode_values


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_list_offsets_earliest_latest_by_time_and_max(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 1)
        # three batches; timestamps deliberately not monotonic inside the second
        assert (
            c.produce(topic, 0, make_batch([b"a", b"b"], timestamps=[1000, 2000])).base_offset == 0
        )
        assert (
            c.produce(
                topic, 0, make_batch([b"c", b"d", b"e"], timestamps=[5000, 9000, 4000])
            ).base_offset
            == 2
        )
        assert c.produce(topic, 0, make_batch([b"f"], timestamps=[6000])).base_offset == 5
        assert c.list_offset(topic, 0, -2).offset == 0
        assert c.list_offset(topic, 0, -1).offset == 6
        by_max = c.list_offset(topic, 0, -3)
        assert (by_max.offset, by_max.timestamp) == (3, 9000)
        assert c.list_offset(topic, 0, 1500).offset == 1
        assert c.list_offset(topic, 0, 4500).offset == 2
        assert c.list_offset(topic, 0, 8000).offset == 3
        assert c.list_offset(topic, 0, 99999).offset == -1

    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": "lo",
            "enable.auto.commit": False,
        }
    )
    found = consumer.offsets_for_times([TopicPartition(topic, 0, 5500)], timeout=10)
    assert found[0].offset == 3
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 6)
    consumer.close()


def test_max_message_bytes_is_enforced(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 1, {"max.message.bytes": "2000"})
        assert c.produce(topic, 0, make_batch([b"x" * 500])).error_code == ErrorCode.none
        assert (
            c.produce(topic, 0, make_batch([b"x" * 5000])).error_code == ErrorCode.message_too_large
        )
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "compression.type": "none"})
    errors = []
    p.produce(topic, b"y" * 5000, on_delivery=lambda err, m: errors.append(err))
    p.flush(10)
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_log_append_time_topics_stamp_the_broker_time(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    stamps = []
    p.produce(topic, b"v", timestamp=1000, on_delivery=lambda err, m: stamps.append(m.timestamp()))
    p.flush(10)
    after = int(time.time() * 1000)
    assert stamps[0][0] == TIMESTAMP_LOG_APPEND_TIME and before <= stamps[0][1] <= after
    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": "lat",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    m = consumer.poll(10)
    assert m is not None and m.error() is None
    assert m.timestamp() == stamps[0]
    consumer.close()


def test_corrupt_crc_and_unknown_partition_are_refused(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 2)
        bad = bytearray(make_batch([b"payload"]))
        bad[-3] ^= 0x40
        assert c.produce(topic, 0, bytes(bad)).error_code == ErrorCode.corrupt_message
        assert (
            c.produce(topic, 7, make_batch([b"x"])).error_code
            == ErrorCode.unknown_topic_or_partition
        )
        assert c.produce("no-such-topic", 0, make_batch([b"x"])).error_code == (
            ErrorCode.unknown_topic_or_partition
        )
        # the connection is still good, and nothing was written
        assert c.list_offset(topic, 0, -1).offset == 0
        assert c.fetch(topic, 0, 5).error_code == ErrorCode.offset_out_of_range


def test_acks_zero_gets_no_response_but_is_written(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 1)
        from tests.wire import encode_request

        c.send_raw(
            encode_request(
                0,
                9,
                {
                    "transactional_id": None,
                    "acks": 0,
                    "timeout": 1000,
                    "topic_data": [
                        {
                            "name": topic,
                            "partition_data": [{"index": 0, "records": make_batch([b"z"])}],
                        }
                    ],
                },
                correlation_id=999,
            )
        )
        # the next response on the connection is for the next request, not the acks=0 one
        deadline = time.monotonic() + 5
        while c.list_offset(topic, 0, -1).offset != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.list_offset(topic, 0, -1).offset == 1


def test_long_poll_fetch_returns_as_soon_as_data_arrives(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 1)

    def produce_later() -> None:
        time.sleep(0.5)
        with WireClient(shared_broker.bootstrap) as p:
            p.produce(topic, 0, make_batch([b"late"]))

    t = threading.Thread(target=produce_later)
    t.start()
    with WireClient(shared_broker.bootstrap) as c:
        started = time.monotonic()
        r = c.fetch(topic, 0, 0, max_wait_ms=10_000)
        waited = time.monotonic() - started
    t.join()
    assert r.error_code == ErrorCode.none and r.high_watermark == 1 and r.records
    assert 0.3 < waited < 9, f"fetch returned after {waited:.2f}s"


def _fetch(c: WireClient, topic: str, partition_max: int, request_max: int) -> list[int]:
    """Record counts fetched from partitions 0 and 1 under the given byte limits."""
    parts = c.fetch_many(topic, {0: 0, 1: 0}, 0, partition_max, request_max)
    return [len(decode_values(p.records)) for p in parts]


def test_fetch_respects_partition_and_request_max_bytes(shared_broker) -> None:
    topic = _topic()
    with WireClient(shared_broker.bootstrap) as c:
        c.create_topic(topic, 2)
        for p in (0, 1):
            for i in range(5):
                assert (
                    c.produce(topic, p, make_batch([b"%d" % i * 1000])).error_code == ErrorCode.none
                )
        batch_size = len(make_batch([b"0" * 1000]))
        assert _fetch(c, topic, 10**6, 10**7) == [5, 5]
        # per partition: whole batches up to the limit
        assert _fetch(c, topic, 2 * batch_size, 10**7) == [2, 2]
        # a first batch larger than both limits still comes (KIP-74), and only it
        assert _fetch(c, topic, 10, 10) == [1, 0]
        # the request limit spans partitions
        assert _fetch(c, topic, 10**6, 3 * batch_size) == [3, 0]
