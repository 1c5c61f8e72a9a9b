"""Cluster mode's operator moves through Kafka's tools: kafka-reassign-partitions moves a
partition's leadership to the broker it names (the controller's hand-off), and
kafka-leader-election moves it back to its preferred leader; kafka-metadata-quorum
shows the controller seat from etcd. Real etcd, moto's S3 and two broker processes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka.admin import KafkaAdminClient

from devkit.etcd import EtcdServer, etcd_binary
from devkit.kafka_cli import KafkaCli
from tests.cluster import Cluster, wait_for
from tests.test_cluster import _create

pytestmark = [
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
    pytest.mark.skipif(shutil.which("java") is None, reason="the Kafka CLI tools need a JVM"),
    pytest.mark.slow,
    pytest.mark.timeout(400),
]

REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
LEADER_ELECTION = "org.apache.kafka.tools.LeaderElectionCommand"
METADATA_QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand"


@pytest.fixture
def cluster(s3_bucket, tmp_path: Path):
    moto, bucket = s3_bucket
    etcd = EtcdServer().start()
    c = Cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/c", "--s3-endpoint", moto.endpoint],
        "--lease-ttl-ms",
        "3000",
        "--upload-interval-ms",
        "1000",
    )
    yield c
    c.stop_all()
    etcd.close()


def _end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_reassign_partitions_moves_leadership_and_preferred_election_moves_it_back(
    cluster, tmp_path: Path
) -> None:
    cluster.start(0)
    cluster.start(1)
    assert wait_for(lambda: cluster.live_brokers() == {0, 1})
    topic = "moved"
    _create(cluster, topic, 1)  # one partition: the controller's balancing leaves it be
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(10):
        p.produce(topic, b"v%d" % i, partition=0)
    assert p.flush(30) == 0

    tools = KafkaCli()

    def run(main: str, *args: str) -> str:
        r = tools.run(main, "--bootstrap-server", cluster.bootstrap, *args, timeout=90)
        logs = "\n".join(b.log()[-2000:] for b in cluster.brokers.values())
        assert r.returncode == 0, r.describe() + "\n" + logs
        return r.stdout

    # to broker 1 (already there: a no-op that --verify also reports complete)
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": [1]}]}
        )
    )
    out = run(REASSIGN, "--reassignment-json-file", str(plan), "--execute")
    assert "Successfully started partition reassignment" in out
    assert wait_for(lambda: cluster.leaders(topic) == {0: 1}), cluster.leaders(topic)
    out = run(REASSIGN, "--reassignment-json-file", str(plan), "--verify")
    assert f"Reassignment of partition {topic}-0 is completed" in out
    assert _end_offset(cluster.bootstrap, topic) == 10  # the log moved with the leadership

    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000)
    assert admin.list_partition_reassignments() == {}

    # the preferred leader of partition 0 is broker 0: the election moves it back there
    out = run(LEADER_ELECTION, "--election-type", "preferred", "--topic", topic, "--partition", "0")
    assert f"Successfully completed leader election (PREFERRED) for partitions {topic}-0" in out
    assert cluster.leaders(topic) == {0: 0}
    assert _end_offset(cluster.bootstrap, topic) == 10
    out = run(LEADER_ELECTION, "--election-type", "preferred", "--topic", topic, "--partition", "0")
    assert f"Valid replica already elected for partitions {topic}-0" in out

    # the controller seat from etcd: one voter (the controller), the other broker observes
    quorum = admin.describe_metadata_quorum()["topics"][0]["partitions"][0]
    leader = quorum["leader_id"]
    assert leader in (0, 1) and quorum["leader_epoch"] > 0
    assert [v["replica_id"] for v in quorum["current_voters"]] == [leader]
    assert [o["replica_id"] for o in quorum["observers"]] == [1 - leader]
    status = run(METADATA_QUORUM, "describe", "--status")
    assert re.search(rf"LeaderId:\s+{leader}\n", status)
    assert re.search(rf'CurrentObservers:\s+\[\{{"id": {1 - leader}', status)
    admin.close()
