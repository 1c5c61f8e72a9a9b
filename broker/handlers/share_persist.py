"""WriteShareGroupState and ReadShareGroupState (KIP-932's share coordinator APIs), served
by the group's coordinator to the partition leaders that keep share-partition state
there (broker.groups.share_persister explains the design). Inter-broker: CLUSTER_ACTION."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker.groups.share_persister import StateFenced, from_wire
from broker.handlers.auth import cluster_allowed
from broker.handlers.resolve import coordinates
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)


def _all(body, code: ErrorCode) -> dict:
    return {
        "results": [
            {
                "topic_id": t.topic_id,
                "partitions": [
                    {"partition": p.partition, "error_code": code, "error_message": code.name}
                    for p in t.partitions
                ],
            }
            for t in body.topics
        ]
    }


async def handle_write(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not cluster_allowed(ctx, request, Operation.CLUSTER_ACTION):
        return _all(b, ErrorCode.cluster_authorization_failed)
    if not coordinates(ctx, b.group_id):
        return _all(b, ErrorCode.not_coordinator)
    records = {
        (t.topic_id.bytes, p.partition): from_wire(p) for t in b.topics for p in t.partitions
    }
    code = ErrorCode.none
    try:
        await ctx.shares.persister.write_local(b.group_id, records)
    except StateFenced:
        code = ErrorCode.fenced_leader_epoch
    except Exception as e:
        log.warning("share group %s: state not written: %r", b.group_id, e)
        code = ErrorCode.coordinator_not_available
    return _all(b, code)


async def handle_read(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not cluster_allowed(ctx, request, Operation.CLUSTER_ACTION):
        code = ErrorCode.cluster_authorization_failed
    elif not coordinates(ctx, b.group_id):
        code = ErrorCode.not_coordinator
    else:
        code = ErrorCode.none
    table = ctx.offsets.share_states.get(b.group_id, {})
    results = []
    for t in b.topics:
        parts = []
        for p in t.partitions:
            state = table.get((t.topic_id.bytes, p.partition)) if code == ErrorCode.none else None
            parts.append(
                {
                    "partition": p.partition,
                    "error_code": code,
                    "error_message": None if code == ErrorCode.none else code.name,
                    "state_epoch": state.get("epoch", 0) if state else 0,
                    "start_offset": state["start"] if state else -1,
                    "state_batches": [
                        {
                            "first_offset": a,
                            "last_offset": z,
                            "delivery_state": s,
                            "delivery_count": c,
                        }
                        for a, z, s, c in (state["runs"] if state else [])
                    ],
                }
            )
        results.append({"topic_id": t.topic_id, "partitions": parts})
    return {"results": results}
