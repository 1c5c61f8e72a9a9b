"""Request handlers by area. Each takes the broker and a decoded request and returns
the response as a dict of fields (see protocol.codec.build), or None for no response."""

from broker.handlers import (
    admin,
    api_versions,
    configs,
    fetch,
    groups,
    list_offsets,
    metadata,
    offsets,
    produce,
    producer_id,
    topics,
)
from protocol.versions import ApiKey

HANDLERS = {
    ApiKey.API_VERSIONS: api_versions.handle,
    ApiKey.METADATA: metadata.handle,
    ApiKey.CREATE_TOPICS: topics.handle_create,
    ApiKey.DELETE_TOPICS: topics.handle_delete,
    ApiKey.PRODUCE: produce.handle,
    ApiKey.FETCH: fetch.handle,
    ApiKey.LIST_OFFSETS: list_offsets.handle,
    ApiKey.INIT_PRODUCER_ID: producer_id.handle,
    ApiKey.FIND_COORDINATOR: groups.handle_find_coordinator,
    ApiKey.JOIN_GROUP: groups.handle_join,
    ApiKey.SYNC_GROUP: groups.handle_sync,
    ApiKey.HEARTBEAT: groups.handle_heartbeat,
    ApiKey.LEAVE_GROUP: groups.handle_leave,
    ApiKey.DESCRIBE_GROUPS: groups.handle_describe,
    ApiKey.LIST_GROUPS: groups.handle_list,
    ApiKey.DELETE_GROUPS: groups.handle_delete,
    ApiKey.OFFSET_COMMIT: offsets.handle_commit,
    ApiKey.OFFSET_FETCH: offsets.handle_fetch,
    ApiKey.OFFSET_DELETE: offsets.handle_delete,
    ApiKey.OFFSET_FOR_LEADER_EPOCH: offsets.handle_leader_epoch,
    ApiKey.DESCRIBE_CONFIGS: configs.handle_describe,
    ApiKey.ALTER_CONFIGS: configs.handle_alter,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: configs.handle_incremental_alter,
    ApiKey.CREATE_PARTITIONS: admin.handle_create_partitions,
    ApiKey.DELETE_RECORDS: admin.handle_delete_records,
    ApiKey.DESCRIBE_CLUSTER: admin.handle_describe_cluster,
    ApiKey.DESCRIBE_LOG_DIRS: admin.handle_describe_log_dirs,
}
