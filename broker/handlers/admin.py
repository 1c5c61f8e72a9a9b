"""CreatePartitions, DeleteRecords, DescribeCluster, DescribeLogDirs and AlterReplicaLogDirs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from broker.handlers.auth import TOPIC, allowed, cluster_allowed, listener_of, operations
from broker.handlers.resolve import leader_error, partition
from broker.security.acl import CLUSTER_NAME, Operation, ResourceType
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext
    from broker.log.topics import TopicState

log = logging.getLogger(__name__)

_NO_AUTH_OPS = -2147483648


async def handle_create_partitions(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    results = []
    for t in b.topics:
        error, message = ErrorCode.none, None
        state = ctx.logs.topics.get(t.name)
        if not allowed(ctx, request, Operation.ALTER, TOPIC, t.name):
            error, message = ErrorCode.topic_authorization_failed, "Authorization failed."
        elif state is None:
            error, message = ErrorCode.unknown_topic_or_partition, f"Topic {t.name} does not exist"
        elif state.record.internal:
            error, message = ErrorCode.invalid_request, f"{t.name} is internal"
        elif t.count <= len(state.partitions):
            error = ErrorCode.invalid_partitions
            message = f"Topic already has {len(state.partitions)} partitions; asked for {t.count}"
        elif t.assignments is not None and len(t.assignments) != t.count - len(state.partitions):
            error, message = (
                ErrorCode.invalid_replica_assignment,
                "One assignment per new partition",
            )
        elif not b.validate_only:
            await ctx.logs.add_partitions(state, t.count)
        results.append({"name": t.name, "error_code": error, "error_message": message})
    return {"throttle_time": 0, "results": results}


async def _delete_records(
    ctx: HandlerContext, state: TopicState | None, index: int, offset: int
) -> tuple[ErrorCode, int]:
    """(error, low watermark) of one partition's DeleteRecords (offset -1: the high
    watermark)."""
    p = partition(state, index)
    if state is None or p is None:
        return ErrorCode.unknown_topic_or_partition, -1
    if state.record.internal:  # it would drop committed offsets
        return ErrorCode.invalid_topic_exception, -1
    target = p.high_watermark if offset == -1 else offset
    error = leader_error(ctx.leadership, p)
    if error == ErrorCode.none and not 0 <= target <= p.high_watermark:
        error = ErrorCode.offset_out_of_range
    if error == ErrorCode.none:
        await ctx.logs.delete_records(state, p, target)
    return error, p.log_start_offset


async def handle_delete_records(ctx: HandlerContext, request: Request) -> dict:
    topics = []
    for t in request.body.topics:
        state = ctx.logs.topics.get(t.name)
        denied = not allowed(ctx, request, Operation.DELETE, TOPIC, t.name)
        parts = []
        for rp in t.partitions:
            if denied:
                error, low = ErrorCode.topic_authorization_failed, -1
            else:
                error, low = await _delete_records(ctx, state, rp.partition_index, rp.offset)
            parts.append(
                {"partition_index": rp.partition_index, "low_watermark": low, "error_code": error}
            )
        topics.append({"name": t.name, "partitions": parts})
    return {"throttle_time": 0, "topics": topics}


async def handle_describe_cluster(ctx: HandlerContext, request: Request) -> dict:
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "endpoint_type": 1,
        "cluster_id": ctx.logs.meta.cluster_id,
        "controller_id": ctx.leadership.controller_id(),
        "brokers": [
            {
                "broker_id": b.broker_id,
                "host": b.reachable(listener_of(request))[0],
                "port": b.reachable(listener_of(request))[1],
                "rack": b.rack,
                "is_fenced": False,
            }
            for b in ctx.leadership.brokers()
        ],
        "cluster_authorized_operations": (
            operations(ctx, request, ResourceType.CLUSTER, CLUSTER_NAME)
            if request.body.include_cluster_authorized_operations
            else _NO_AUTH_OPS
        ),
    }


async def handle_describe_log_dirs(ctx: HandlerContext, request: Request) -> dict:
    """One log directory: the WAL. Partition sizes are the bytes of their batches the WAL
    holds (deleted records included until the WAL is trimmed); no object store yet."""
    logs = ctx.logs
    if not cluster_allowed(ctx, request, Operation.DESCRIBE):
        denied = ErrorCode.cluster_authorization_failed
        return {"throttle_time": 0, "error_code": denied, "results": []}
    wanted = None
    if request.body.topics is not None:
        wanted = {t.topic: set(t.partitions) for t in request.body.topics}
    topics = []
    for name, state in logs.topics.items():
        if wanted is not None and name not in wanted:
            continue
        parts = [
            {
                "partition_index": p.index,
                "partition_size": p.size_bytes,
                "offset_lag": 0,
                "is_future_key": False,
            }
            for p in state.partitions
            if wanted is None or p.index in wanted[name]
        ]
        topics.append({"name": name, "partitions": parts})
    usage = shutil.disk_usage(logs.wal.directory)
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "results": [
            {
                "error_code": ErrorCode.none,
                "log_dir": str(logs.wal.directory.resolve()),
                "topics": topics,
                "total_bytes": usage.total,
                "usable_bytes": usage.free,
                "is_cordoned": False,
            }
        ],
    }


async def handle_alter_replica_log_dirs(ctx: HandlerContext, request: Request) -> dict:
    """The WAL is the one log directory: a partition "moved" to it is already there; any
    other directory gets Kafka's LOG_DIR_NOT_FOUND."""
    ours = ctx.logs.wal.directory.resolve()
    may_alter = cluster_allowed(ctx, request, Operation.ALTER)
    results: dict[str, list[dict]] = {}
    for d in request.body.dirs:
        here = Path(d.path).resolve() == ours
        for t in d.topics:
            state = ctx.logs.topics.get(t.name)
            for i in t.partitions:
                if not may_alter:
                    error = ErrorCode.cluster_authorization_failed
                elif not here:
                    error = ErrorCode.log_dir_not_found
                elif partition(state, i) is None:
                    error = ErrorCode.unknown_topic_or_partition
                else:
                    error = ErrorCode.none
                results.setdefault(t.name, []).append({"partition_index": i, "error_code": error})
        if not here:
            log.info("AlterReplicaLogDirs to %s refused: the one log directory is %s", d.path, ours)
    return {
        "throttle_time": 0,
        "results": [{"topic_name": n, "partitions": parts} for n, parts in results.items()],
    }
