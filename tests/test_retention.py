"""Retention by time and size, and WAL segments freed once nothing needs them.

Acceptance (operability): a config change (retention.ms lowered) takes effect on a
live topic within a minute and survives restart.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from devkit.procs import wait_for
from tests.wire import WireClient, make_batch

FAST = ("--retention-check-interval-ms", "300", "--wal-segment-bytes", "65536")


def _segments(data_dir: Path) -> int:
    return len(list((data_dir / "wal").glob("*.wal")))


def test_lowered_retention_ms_deletes_old_data_live_and_after_restart(broker_factory) -> None:
    b = broker_factory(*FAST)
    topic = f"ret-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    old = int(time.time() * 1000) - 3_600_000  # records an hour old
    with WireClient(b.bootstrap) as c:
        for i in range(40):
            batch = make_batch([b"x" * 4000], timestamps=[old + i])
            assert c.produce(topic, 0, batch).error_code == 0
        assert c.list_offset(topic, 0, -2).offset == 0
    segments_before = _segments(b.data_dir)
    assert segments_before >= 3

    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(10)
    with WireClient(b.bootstrap) as c:
        assert wait_for(lambda: c.list_offset(topic, 0, -2).offset == 40, 20, 0.1), (
            "retention did not apply"
        )
        assert c.fetch(topic, 0, 0).error_code == 1  # OFFSET_OUT_OF_RANGE: gone
        fresh = c.produce(topic, 0, make_batch([b"fresh"]))
        assert fresh.base_offset == 40
    assert wait_for(lambda: _segments(b.data_dir) < segments_before, 20, 0.1), (
        "WAL segments were not freed"
    )

    b.stop()
    b2 = broker_factory(*FAST, data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        assert c.list_offset(topic, 0, -2).offset == 40
        assert c.list_offset(topic, 0, -1).offset == 41
        assert c.produce(topic, 0, make_batch([b"after"])).base_offset == 41  # no reuse


def test_retention_bytes_keeps_the_newest(broker_factory) -> None:
    b = broker_factory(*FAST)
    with WireClient(b.bootstrap) as c:
        c.create_topic("sized", 1, {"retention.bytes": "20000"})
        for _ in range(20):
            c.produce("sized", 0, make_batch([b"y" * 4000]))
        assert wait_for(lambda: c.list_offset("sized", 0, -2).offset > 0, 20, 0.1)
        start = c.list_offset("sized", 0, -2).offset
        kept = 20 - start
        assert 1 <= kept <= 5, f"kept {kept} batches of ~4 KB under retention.bytes=20000"


def test_committed_offsets_survive_compaction_and_trim(broker_factory) -> None:
    """Many commits pile up in __consumer_offsets; housekeeping snapshots them so old
    WAL segments can go, and the latest commits survive a restart."""
    b = broker_factory(*FAST)
    with WireClient(b.bootstrap) as c:
        c.create_topic("work", 2, {"retention.ms": "60000"})
        old = int(time.time() * 1000) - 3_600_000
        for i in range(120):
            r = c.call(
                8,
                8,
                {
                    "group_id": "busy",
                    "generation_id_or_member_epoch": -1,
                    "member_id": "",
                    "group_instance_id": None,
                    "topics": [
                        {
                            "name": "work",
                            "partitions": [
                                {
                                    "partition_index": p,
                                    "committed_offset": i * 10 + p,
                                    "committed_leader_epoch": -1,
                                    "committed_metadata": f"m{i}",
                                }
                                for p in (0, 1)
                            ],
                        }
                    ],
                },
            )
            assert r.topics[0].partitions[0].error_code == 0
            # fill WAL segments meanwhile, with data retention deletes at once
            c.produce("work", 0, make_batch([b"z" * 2000], timestamps=[old]))
    # the offsets partition's early batches no longer pin the first segment
    assert wait_for(lambda: not (b.data_dir / "wal" / f"{0:020d}.wal").exists(), 20, 0.1)
    b.stop()
    b2 = broker_factory(*FAST, data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        r = c.call(
            9, 8, {"groups": [{"group_id": "busy", "topics": None}], "require_stable": False}
        )
        got = {
            (t.name, p.partition_index): (p.committed_offset, p.metadata)
            for t in r.groups[0].topics
            for p in t.partitions
        }
    assert got == {("work", 0): (1190, "m119"), ("work", 1): (1191, "m119")}
