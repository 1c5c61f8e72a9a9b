"""Share groups (KIP-932) on Strata and on Apache Kafka in one run.

1. Consume throughput: a 2-partition topic holding --records records (100 bytes each); 8
   confluent-kafka ShareConsumers (one thread each, implicit acknowledgement) in one share
   group; the figure is records/s from their subscribe until every record was delivered.
2. Redelivery after a crash: the share group's record lock duration is --lock-ms on both
   brokers; a consumer takes records and is SIGKILLed; the figure is the time from the kill
   until another member of the group holds every one of them (bounded by the lock duration).
   One partition here, so both members are assigned it from the start.

    .venv/bin/python -m benchmarks.share_groups [--records 100000] [--lock-ms 5000] [--no-kafka]

Prints one JSON line per system and a table at the end. Kafka's jars come from
benchmarks/kafka_reference.py's cache (~/.cache/strata/kafka-<version>).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

CONSUMERS = 8
PARTITIONS = 2

_KILLED = """
import os, signal, sys
from confluent_kafka import ShareConsumer
c = ShareConsumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                   "share.acknowledgement.mode": "explicit"})
c.subscribe([sys.argv[3]])
while True:
    msgs = [m for m in c.poll(1.0) if m.error() is None]
    if msgs:
        print(" ".join(f"{m.partition()}:{m.offset()}" for m in msgs), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _setup(
    bootstrap: str, topic: str, group: str, records: int, lock_ms: int | None, partitions: int
) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    entries = [
        ConfigEntry(
            "share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET
        )
    ]
    if lock_ms is not None:
        entries.append(
            ConfigEntry(
                "share.record.lock.duration.ms",
                str(lock_ms),
                incremental_operation=AlterConfigOpType.SET,
            )
        )
    r = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin.incremental_alter_configs([r])[r].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    value = b"x" * 100
    for i in range(records):
        while True:
            try:
                p.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


def throughput(bootstrap: str, records: int) -> dict:
    from confluent_kafka import ShareConsumer

    topic, group = f"share-tput-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    _setup(bootstrap, topic, group, records, None, PARTITIONS)
    seen: set[tuple[int, int]] = set()
    per = [0] * CONSUMERS
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.monotonic() + 300

    def run(i: int) -> None:
        c = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group})
        c.subscribe([topic])
        try:
            while not done.is_set() and time.monotonic() < deadline:
                got = [(m.partition(), m.offset()) for m in c.poll(0.2) if m.error() is None]
                with lock:
                    seen.update(got)
                    per[i] += len(got)
                    if len(seen) >= records:
                        done.set()
            c.commit_sync()
        finally:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONSUMERS)]
    for t in threads:
        t.start()
    done.wait(300)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join(60)
    return {
        "records": records,
        "delivered": len(seen),
        "deliveries": sum(per),
        "seconds": round(elapsed, 2),
        "records_per_s": round(len(seen) / elapsed),
        "per_consumer": per,
    }


def redelivery(bootstrap: str, lock_ms: int) -> dict:
    from confluent_kafka import ShareConsumer

    topic, group = f"share-kill-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    # one partition: both members are assigned it, so only the lock stands between the
    # killed member's records and the survivor (not the killed member's session timeout)
    _setup(bootstrap, topic, group, 200, lock_ms, 1)
    out = subprocess.run(
        [sys.executable, "-c", _KILLED, bootstrap, group, topic],
        capture_output=True,
        text=True,
        timeout=120,
    )
    killed_at = time.monotonic()
    held = {tuple(map(int, x.split(":"))) for x in out.stdout.split()}
    c = ShareConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "share.acknowledgement.mode": "explicit",
        }
    )
    c.subscribe([topic])
    got: set[tuple[int, int]] = set()
    try:
        while held and not held <= got and time.monotonic() - killed_at < 120:
            for m in c.poll(0.1):
                if m.error() is None:
                    got.add((m.partition(), m.offset()))
                    c.acknowledge(m)
            c.commit_async()
    finally:
        c.close()
    return {
        "held_by_killed": len(held),
        "redelivered": len(held & got),
        "lock_ms": lock_ms,
        "redelivery_ms": round((time.monotonic() - killed_at) * 1000),
    }


def run_system(name: str, bootstrap: str, records: int, lock_ms: int) -> dict:
    row = {"system": name, **throughput(bootstrap, records), **redelivery(bootstrap, lock_ms)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--lock-ms", type=int, default=5000)
    parser.add_argument("--no-kafka", action="store_true")
    args = parser.parse_args()
    rows = []
    from devkit.broker import BrokerProcess

    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data", None, "--log-level", "WARNING").start()
        try:
            rows.append(run_system("strata", broker.bootstrap, args.records, args.lock_ms))
        finally:
            broker.stop()
    if not args.no_kafka:
        from benchmarks.kafka_reference import KafkaReference

        props = {"group.share.min.record.lock.duration.ms": "1000"}
        with KafkaReference(extra_properties=props) as kafka:
            rows.append(run_system("kafka", kafka.bootstrap, args.records, args.lock_ms))
    print()
    print("| system | records/s, 8 share consumers, 2 partitions | lock ms | redelivery ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} | {r['records_per_s']} ({r['delivered']}/{r['records']} in "
            f"{r['seconds']} s) | {r['lock_ms']} | {r['redelivery_ms']} "
            f"({r['redelivered']}/{r['held_by_killed']}) |"
        )


if __name__ == "__main__":
    main()
