"""Acceptance: kill -9 during sustained acks=all produce loses nothing acknowledged.

Every record whose delivery was confirmed before the kill must be read back after
restart at the offset it was confirmed at, and offsets must go on from the log end
with neither gap nor reuse.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3


def _produce_until(
    bootstrap: str, topic: str, stop: threading.Event, acked: dict, errors: list
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 4000,
            "retries": 0,
            "enable.idempotence": False,
            "reconnect.backoff.max.ms": 200,
        }
    )

    def report(err, msg) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            errors.append(err)

    i = 0
    payload = b"x" * 900
    while not stop.is_set():
        try:
            producer.produce(topic, b"%08d" % i + payload, key=b"%d" % i, on_delivery=report)
            i += 1
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    producer.flush(8)


def _read_all(
    bootstrap: str,
    topic: str,
    partitions: int = PARTITIONS,
    value: Callable[[bytes], bytes] = bytes,
    timeout: float = 60,
) -> dict[tuple[int, int], bytes]:
    """Everything from offset 0, as (partition, offset) -> value(record value); asserts
    that no offset comes twice and that each partition's offsets are exactly 0..end-1."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + timeout
    while sum(ends.values()) > len(got) and time.monotonic() < deadline:
        for m in consumer.consume(5000, 1.0):
            assert m.error() is None, m.error()
            key = (m.partition(), m.offset())
            assert key not in got, f"offset {key} served twice"
            got[key] = value(m.value())
    consumer.close()
    for p, end in ends.items():
        offsets = sorted(o for (q, o) in got if q == p)
        assert offsets == list(range(end)), f"partition {p}: offsets are not exactly 0..{end - 1}"
    return got


def _produce_then_kill(
    broker, records: int, timeout: float, also: Callable[[], object] = lambda: True
) -> tuple[dict, list]:
    """Produce to `events` from a thread until `records` are acknowledged and `also()` holds,
    then SIGKILL the broker mid-stream. Returns the acknowledged records and the producer's
    errors."""
    acked: dict[tuple[int, int], bytes] = {}
    errors: list = []
    stop = threading.Event()
    producer = threading.Thread(
        target=_produce_until, args=(broker.bootstrap, "events", stop, acked, errors)
    )
    producer.start()
    deadline = time.monotonic() + timeout
    while not (len(acked) >= records and also()) and time.monotonic() < deadline:
        time.sleep(0.05)
    broker.kill()
    killed_with = len(acked)
    time.sleep(0.5)
    stop.set()
    producer.join(30)
    assert killed_with >= records, f"only {killed_with} records acknowledged before the kill"
    return acked, errors


def test_kill_during_acks_all_produce_loses_nothing_acknowledged(broker_factory) -> None:
    broker = broker_factory()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("events", PARTITIONS, 1)])["events"].result(10)

    acked, errors = _produce_then_kill(broker, 20_000, timeout=30)
    assert errors, "the producer should have seen the broker go away"

    restarted = broker_factory(data_dir=broker.data_dir, port=broker.port)
    got = _read_all(restarted.bootstrap, "events")
    missing = [k for k in acked if k not in got]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    changed = [k for k, v in acked.items() if got[k] != v]
    assert not changed, f"acknowledged records changed at {changed[:5]}"

    # New writes continue at the recovered log end: no reuse, no gap.
    ends = {p: 1 + max((o for (q, o) in got if q == p), default=-1) for p in range(PARTITIONS)}
    producer2 = Producer({"bootstrap.servers": restarted.bootstrap, "acks": "all"})
    new_offsets: dict[int, int] = {}

    def report(err, msg) -> None:
        assert err is None, err
        new_offsets[msg.partition()] = msg.offset()

    for p in range(PARTITIONS):
        producer2.produce("events", b"after-restart", partition=p, on_delivery=report)
    assert producer2.flush(10) == 0
    assert new_offsets == ends
