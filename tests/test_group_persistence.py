"""Classic groups' state in `__consumer_offsets`, and offsets retention of empty groups.

- a stable classic group survives a coordinator restart: its members carry on at their
  generation with their assignments, no rebalance (librdkafka).
- the offsets of a group without members expire after offsets.retention.minutes, those of a
  group with a member do not.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition

from tests.test_consumer_protocol import Member, poll_until
from tests.test_groups import create_topic, produce

SESSION_MS = 10000


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _classic(name: str, bootstrap: str, group: str, topic: str) -> Member:
    return Member(
        name,
        bootstrap,
        group,
        [topic],
        **{
            "group.protocol": "classic",
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": "range",
        },
    )


def test_a_stable_classic_group_survives_a_coordinator_restart_without_a_rebalance(
    broker_factory, tmp_path: Path
) -> None:
    args = ("--group-initial-rebalance-delay-ms", "300")
    b = broker_factory(*args, data_dir=tmp_path / "data")
    topic, group = _name("classic-p"), _name("g-classic-p")
    create_topic(b.bootstrap, topic, 4)
    first = produce(b.bootstrap, topic, 1000, "a", partitions=4)
    members = [_classic(f"m{i}", b.bootstrap, group, topic) for i in range(2)]
    try:
        poll_until(
            members,
            lambda: (
                len([d for m in members for d in m.delivered]) >= len(first)
                and all(len(m.owned) == 2 for m in members)
            ),
            30,
            "a 2/2 split and the first records",
        )
        owned = {m.name: set(m.owned) for m in members}
        seen = {m.name: len(m.events) for m in members}
        port = int(b.bootstrap.rsplit(":", 1)[1])
        b.stop()
        b2 = broker_factory(*args, data_dir=tmp_path / "data", port=port)
        second = produce(b2.bootstrap, topic, 1000, "b", partitions=4)
        total = len(first) + len(second)
        poll_until(
            members,
            lambda: len([d for m in members for d in m.delivered]) >= total,
            40,
            "the records produced after the restart",
        )
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # long enough for a wrong rebalance to show
            for m in members:
                m.poll(0.1)
        log = b2.log()  # the same log file: what follows the restore is the restarted broker's
        restored = f"group {group}: restored at generation 1 (Stable) with 2 members"
        assert restored in log, log[-3000:]
        after = log[log.index(restored) :]
        assert f"group {group}: preparing rebalance" not in after, after[-3000:]
        consumed = [d for m in members for d in m.delivered]
        assert len(consumed) == total, "records were delivered again after the restart"
        for m in members:
            assert m.owned == owned[m.name]
            assert m.events[seen[m.name] :] == [], (m.name, m.events[seen[m.name] :])
    finally:
        for m in members:
            m.close()


def test_an_empty_groups_offsets_expire_after_the_retention(broker_factory) -> None:
    b = broker_factory(
        "--offsets-retention-minutes",
        "0.05",  # 3 s
        "--retention-check-interval-ms",
        "500",
        "--group-initial-rebalance-delay-ms",
        "300",
    )
    topic = _name("retained")
    create_topic(b.bootstrap, topic, 1)
    produce(b.bootstrap, topic, 50, "r", partitions=1)
    gone, kept = _name("g-gone"), _name("g-kept")
    leaving = _classic("leaving", b.bootstrap, gone, topic)
    staying = _classic("staying", b.bootstrap, kept, topic)
    try:
        poll_until(
            [leaving, staying],
            lambda: len(leaving.delivered) == 50 and len(staying.delivered) == 50,
            30,
            "both groups to commit everything",
        )
        leaving.close()  # its group is empty from now on
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            staying.poll(0.1)
        [got] = staying.consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert got.offset == 50, "a group with a member lost its offsets"
        from confluent_kafka import Consumer

        probe = Consumer({"bootstrap.servers": b.bootstrap, "group.id": gone})
        try:
            [left] = probe.committed([TopicPartition(topic, 0)], timeout=10)
        finally:
            probe.close()
        assert left.offset < 0, f"the empty group's offset {left.offset} did not expire"
        assert f"offsets of 1 empty groups expired: ['{gone}']" in b.log()
    finally:
        leaving.close()
        staying.close()
