"""DescribeShareGroupOffsets, AlterShareGroupOffsets and DeleteShareGroupOffsets (KIP-932,
what `kafka-share-groups.sh` and the AdminClient use): the share-partitions' start offsets
(broker.groups.share_state), changed only while the group has no members."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from broker.handlers.auth import GROUP, allowed
from broker.handlers.resolve import coordinates
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext


def _group_error(ctx: HandlerContext, request: Request, group_id: str, op: Operation):
    if not allowed(ctx, request, op, GROUP, group_id):
        return ErrorCode.group_authorization_failed
    if not coordinates(ctx, group_id):
        return ErrorCode.not_coordinator
    if ctx.groups.group(group_id) is not None or ctx.groups.consumer.is_consumer_group(group_id):
        return ErrorCode.group_id_not_found
    return None


def _describe_group(ctx: HandlerContext, request: Request, g) -> dict:
    error = _group_error(ctx, request, g.group_id, Operation.DESCRIBE)
    if error is not None:
        return {"group_id": g.group_id, "topics": [], "error_code": error, "error_message": None}
    starts = ctx.shares.of_group(g.group_id)
    by_id = ctx.logs.topics_by_id
    if g.topics is None:  # all the group's share-partitions
        wanted: dict[str, list[int]] = {}
        for tid, p in sorted(starts):
            state = by_id.get(tid)
            if state is not None:
                wanted.setdefault(state.name, []).append(p)
    else:
        wanted = {t.topic_name: list(t.partitions) for t in g.topics}
    topics = []
    for name, parts in wanted.items():
        state = ctx.logs.topics.get(name)
        out = []
        for index in parts:
            start = starts.get((state.record.uuid.bytes, index)) if state is not None else None
            lag = -1
            if start is not None and 0 <= index < len(state.partitions):
                lag = max(state.partitions[index].high_watermark - start, 0)
            out.append(
                {
                    "partition_index": index,
                    "start_offset": -1 if start is None else start,
                    "leader_epoch": -1,
                    "lag": lag,
                    "error_code": ErrorCode.none
                    if state is not None
                    else ErrorCode.unknown_topic_or_partition,
                    "error_message": None,
                }
            )
        topics.append(
            {
                "topic_name": name,
                "topic_id": state.record.uuid if state is not None else uuid.UUID(int=0),
                "partitions": out,
            }
        )
    return {"group_id": g.group_id, "topics": topics, "error_code": ErrorCode.none}


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    return {
        "throttle_time": 0,
        "groups": [_describe_group(ctx, request, g) for g in request.body.groups],
    }


def _not_empty(ctx: HandlerContext, group_id: str) -> bool:
    g = ctx.groups.share.group(group_id)
    return g is not None and bool(g.members)


async def handle_alter(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    error = _group_error(ctx, request, b.group_id, Operation.READ)
    if error is None and _not_empty(ctx, b.group_id):
        error = ErrorCode.non_empty_group
    if error is not None:
        return {"throttle_time": 0, "error_code": error, "error_message": None, "responses": []}
    starts: dict[tuple[uuid.UUID, int], int] = {}
    responses = []
    for t in b.topics:
        state = ctx.logs.topics.get(t.topic_name)
        parts = []
        for p in t.partitions:
            code = ErrorCode.none
            if state is None or not 0 <= p.partition_index < len(state.partitions):
                code = ErrorCode.unknown_topic_or_partition
            else:
                part = state.partitions[p.partition_index]
                # -1: the log end, -2: the log start; else kept within the log
                start = p.start_offset
                if start == -1:
                    start = part.high_watermark
                elif start == -2 or start < part.log_start_offset:
                    start = part.log_start_offset
                start = min(start, part.high_watermark)
                starts[(state.record.uuid, p.partition_index)] = start
            parts.append({"partition_index": p.partition_index, "error_code": code})
        responses.append(
            {
                "topic_name": t.topic_name,
                "topic_id": state.record.uuid if state is not None else uuid.UUID(int=0),
                "partitions": parts,
            }
        )
    if starts:
        if ctx.groups.share.group(b.group_id) is None:  # the group exists from now on
            await ctx.groups.share.set_configs(b.group_id, {})
        await ctx.shares.reset(b.group_id, starts)
    return {"throttle_time": 0, "error_code": ErrorCode.none, "responses": responses}


async def handle_delete(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    error = _group_error(ctx, request, b.group_id, Operation.DELETE)
    if error is None and _not_empty(ctx, b.group_id):
        error = ErrorCode.non_empty_group
    if error is not None:
        return {"throttle_time": 0, "error_code": error, "error_message": None, "responses": []}
    starts = ctx.shares.of_group(b.group_id)
    responses = []
    for t in b.topics:
        state = ctx.logs.topics.get(t.topic_name)
        code = ErrorCode.none
        if state is None:
            code = ErrorCode.unknown_topic_or_partition
        else:
            tid = state.record.uuid
            keys = [(tid, p) for t_, p in starts if t_ == tid.bytes]
            await ctx.shares.delete(b.group_id, keys)
        responses.append(
            {
                "topic_name": t.topic_name,
                "topic_id": state.record.uuid if state is not None else uuid.UUID(int=0),
                "error_code": code,
            }
        )
    return {"throttle_time": 0, "error_code": ErrorCode.none, "responses": responses}
