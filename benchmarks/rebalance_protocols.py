"""Rebalance time, classic protocol against KIP-848, on Strata and on Apache Kafka in one run.

A stable group of N librdkafka consumers (N = 2 and 20) on a 42-partition topic; one more
subscribes; the figure is the time from its subscribe until every member owns partitions
again, together covering the topic with none owned twice. Classic: the eager range
assignor, heartbeat.interval.ms=500 (how soon members hear of the rebalance). Consumer
(KIP-848): the broker's uniform assignor, the group heartbeat interval 500 ms on both
brokers (Kafka: group.consumer.heartbeat.interval.ms and its minimum set to 500).

    .venv/bin/python -m benchmarks.rebalance_protocols [--members 2,20] [--repeat 3]

Prints one JSON line per measurement and a table at the end. Kafka's jars come from
benchmarks/kafka_reference.py's cache (~/.cache/strata/kafka-<version>).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

PARTITIONS = 42
HEARTBEAT_MS = 500


class Member:
    """A subscribed consumer polled on its own thread; what it owns, and when it changed."""

    def __init__(self, bootstrap: str, group: str, topic: str, protocol: str) -> None:
        from confluent_kafka import Consumer

        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        if protocol == "classic":
            conf.update(
                {
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": HEARTBEAT_MS,
                    "partition.assignment.strategy": "range",
                }
            )
        self.owned: set[int] = set()
        self.changed = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = Consumer(conf)
        self.topic = topic
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _assign(self, _c, parts) -> None:
        with self.lock:
            self.owned |= {p.partition for p in parts}
            self.changed = time.monotonic()

    def _revoke(self, _c, parts) -> None:
        with self.lock:
            self.owned -= {p.partition for p in parts}
            self.changed = time.monotonic()

    def _run(self) -> None:
        self.consumer.subscribe(
            [self.topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke
        )
        while not self.stop.is_set():
            self.consumer.poll(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        with contextlib.suppress(Exception):
            self.consumer.close()


def settled(members: list[Member]) -> float | None:
    """When the members last changed, if each owns partitions and together they own the
    topic once; else None."""
    owned = []
    last = 0.0
    for m in members:
        with m.lock:
            owned.append(set(m.owned))
            last = max(last, m.changed)
    if any(not o for o in owned) or sum(map(len, owned)) != PARTITIONS:
        return None
    if set().union(*owned) != set(range(PARTITIONS)):
        return None
    return last


def wait(members: list[Member], timeout: float, calm: float = 1.0) -> float | None:
    """The settle time once it has held for `calm` seconds (no later change)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = settled(members)
        if t is not None and time.monotonic() - t >= calm:
            return t
        time.sleep(0.02)
    return None


def measure(bootstrap: str, topic: str, protocol: str, n: int) -> float:
    group = f"bench-{protocol}-{n}-{uuid.uuid4().hex[:6]}"
    members: list[Member] = []
    try:
        for _ in range(n):
            members.append(Member(bootstrap, group, topic, protocol))
            members[-1].thread.start()
        if wait(members, 90) is None:
            raise RuntimeError(f"a {protocol} group of {n} did not settle")
        joiner = Member(bootstrap, group, topic, protocol)
        t0 = time.monotonic()
        members.append(joiner)
        joiner.thread.start()
        t = wait(members, 90)
        if t is None:
            raise RuntimeError(f"the {protocol} group of {n} + 1 did not settle")
        return (t - t0) * 1000
    finally:
        for m in members:
            m.close()


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def run_system(name: str, bootstrap: str, sizes: list[int], repeat: int) -> list[dict]:
    topic = f"rebalance-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic)
    rows = []
    for protocol in ("classic", "consumer"):
        for n in sizes:
            times = [measure(bootstrap, topic, protocol, n) for _ in range(repeat)]
            row = {
                "system": name,
                "protocol": protocol,
                "members_before": n,
                "rebalance_ms_median": round(statistics.median(times), 1),
                "rebalance_ms": [round(t, 1) for t in times],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="2,20")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.members.split(",")]
    rows: list[dict] = []
    from devkit.broker import BrokerProcess

    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(
            Path(tmp) / "data",
            None,
            "--group-initial-rebalance-delay-ms",
            "0",
            "--group-consumer-heartbeat-interval-ms",
            str(HEARTBEAT_MS),
            "--log-level",
            "WARNING",
        ).start()
        try:
            rows += run_system("strata", broker.bootstrap, sizes, args.repeat)
        finally:
            broker.stop()
    if not args.no_kafka:
        from benchmarks.kafka_reference import KafkaReference

        props = {
            "group.consumer.heartbeat.interval.ms": str(HEARTBEAT_MS),
            "group.consumer.min.heartbeat.interval.ms": str(HEARTBEAT_MS),
        }
        with KafkaReference(extra_properties=props) as kafka:
            rows += run_system("kafka", kafka.bootstrap, sizes, args.repeat)
    print()
    print("| system | protocol | 1 joins a group of | rebalance ms (median) | runs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} | {r['protocol']} | {r['members_before']} | "
            f"{r['rebalance_ms_median']} | {r['rebalance_ms']} |"
        )


if __name__ == "__main__":
    main()
