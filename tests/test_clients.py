"""Acceptance: every standard client produces and consumes through Strata.

Each client produces 10,000 keyed messages with headers and explicit timestamps to a
6-partition topic in each compression codec, reads them back with assign(), and
gets every one at its acknowledged offset with key, value, headers and timestamp.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
import time
import uuid

import pytest

from tests.records_check import Rec, assert_same_records

N = 10_000
PARTITIONS = 6
CODECS = ["gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _message(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    key = f"agent-{i % 97}-{i}".encode()
    value = (f'{{"event": "tool_call", "seq": {i}, "payload": "' + "x" * (i % 300) + '"}').encode()
    return key, value, [("trace", f"t{i}".encode()), ("kind", b"tool_call")], BASE_TS + i


def _create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_kafka(shared_broker, codec: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = _topic(f"ck-{codec}")
    _create_topic(shared_broker.bootstrap, topic)
    producer = Producer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "compression.type": codec,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    produced: list[Rec] = []
    errors: list[object] = []

    def on_delivery(headers, err, msg) -> None:
        # delivery reports carry no headers: take them from what was sent
        if err is not None:
            errors.append(err)
            return
        produced.append(
            Rec(
                msg.key(),
                msg.value(),
                tuple(headers),
                msg.timestamp()[1],
                msg.partition(),
                msg.offset(),
            )
        )

    for i in range(N):
        key, value, headers, ts = _message(i)
        report = functools.partial(on_delivery, headers)
        while True:
            try:
                producer.produce(
                    topic, value, key, headers=headers, timestamp=ts, on_delivery=report
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:5]

    consumer = Consumer(
        {
            "bootstrap.servers": shared_broker.bootstrap,
            "group.id": f"g-{topic}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    consumed: list[Rec] = []
    deadline = time.monotonic() + 60
    while len(consumed) < N and time.monotonic() < deadline:
        for m in consumer.consume(1000, 1.0):
            assert m.error() is None, m.error()
            consumed.append(
                Rec(
                    m.key(),
                    m.value(),
                    tuple(m.headers() or ()),
                    m.timestamp()[1],
                    m.partition(),
                    m.offset(),
                )
            )
    consumer.close()
    assert_same_records(produced, consumed)
    assert {r.partition for r in consumed} == set(range(PARTITIONS))


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python(shared_broker, codec: str) -> None:
    """kafka-python with its defaults: idempotence on (InitProducerId + sequences)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = _topic(f"kp-{codec}")
    _create_topic(shared_broker.bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=shared_broker.bootstrap, compression_type=codec)
    assert producer.config["enable_idempotence"], "kafka-python's default should be idempotent"
    pending = []
    for i in range(N):
        key, value, headers, ts = _message(i)
        pending.append(
            (
                key,
                value,
                headers,
                ts,
                producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts),
            )
        )
    producer.flush(60)
    produced = []
    for key, value, headers, ts, fut in pending:
        md = fut.get(30)
        produced.append(Rec(key, value, tuple(headers), ts, md.partition, md.offset))
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    consumed: list[Rec] = []
    deadline = time.monotonic() + 60
    while len(consumed) < N and time.monotonic() < deadline:
        for _tp, msgs in consumer.poll(1000, max_records=5000).items():
            consumed.extend(
                Rec(m.key, m.value, tuple(m.headers), m.timestamp, m.partition, m.offset)
                for m in msgs
            )
    consumer.close()
    assert_same_records(produced, consumed)


@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka(shared_broker, codec: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = _topic(f"aio-{codec}")
    _create_topic(shared_broker.bootstrap, topic)

    async def run() -> tuple[list[Rec], list[Rec]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=shared_broker.bootstrap,
            compression_type=codec,
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        try:
            sends = []
            for i in range(N):
                key, value, headers, ts = _message(i)
                fut = await producer.send(topic, value, key=key, headers=headers, timestamp_ms=ts)
                sends.append((key, value, headers, ts, fut))
            produced = []
            for key, value, headers, ts, fut in sends:
                md = await fut
                produced.append(Rec(key, value, tuple(headers), ts, md.partition, md.offset))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=shared_broker.bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
            await consumer.seek_to_beginning()
            consumed: list[Rec] = []
            deadline = time.monotonic() + 60
            while len(consumed) < N and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for msgs in batches.values():
                    consumed.extend(
                        Rec(m.key, m.value, tuple(m.headers), m.timestamp, m.partition, m.offset)
                        for m in msgs
                    )
        finally:
            await consumer.stop()
        return produced, consumed

    produced, consumed = asyncio.run(run())
    assert_same_records(produced, consumed)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
@pytest.mark.parametrize("codec", CODECS)
def test_kcat(shared_broker, codec: str) -> None:
    """kcat (librdkafka from Debian) produces keyed messages with headers and consumes them."""
    topic = _topic(f"kcat-{codec}")
    _create_topic(shared_broker.bootstrap, topic)
    lines = "".join(f"key-{i}:value-{i}\n" for i in range(N))
    started = int(time.time() * 1000)
    subprocess.run(
        [
            "kcat",
            "-b",
            shared_broker.bootstrap,
            "-t",
            topic,
            "-P",
            "-K:",
            "-z",
            codec,
            "-H",
            "source=kcat",
            "-X",
            "acks=all",
        ],
        input=lines.encode(),
        check=True,
        timeout=120,
    )
    finished = int(time.time() * 1000)
    out = subprocess.run(
        [
            "kcat",
            "-b",
            shared_broker.bootstrap,
            "-t",
            topic,
            "-C",
            "-e",
            "-q",
            "-f",
            "%p\t%o\t%k\t%s\t%T\t%h\n",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout.decode()
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == N
    seen = set()
    last_seq: dict[int, int] = {}
    last_offset: dict[int, int] = {}
    for part, offset, key, value, ts, headers in rows:
        p, o, seq = int(part), int(offset), int(value.removeprefix("value-"))
        assert key == f"key-{seq}"
        assert headers == "source=kcat"
        assert started - 1000 <= int(ts) <= finished + 1000
        assert seq > last_seq.get(p, -1), f"partition {p} out of order"
        assert o == last_offset.get(p, -1) + 1, f"partition {p} has an offset gap at {o}"
        last_seq[p], last_offset[p] = seq, o
        seen.add(seq)
    assert seen == set(range(N))
