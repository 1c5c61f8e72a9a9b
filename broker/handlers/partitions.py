"""DescribeTopicPartitions (KIP-966): Metadata's topic and partition view, paged.

Kafka 4.x's `kafka-topics --describe` asks for it first. Topics come in name order;
at most `response_partition_limit` partitions per answer, and `next_cursor` names the
partition the next request starts at. A partition's one replica is its leader (the
bucket holds the data), so eligible leader replicas (ELR) are always empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.handlers.auth import TOPIC, allowed
from broker.handlers.metadata import topic_entry
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

_NO_AUTH_OPS = -2147483648
_DEFAULT_LIMIT = 2000


async def handle(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    logs = ctx.logs
    names = sorted({t.name for t in b.topics} if b.topics else logs.topics)
    limit = b.response_partition_limit if b.response_partition_limit > 0 else _DEFAULT_LIMIT
    cursor = b.cursor
    if cursor is not None:
        names = [n for n in names if n >= cursor.topic_name]
    topics: list[dict] = []
    next_cursor = None
    listing = not b.topics
    for name in names:
        state = logs.topics.get(name)
        if not allowed(ctx, request, Operation.DESCRIBE, TOPIC, name, audit=not listing):
            if listing:
                continue  # a listing shows only what the principal may describe
            topics.append(
                {
                    "error_code": ErrorCode.topic_authorization_failed,
                    "name": name,
                    "topic_id": None,
                    "partitions": [],
                    "topic_authorized_operations": _NO_AUTH_OPS,
                }
            )
            continue
        if state is None:
            topics.append(
                {
                    "error_code": ErrorCode.unknown_topic_or_partition,
                    "name": name,
                    "topic_id": None,
                    "partitions": [],
                    "topic_authorized_operations": _NO_AUTH_OPS,
                }
            )
            continue
        start = cursor.partition_index if cursor is not None and name == cursor.topic_name else 0
        if limit <= 0:
            next_cursor = {"topic_name": name, "partition_index": start}
            break
        entry = topic_entry(ctx, state)
        parts = entry["partitions"][start : start + limit]
        for p in parts:
            p["eligible_leader_replicas"] = ()
            p["last_known_elr"] = ()
        limit -= len(parts)
        topics.append({**entry, "partitions": parts})
        if start + len(parts) < len(state.partitions):
            next_cursor = {"topic_name": name, "partition_index": start + len(parts)}
            break
    return {"throttle_time": 0, "topics": topics, "next_cursor": next_cursor}
