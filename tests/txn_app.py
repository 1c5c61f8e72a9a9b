"""A consume-transform-produce application for the exactly-once tests, run as a process.

    python -m tests.txn_app BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID PARTITIONS EXPECTED

Reads INPUT (read_committed), writes each value + b":done" to OUTPUT in transactions
that also commit the consumed offsets (send_offsets_to_transaction), and exits 0 once
the group's committed offsets cover EXPECTED records. What an application does on
errors, as confluent-kafka documents it: abort and rewind to the committed offsets on
an abortable error, start a new producer (same transactional id) on a fatal one.
Prints "committed N" after each transaction.

send_offsets_to_transaction runs on a thread with the app's own deadline: librdkafka
(2.x, issues #5456 and #5511, open) can block in it past its timeout when the group
coordinator's broker was decommissioned by a re-bootstrap, which a single broker's
restart causes. A stuck producer is left behind and replaced, as for a fatal error.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

DEADLINE_S = 150


def _producer(bootstrap: str, txn_id: str) -> Producer:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 20000,
            "reconnect.backoff.max.ms": 500,
            **({"debug": os.environ["TXN_APP_DEBUG"]} if os.environ.get("TXN_APP_DEBUG") else {}),
        }
    )
    while True:
        try:
            p.init_transactions(20)
            return p
        except KafkaException as e:
            if not e.args[0].retriable():
                raise
            time.sleep(0.5)


def _rewind(consumer: Consumer, parts: list[TopicPartition]) -> None:
    """Back to the committed offsets (retried while the broker is away)."""
    while True:
        try:
            committed = consumer.committed(parts, timeout=10)
            break
        except KafkaException:
            time.sleep(0.5)
    consumer.assign(
        [
            TopicPartition(
                tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            )
            for tp in committed
        ]
    )


class Stuck(Exception):
    """librdkafka did not return from a call within its own timeout."""


def _send_offsets(producer: Producer, consumer: Consumer, parts: list[TopicPartition]) -> None:
    outcome: list[BaseException | None] = []
    positions, metadata = consumer.position(parts), consumer.consumer_group_metadata()

    def call() -> None:
        try:
            producer.send_offsets_to_transaction(positions, metadata, 20)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(30)
    if not outcome:
        raise Stuck("send_offsets_to_transaction did not return within 30 s")
    if outcome[0] is not None:
        raise outcome[0]


def main() -> int:
    faulthandler.register(signal.SIGUSR1)  # a stuck run's stacks, for the test's report
    bootstrap, inp, out, group, txn_id, partitions, expected = sys.argv[1:8]
    parts = [TopicPartition(inp, i) for i in range(int(partitions))]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "reconnect.backoff.max.ms": 500,
        }
    )
    producer = _producer(bootstrap, txn_id)
    _rewind(consumer, parts)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(100, 0.5) if m.error() is None]
        if not msgs:
            try:
                done = sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
            except KafkaException:
                continue
            if done >= int(expected):
                producer.flush(10)
                consumer.close()
                return 0
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(
                    out, key=m.key(), value=m.value() + b":done", partition=m.partition()
                )
            _send_offsets(producer, consumer, parts)
            producer.commit_transaction(20)
            print(f"committed {len(msgs)}", flush=True)
            time.sleep(0.05)  # an application's pace, so a kill lands mid-stream
        except Stuck as e:
            print(f"transaction failed: {e}; a new producer takes over", flush=True)
            producer = _producer(bootstrap, txn_id)
            _rewind(consumer, parts)
        except KafkaException as e:
            error = e.args[0]
            print(f"transaction failed: {error}", flush=True)
            if error.txn_requires_abort():
                try:
                    producer.abort_transaction(20)
                except KafkaException:
                    producer = _producer(bootstrap, txn_id)
            else:  # fatal, or retries exhausted: a new instance fences the old one
                producer = _producer(bootstrap, txn_id)
            _rewind(consumer, parts)
    return 1


if __name__ == "__main__":
    sys.exit(main())
