"""ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848): thin shells over
broker.groups.consumer_coordinator."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from broker.groups.consumer_group import HeartbeatRequest, Topics, error_response
from broker.handlers.auth import GROUP, TOPIC, allowed
from broker.handlers.resolve import coordinates
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext


def _topics(ctx: HandlerContext, request: Request) -> Topics:
    """The topics a member may be assigned: those its principal may describe."""
    return {
        name: (t.record.uuid, len(t.partitions))
        for name, t in ctx.logs.topics.items()
        if not t.record.internal
        and allowed(ctx, request, Operation.DESCRIBE, TOPIC, name, audit=False)
    }


def _owned(parts) -> dict[uuid.UUID, frozenset[int]] | None:
    if parts is None:
        return None
    return {p.topic_id: frozenset(p.partitions) for p in parts if p.topic_id is not None}


async def handle_heartbeat(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not allowed(ctx, request, Operation.READ, GROUP, b.group_id):
        return {
            "throttle_time": 0,
            **error_response(ErrorCode.group_authorization_failed, "", b.member_id),
        }
    if not coordinates(ctx, b.group_id):
        return {
            "throttle_time": 0,
            **error_response(ErrorCode.not_coordinator, "not the coordinator", b.member_id),
        }
    if ctx.groups.share.group(b.group_id) is not None:
        return {
            "throttle_time": 0,
            **error_response(
                ErrorCode.group_id_not_found,
                f"Group {b.group_id} is a share group.",
                b.member_id,
            ),
        }
    if not ctx.groups.yield_to_consumer_protocol(b.group_id):
        return {
            "throttle_time": 0,
            **error_response(
                ErrorCode.group_id_not_found,
                f"Group {b.group_id} is a classic group with members.",
                b.member_id,
            ),
        }
    rebalance = b.rebalance_timeout.total_seconds() * 1000
    req = HeartbeatRequest(
        group_id=b.group_id,
        member_id=b.member_id,
        member_epoch=b.member_epoch,
        instance_id=b.instance_id,
        rack_id=b.rack_id,
        rebalance_timeout_ms=int(rebalance),
        subscribed_topic_names=b.subscribed_topic_names,
        subscribed_topic_regex=getattr(b, "subscribed_topic_regex", None),
        server_assignor=b.server_assignor,
        owned=_owned(b.topic_partitions),
        client_id=request.header.client_id or "",
        client_host="/" + (request.peer.rsplit(":", 1)[0] if request.peer else ""),
    )
    answer = await ctx.groups.consumer.heartbeat(req, _topics(ctx, request))
    return {"throttle_time": 0, **answer}


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    names = {t.record.uuid: name for name, t in ctx.logs.topics.items()}
    out = []
    for group_id in request.body.group_ids:
        if not allowed(ctx, request, Operation.DESCRIBE, GROUP, group_id):
            entry = ctx.groups.consumer.describe("", names)
            entry.update(group_id=group_id, error_code=ErrorCode.group_authorization_failed)
        elif not coordinates(ctx, group_id):
            entry = ctx.groups.consumer.describe("", names)
            entry.update(
                group_id=group_id,
                error_code=ErrorCode.not_coordinator,
                error_message="not the coordinator",
            )
        else:
            entry = ctx.groups.consumer.describe(group_id, names)
            if entry["error_code"] == ErrorCode.group_id_not_found and ctx.groups.group(group_id):
                entry["error_message"] = f"Group {group_id} is not a consumer group."
        out.append({**entry, "authorized_operations": -2147483648})
    return {"throttle_time": 0, "groups": out}
