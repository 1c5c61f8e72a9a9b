"""Which operation on which resource each API needs: the table README.md shows
(`python -m broker.security.api_table` prints it; a test keeps README.md in step) and a
test checks that every API the broker serves is in it. The checks themselves are at the
entry of each handler (broker.handlers.auth), with Kafka's error codes."""

from __future__ import annotations

from protocol.versions import ApiKey

# api -> (what it needs, what a denial answers)
API_ACCESS: dict[int, tuple[str, str]] = {
    ApiKey.API_VERSIONS: ("nothing (also before authentication)", "-"),
    ApiKey.SASL_HANDSHAKE: ("nothing (before authentication)", "-"),
    ApiKey.SASL_AUTHENTICATE: ("nothing (before authentication)", "-"),
    ApiKey.METADATA: (
        "DESCRIBE on each topic (listings are filtered); auto-creation: CREATE on the "
        "cluster or the topic",
        "TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.PRODUCE: (
        "WRITE on the topic; transactional: WRITE on the transactional id",
        "TOPIC_ / TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    ),
    ApiKey.FETCH: ("READ on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.LIST_OFFSETS: ("DESCRIBE on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: ("DESCRIBE on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.CREATE_TOPICS: ("CREATE on the cluster or the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.DELETE_TOPICS: ("DELETE on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.CREATE_PARTITIONS: ("ALTER on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.DELETE_RECORDS: ("DELETE on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: (
        "DESCRIBE on each topic (listings are filtered)",
        "TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.DESCRIBE_CONFIGS: (
        "DESCRIBE_CONFIGS on the topic, the group or (broker configs) the cluster",
        "TOPIC_ / GROUP_ / CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.ALTER_CONFIGS: (
        "ALTER_CONFIGS on the topic, the group or (broker configs) the cluster",
        "TOPIC_ / GROUP_ / CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (
        "ALTER_CONFIGS on the topic, the group or (broker configs) the cluster",
        "TOPIC_ / GROUP_ / CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.LIST_CONFIG_RESOURCES: (
        "DESCRIBE_CONFIGS on the cluster",
        "CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.FIND_COORDINATOR: (
        "DESCRIBE on the group or the transactional id",
        "GROUP_ / TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    ),
    ApiKey.JOIN_GROUP: ("READ on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.SYNC_GROUP: ("READ on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.HEARTBEAT: ("READ on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.LEAVE_GROUP: ("READ on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.CONSUMER_GROUP_HEARTBEAT: (
        "READ on the group; assigned only topics it may DESCRIBE",
        "GROUP_AUTHORIZATION_FAILED",
    ),
    ApiKey.CONSUMER_GROUP_DESCRIBE: ("DESCRIBE on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.SHARE_GROUP_HEARTBEAT: (
        "READ on the group; assigned only topics it may DESCRIBE",
        "GROUP_AUTHORIZATION_FAILED",
    ),
    ApiKey.SHARE_GROUP_DESCRIBE: ("DESCRIBE on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.SHARE_FETCH: (
        "READ on the group and on each topic (topics it may not READ are left out)",
        "GROUP_AUTHORIZATION_FAILED",
    ),
    ApiKey.SHARE_ACKNOWLEDGE: ("READ on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.READ_SHARE_GROUP_STATE: (
        "CLUSTER_ACTION on the cluster",
        "CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.WRITE_SHARE_GROUP_STATE: (
        "CLUSTER_ACTION on the cluster",
        "CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS: ("DESCRIBE on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.ALTER_SHARE_GROUP_OFFSETS: ("READ on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.DELETE_SHARE_GROUP_OFFSETS: ("DELETE on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.OFFSET_COMMIT: (
        "READ on the group and on each topic",
        "GROUP_ / TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.OFFSET_FETCH: (
        "DESCRIBE on the group and on each topic (a fetch of all is filtered)",
        "GROUP_ / TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.OFFSET_DELETE: (
        "DELETE on the group, READ on each topic",
        "GROUP_ / TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.DESCRIBE_GROUPS: ("DESCRIBE on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.LIST_GROUPS: (
        "DESCRIBE on the cluster, else only the groups the principal may DESCRIBE",
        "(filtered)",
    ),
    ApiKey.DELETE_GROUPS: ("DELETE on the group", "GROUP_AUTHORIZATION_FAILED"),
    ApiKey.INIT_PRODUCER_ID: (
        "WRITE on the transactional id; idempotent: IDEMPOTENT_WRITE on the cluster or "
        "WRITE on some topic",
        "TRANSACTIONAL_ID_ / CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.ADD_PARTITIONS_TO_TXN: (
        "WRITE on the transactional id and on each topic",
        "TRANSACTIONAL_ID_ / TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.ADD_OFFSETS_TO_TXN: (
        "WRITE on the transactional id, READ on the group",
        "TRANSACTIONAL_ID_ / GROUP_AUTHORIZATION_FAILED",
    ),
    ApiKey.END_TXN: ("WRITE on the transactional id", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"),
    ApiKey.TXN_OFFSET_COMMIT: (
        "WRITE on the transactional id, READ on the group and each topic",
        "TRANSACTIONAL_ID_ / GROUP_ / TOPIC_AUTHORIZATION_FAILED",
    ),
    ApiKey.WRITE_TXN_MARKERS: ("CLUSTER_ACTION on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_PRODUCERS: ("READ on the topic", "TOPIC_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_TRANSACTIONS: (
        "DESCRIBE on the transactional id",
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    ),
    ApiKey.LIST_TRANSACTIONS: ("DESCRIBE on each transactional id", "(filtered)"),
    ApiKey.DESCRIBE_CLUSTER: ("nothing (authorized operations: the caller's)", "-"),
    ApiKey.DESCRIBE_LOG_DIRS: ("DESCRIBE on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.ALTER_REPLICA_LOG_DIRS: ("ALTER on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.ALTER_PARTITION_REASSIGNMENTS: ("ALTER on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.LIST_PARTITION_REASSIGNMENTS: (
        "DESCRIBE on the cluster",
        "CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.ELECT_LEADERS: ("ALTER on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_QUORUM: ("DESCRIBE on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.CREATE_ACLS: ("ALTER on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.DELETE_ACLS: ("ALTER on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_ACLS: ("DESCRIBE on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: (
        "DESCRIBE on the cluster",
        "CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: ("ALTER on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
    ApiKey.DESCRIBE_CLIENT_QUOTAS: (
        "DESCRIBE_CONFIGS on the cluster",
        "CLUSTER_AUTHORIZATION_FAILED",
    ),
    ApiKey.ALTER_CLIENT_QUOTAS: ("ALTER_CONFIGS on the cluster", "CLUSTER_AUTHORIZATION_FAILED"),
}


def markdown() -> str:
    lines = ["| API | needs | a denial answers |", "|---|---|---|"]
    for key, (needs, denial) in sorted(API_ACCESS.items(), key=lambda kv: ApiKey(kv[0]).name):
        name = "".join(w.capitalize() for w in ApiKey(key).name.split("_"))
        lines.append(f"| {name} | {needs} | {denial} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
