"""CreatePartitions, DeleteRecords, DescribeCluster, DescribeLogDirs and AlterReplicaLogDirs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.app import Broker

log = logging.getLogger(__name__)

_NO_AUTH_OPS = -2147483648


async def handle_create_partitions(broker: Broker, request: Request) -> dict:
    b = request.body
    results = []
    for t in b.topics:
        error, message = ErrorCode.none, None
        state = broker.logs.topics.get(t.name)
        if state is None:
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
            await broker.logs.add_partitions(state, t.count)
        results.append({"name": t.name, "error_code": error, "error_message": message})
    return {"throttle_time": 0, "results": results}


async def handle_delete_records(broker: Broker, request: Request) -> dict:
    topics = []
    for t in request.body.topics:
        state = broker.logs.topics.get(t.name)
        parts = []
        for rp in t.partitions:
            error, low = ErrorCode.none, -1
            if state is None or not 0 <= rp.partition_index < len(state.partitions):
                error = ErrorCode.unknown_topic_or_partition
            elif state.record.internal:  # it would drop committed offsets
                error = ErrorCode.invalid_topic_exception
            else:
                p = state.partitions[rp.partition_index]
                target = p.high_watermark if rp.offset == -1 else rp.offset
                if not broker.serves(p):
                    error = ErrorCode.not_leader_or_follower
                elif target < 0 or target > p.high_watermark:
                    error = ErrorCode.offset_out_of_range
                else:
                    await broker.logs.delete_records(state, p, target)
                low = p.log_start_offset
            parts.append(
                {"partition_index": rp.partition_index, "low_watermark": low, "error_code": error}
            )
        topics.append({"name": t.name, "partitions": parts})
    return {"throttle_time": 0, "topics": topics}


async def handle_describe_cluster(broker: Broker, request: Request) -> dict:
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "endpoint_type": 1,
        "cluster_id": broker.logs.meta.cluster_id,
        "controller_id": broker.controller_id,
        "brokers": [
            {"broker_id": b, "host": host, "port": port, "rack": rack, "is_fenced": False}
            for b, host, port, rack in broker.brokers()
        ],
        "cluster_authorized_operations": _NO_AUTH_OPS,
    }


async def handle_describe_log_dirs(broker: Broker, request: Request) -> dict:
    """One log directory: the WAL. Partition sizes are the bytes of their batches the WAL
    holds (deleted records included until the WAL is trimmed); no object store yet."""
    logs = broker.logs
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


async def handle_alter_replica_log_dirs(broker: Broker, request: Request) -> dict:
    """The WAL is the one log directory: a partition "moved" to it is already there; any
    other directory gets Kafka's LOG_DIR_NOT_FOUND."""
    ours = broker.logs.wal.directory.resolve()
    results: dict[str, list[dict]] = {}
    for d in request.body.dirs:
        here = Path(d.path).resolve() == ours
        for t in d.topics:
            state = broker.logs.topics.get(t.name)
            for i in t.partitions:
                if not here:
                    error = ErrorCode.log_dir_not_found
                elif state is None or not 0 <= i < len(state.partitions):
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
