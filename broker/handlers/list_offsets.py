"""ListOffsets: earliest, latest, max timestamp, and the first offset at or after a time.

Latest is the high watermark, or for read_committed (isolation level 1) the last
stable offset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from broker.handlers.auth import TOPIC, allowed
from broker.handlers.resolve import served
from broker.log.partition import Partition
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode
from protocol.record_codec import decode_records
from s3stream.store import ObjectNotFound, ObjectStoreError
from wal import TrimmedRead

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
# Kafka's tiered-storage offsets (v9 and v11): a topic without remote.storage.enable,
# as every Strata topic reports, answers them with offset -1, as Kafka does
LATEST_TIERED = -5
EARLIEST_PENDING_UPLOAD = -6


async def _lookup(
    ctx: HandlerContext, p: Partition, timestamp: int, attempt: int = 0
) -> tuple[int, int]:
    """(timestamp, offset) answering `timestamp`; (-1, -1) when no record qualifies."""
    if timestamp == LATEST:
        return -1, p.high_watermark
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return -1, p.log_start_offset
    if timestamp in (LATEST_TIERED, EARLIEST_PENDING_UPLOAD):
        return -1, -1
    idx = p.batches
    hw = p.high_watermark
    if timestamp == MAX_TIMESTAMP:
        if p.max_timestamp_offset < p.log_start_offset or p.max_timestamp_offset >= hw:
            return -1, -1
        i = idx.find(p.max_timestamp_offset)
        target = p.max_timestamp
    elif timestamp >= 0:
        i = next(
            (
                j
                for j in range(idx.find(p.log_start_offset), len(idx))
                if idx.max_timestamps[j] >= timestamp and idx.base_offsets[j] < hw
            ),
            None,
        )
        if i is None:
            return -1, -1
        target = timestamp
    else:
        raise ValueError(timestamp)
    try:
        batches = await ctx.logs.read_entry(idx.ref(i), p)
    except (TrimmedRead, ObjectNotFound):
        if attempt < 2:  # uploaded or compacted meanwhile: look again
            return await _lookup(ctx, p, timestamp, attempt + 1)
        return -1, -1  # deleted by retention meanwhile
    exact = timestamp == MAX_TIMESTAMP

    def search() -> tuple[int, int]:
        for batch in batches:
            for r in decode_records(batch):
                offset, ts = r.offset, r.timestamp
                if (ts == target if exact else ts >= target) and offset >= p.log_start_offset:
                    return ts, offset
        return -1, -1

    try:
        return await asyncio.to_thread(search)
    except Exception as e:  # records the broker never decoded: answer at batch level
        ref = idx.ref(i)
        log.warning("%s: cannot read record timestamps of batch at %d: %r", p, ref.base_offset, e)
        return ref.max_timestamp, ref.base_offset


async def _offset_at(
    ctx: HandlerContext, p: Partition, timestamp: int, committed: bool
) -> tuple[int, int, int]:
    """(error, timestamp, offset) answering one partition's query."""
    if timestamp < EARLIEST_PENDING_UPLOAD:
        return ErrorCode.invalid_request, -1, -1
    if timestamp == LATEST and committed:
        return ErrorCode.none, -1, p.last_stable_offset
    try:
        ts, offset = await _lookup(ctx, p, timestamp)
    except ObjectStoreError as e:  # the store is down: retriable
        log.warning("list offsets %s: object store: %r", p, e)
        return ErrorCode.kafka_storage_error, -1, -1
    return ErrorCode.none, ts, offset


async def handle(ctx: HandlerContext, request: Request) -> dict:
    logs = ctx.logs
    committed = getattr(request.body, "isolation_level", 0) == 1
    topics = []
    for t in request.body.topics:
        state = logs.topics.get(t.name)
        denied = not allowed(ctx, request, Operation.DESCRIBE, TOPIC, t.name)
        parts = []
        for lp in t.partitions:
            current = getattr(lp, "current_leader_epoch", -1)
            p, error = served(ctx, state, lp.partition_index, current)
            if denied:
                p, error = None, ErrorCode.topic_authorization_failed
            epoch = -1 if p is None else p.leader_epoch
            ts, offset = -1, -1
            if p is not None and error == ErrorCode.none:
                error, ts, offset = await _offset_at(ctx, p, lp.timestamp, committed)
            parts.append(
                {
                    "partition_index": lp.partition_index,
                    "error_code": error,
                    "timestamp": ts,
                    "offset": offset,
                    "leader_epoch": epoch,
                }
            )
        topics.append({"name": t.name, "partitions": parts})
    return {"throttle_time": 0, "topics": topics}
