"""The rest of Kafka's admin surface, with shared-storage meaning (issue 26, section 5),
and the API versions clients infer a Kafka release from (section 4).

Through kafka-python's KafkaAdminClient and Kafka 4.x's own CLI tools (devkit/kafka_cli.py)
against an embedded broker; the cluster-mode moves are in test_admin_apis_cluster.py.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    ElectionNotNeededError,
    InvalidReplicationAssignmentError,
    InvalidReplicationFactorError,
    LogDirNotFoundError,
    NoError,
    NoReassignmentInProgressError,
)
from kafka.protocol.admin import ElectionType
from kafka.structs import OffsetAndMetadata, TopicPartitionReplica

from devkit.kafka_cli import TOPIC_COMMAND, KafkaCli
from tests.wire import WireClient

README = Path(__file__).resolve().parent.parent / "README.md"
LEADER_ELECTION = "org.apache.kafka.tools.LeaderElectionCommand"
METADATA_QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand"


@pytest.fixture(scope="module")
def admin(shared_broker):
    a = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10000)
    yield a
    a.close()


def _topic(admin: KafkaAdminClient, partitions: int) -> str:
    name = f"api-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, partitions, 1)])
    return name


def test_kafka_python_infers_the_newest_kafka_release_and_readme_states_it(shared_broker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap)
    try:
        inferred = admin.get_broker_version_data(0).broker_version
        consumer.topics()  # connected: the version is inferred from ApiVersions
        assert consumer.config["api_version"] == inferred
    finally:
        consumer.close()
        admin.close()
    # the newest release kafka-python knows (4.3: DescribeLogDirs v5, ListOffsets v11)
    assert inferred == (4, 3)
    text = README.read_text()
    section = text[text.index("## API versions") :]
    assert f"Kafka {'.'.join(map(str, inferred))}" in section.split("\n## ")[0]


def test_describe_topic_partitions_pages_through_every_partition_with_its_cursor(admin) -> None:
    a, b = _topic(admin, 3), _topic(admin, 2)
    wanted = sorted([a, b])
    seen, cursor, pages = [], None, 0
    while True:
        r = admin.describe_topic_partitions(wanted, response_partition_limit=2, cursor=cursor)
        pages += 1
        for t in r["topics"]:
            assert t["error_code"] == 0
            seen += [(t["name"], p["partition_index"], p["leader_id"]) for p in t["partitions"]]
        cursor = r["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    expect = [(n, i) for n in wanted for i in range({a: 3, b: 2}[n])]
    assert [(n, i) for n, i, _ in seen] == expect
    assert {leader for _, _, leader in seen} == {0}
    missing = admin.describe_topic_partitions(["no-such-topic"])["topics"][0]
    assert missing["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION


def test_embedded_reassignment_to_the_one_broker_is_done_and_to_another_is_refused(admin) -> None:
    topic = _topic(admin, 1)
    tp = TopicPartition(topic, 0)
    assert admin.alter_partition_reassignments({tp: [0]}) == {tp: None}
    assert admin.alter_partition_reassignments({tp: [1]}) == {tp: InvalidReplicationAssignmentError}
    assert admin.alter_partition_reassignments({tp: [0, 1]}) == {tp: InvalidReplicationFactorError}
    assert admin.alter_partition_reassignments({tp: None}) == {tp: NoReassignmentInProgressError}
    assert admin.list_partition_reassignments() == {}
    # preferred (and unclean) election: the one broker leads everything already
    for kind in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        r = admin.elect_leaders(kind, {topic: [0]}, raise_errors=False)
        codes = [p.error_code for t in r.replica_election_results for p in t.partition_result]
        assert codes == [ElectionNotNeededError.errno]


def test_log_dirs_are_the_one_wal_directory(admin, shared_broker) -> None:
    topic = _topic(admin, 1)
    dirs = admin.describe_log_dirs()[0]["log_dirs"]
    assert len(dirs) == 1
    wal = dirs[0]["log_dir"]
    assert Path(wal) == (shared_broker.data_dir / "wal").resolve()
    assert topic in {t["name"] for t in dirs[0]["topics"]}
    replica = TopicPartitionReplica(topic, 0, 0)
    assert admin.alter_replica_log_dirs({replica: wal}) == {replica: NoError}
    assert admin.alter_replica_log_dirs({replica: "/elsewhere"}) == {replica: LogDirNotFoundError}


def test_describe_quorum_and_list_config_resources_on_the_embedded_broker(
    admin, shared_broker
) -> None:
    quorum = admin.describe_metadata_quorum()
    part = quorum["topics"][0]["partitions"][0]
    assert quorum["topics"][0]["topic_name"] == "__cluster_metadata"
    assert part["leader_id"] == 0
    assert [v["replica_id"] for v in part["current_voters"]] == [0]
    assert part["observers"] == []

    topic = _topic(admin, 1)
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
    consumer.close()
    listed = admin.list_config_resources()
    assert topic in listed["topic"] and listed["broker"] == ["0"]
    assert group in listed["group"]
    assert admin.list_config_resources(["BROKER"]) == {"broker": ["0"]}
    with WireClient(shared_broker.bootstrap) as c:  # v0 lists client-metrics resources only
        v0 = c.call(74, 0, {})
        assert v0.error_code == 0 and v0.config_resources == ()


@pytest.mark.timeout(300)
def test_kafka_cli_tools_describe_broker_configs_topics_elections_and_the_quorum(
    broker_factory,
) -> None:
    """Few JVM runs, several checks each: kafka-configs (broker describe, entity-default
    alter, groups listing through ListConfigResources), kafka-topics --describe (through
    DescribeTopicPartitions), kafka-leader-election and kafka-metadata-quorum."""
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: the Kafka CLI tools need a JVM")
    tools = KafkaCli()
    b = broker_factory()

    def run(main: str, *args: str) -> str:
        r = tools.run(main, "--bootstrap-server", b.bootstrap, *args, timeout=90)
        assert r.returncode == 0, r.describe() + "\n" + b.log()[-3000:]
        return r.stdout

    topic = f"cli-{uuid.uuid4().hex[:6]}"
    run(TOPIC_COMMAND, "--create", "--topic", topic, "--partitions", "2")
    described = run(TOPIC_COMMAND, "--describe", "--topic", topic)
    assert f"Topic: {topic}\tTopicId:" in described and "PartitionCount: 2" in described
    for i in range(2):
        # "Elr:" is printed only from DescribeTopicPartitions (KIP-966) answers
        assert re.search(rf"Partition: {i}\tLeader: 0\tReplicas: 0\tIsr: 0\tElr: ", described)

    configs = run(
        tools.config_command,
        "--describe",
        "--all",
        "--entity-type",
        "brokers",
        "--entity-name",
        "0",
    )
    assert f"advertised.listeners=PLAINTEXT://{b.bootstrap} " in configs
    assert "log.retention.ms=604800000 " in configs and "auto.create.topics.enable=true " in configs
    assert "advertised.listener=" not in configs

    altered = run(
        tools.config_command,
        "--alter",
        "--entity-type",
        "brokers",
        "--entity-default",
        "--add-config",
        "log.retention.ms=3600000,message.max.bytes=2000000",
    )
    assert "Completed updating default config for brokers in the cluster" in altered
    default = run(
        tools.config_command, "--describe", "--entity-type", "brokers", "--entity-default"
    )
    assert "log.retention.ms=3600000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG" in (
        default
    )
    assert "message.max.bytes=2000000 " in default

    group = f"cli-g-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
    consumer.close()
    # 4.3.1 has no `kafka-configs --list`; describing a type without a name lists its
    # resources through ListConfigResources
    groups = run(tools.config_command, "--describe", "--entity-type", "groups")
    assert f"Dynamic configs for group {group} are:" in groups

    election = run(LEADER_ELECTION, "--election-type", "preferred", "--all-topic-partitions")
    assert "Valid replica already elected for partitions" in election
    assert f"{topic}-0" in election and f"{topic}-1" in election

    quorum = run(METADATA_QUORUM, "describe", "--status")
    assert re.search(r"LeaderId:\s+0\n", quorum)
    assert re.search(r'CurrentVoters:\s+\[\{"id": 0', quorum)
    assert re.search(r"CurrentObservers:\s+\[\]", quorum)
