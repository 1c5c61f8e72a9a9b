"""DescribeQuorum (`kafka-metadata-quorum describe --status`).

Strata has no KRaft quorum: cluster metadata lives in etcd (cluster mode) or in the
bucket (embedded). The answer maps that onto Kafka's shape: the leader is the
controller seat (in etcd, with its epoch: the seat key's create revision), the one
voter is that controller, and the other live brokers are observers. The high
watermark is the revision of the metadata document. Embedded, the one broker is
leader and only voter, at epoch 1.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from broker.handlers.auth import cluster_allowed
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

METADATA_TOPIC = "__cluster_metadata"
_ZERO_UUID = uuid.UUID(int=0)


def _replica(broker_id: int, offset: int, now_ms: int) -> dict:
    return {
        "replica_id": broker_id,
        "replica_directory_id": _ZERO_UUID,
        "log_end_offset": offset,
        "last_fetch_timestamp": now_ms,
        "last_caught_up_timestamp": now_ms,
    }


async def handle(ctx: HandlerContext, request: Request) -> dict:
    if not cluster_allowed(ctx, request, Operation.DESCRIBE):
        denied = ErrorCode.cluster_authorization_failed
        return {"error_code": denied, "error_message": None, "topics": [], "nodes": []}
    leader, epoch, hw = ctx.leadership.quorum()
    now_ms = int(time.time() * 1000)
    live = ctx.leadership.brokers()
    voters = [_replica(leader, hw, now_ms)] if leader >= 0 else []
    observers = [_replica(b.broker_id, hw, now_ms) for b in live if b.broker_id != leader]
    topics = []
    for t in request.body.topics:
        parts = []
        for p in t.partitions:
            if t.topic_name != METADATA_TOPIC or p.partition_index != 0:
                parts.append(
                    {
                        "partition_index": p.partition_index,
                        "error_code": ErrorCode.unknown_topic_or_partition,
                        "error_message": f"Only {METADATA_TOPIC}-0 has a quorum",
                        "leader_id": -1,
                        "leader_epoch": -1,
                        "high_watermark": -1,
                        "current_voters": [],
                        "observers": [],
                    }
                )
                continue
            parts.append(
                {
                    "partition_index": 0,
                    "error_code": ErrorCode.none
                    if leader >= 0
                    else ErrorCode.not_leader_or_follower,
                    "error_message": None,
                    "leader_id": leader,
                    "leader_epoch": epoch,
                    "high_watermark": hw,
                    "current_voters": voters,
                    "observers": observers,
                }
            )
        topics.append({"topic_name": t.topic_name, "partitions": parts})
    nodes = [
        {
            "node_id": b.broker_id,
            "listeners": [
                {"name": name, "host": host, "port": port}
                for name, host, port in b.listeners or (("PLAINTEXT", b.host, b.port),)
            ],
        }
        for b in live
        if b.broker_id == leader
    ]
    return {"error_code": ErrorCode.none, "error_message": None, "topics": topics, "nodes": nodes}
