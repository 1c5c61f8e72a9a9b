"""The official Java client's KafkaShareConsumer (KIP-932) against a Strata broker.

Acceptance: four Java share consumers in one share group on a 2-partition topic (more
consumers than partitions) all receive records, and 20,000 records are each delivered, and
acknowledged, exactly once across the group. tests/java/ShareCheck.java runs the consumers
(one thread each, implicit acknowledgement, commitSync after every poll) and does the
counting; afterwards the group's share-partitions start at the log end.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from devkit.javaclient import JAVA_DIR, ClientCheckError, _java_command, _summary
from tests.test_groups import create_topic, produce
from tests.test_share_groups import set_group_configs
from tests.wire import WireClient

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="`java` is not on PATH"),
    pytest.mark.slow,
]


def test_four_java_share_consumers_on_two_partitions_acknowledge_each_record_once(broker):
    topic, group = "java-share-queue", "java-share-workers"
    create_topic(broker.bootstrap, topic, 2)
    set_group_configs(broker.bootstrap, group, share_auto_offset_reset="earliest")
    assert len(produce(broker.bootstrap, topic, 20_000, "job", partitions=2)) == 20_000
    cmd = _java_command(JAVA_DIR / "ShareCheck.java") + [
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--consumers",
        "4",
        "--messages",
        "20000",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    try:
        r = _summary("ShareCheck", proc.returncode, proc.stdout, proc.stderr)
    except ClientCheckError as e:
        pytest.fail(f"{e}\n--- broker log ---\n{broker.log()[-6000:]}", pytrace=False)
    assert r["client_version"].startswith("4.")
    assert r["distinct"] == 20_000 and r["twice"] == 0
    assert len(r["per_consumer"]) == 4 and min(r["per_consumer"]) > 0
    with WireClient(broker.bootstrap) as w:
        d = w.call(90, 1, {"groups": [{"group_id": group, "topics": None}]})
    starts = sorted(p.start_offset for t in d.groups[0].topics for p in t.partitions)
    assert starts == [10_000, 10_000], "every record acknowledged"
