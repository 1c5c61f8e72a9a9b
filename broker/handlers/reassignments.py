"""AlterPartitionReassignments, ListPartitionReassignments and ElectLeaders.

A partition has one replica, its leader: the bucket holds the data. So a reassignment
names one broker, and means "this broker leads it next" (cluster mode: the
controller's hand-off, see broker.cluster.reassignment); the embedded broker is the
only broker, so a reassignment to it is already done and one to any other is refused.
Elections never need to pick among replicas: preferred (and unclean, alike) election
moves a partition back to its preferred leader in cluster mode, and is never needed
on the embedded broker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from broker.handlers.auth import cluster_allowed
from broker.handlers.resolve import partition
from broker.leadership import MoveRefused
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext
    from broker.log.topics import TopicState

log = logging.getLogger(__name__)

_MAX_WAIT_S = 30.0


def _partition(ctx: HandlerContext, topic: str, index: int) -> tuple[TopicState | None, str | None]:
    state = ctx.logs.topics.get(topic)
    if partition(state, index) is None:
        return None, f"{topic}-{index} does not exist"
    return state, None


async def _reassign(ctx: HandlerContext, state: TopicState, index: int, replicas) -> tuple:
    """(error, message) of one partition's reassignment (replicas None: cancel)."""
    if replicas is not None and len(replicas) != 1:
        return (
            ErrorCode.invalid_replication_factor,
            "The bucket is each partition's only replica: a reassignment names one broker, "
            "the partition's next leader",
        )
    target = None if replicas is None else replicas[0]
    try:
        moved = await ctx.leadership.move(state.partitions[index], target)
    except MoveRefused as e:
        return ErrorCode.invalid_replica_assignment, str(e)
    if target is None and not moved:
        return ErrorCode.no_reassignment_in_progress, "No reassignment is in progress"
    if moved:
        log.info(
            "%s-%d: %s", state.name, index, "move called off" if target is None else f"to {target}"
        )
    return ErrorCode.none, None


async def handle_alter_reassignments(ctx: HandlerContext, request: Request) -> dict:
    if not cluster_allowed(ctx, request, Operation.ALTER):
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.cluster_authorization_failed,
            "error_message": None,
            "responses": [],
        }
    responses = []
    for t in request.body.topics:
        parts = []
        for rp in t.partitions:
            state, missing = _partition(ctx, t.name, rp.partition_index)
            if state is None:
                error, message = ErrorCode.unknown_topic_or_partition, missing
            else:
                error, message = await _reassign(ctx, state, rp.partition_index, rp.replicas)
            parts.append(
                {
                    "partition_index": rp.partition_index,
                    "error_code": error,
                    "error_message": message,
                }
            )
        responses.append({"name": t.name, "partitions": parts})
    return {
        "throttle_time": 0,
        "allow_replication_factor_change": getattr(
            request.body, "allow_replication_factor_change", True
        ),
        "error_code": ErrorCode.none,
        "error_message": None,
        "responses": responses,
    }


async def handle_list_reassignments(ctx: HandlerContext, request: Request) -> dict:
    """Moves in flight: replicas [target, leader], adding the target, removing the leader."""
    if not cluster_allowed(ctx, request, Operation.DESCRIBE):
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.cluster_authorization_failed,
            "error_message": None,
            "topics": [],
        }
    moving = ctx.leadership.moves()
    wanted = None
    if request.body.topics is not None:
        wanted = {t.name: set(t.partition_indexes) for t in request.body.topics}
    topics = []
    for name, state in ctx.logs.topics.items():
        if wanted is not None and name not in wanted:
            continue
        parts = []
        for p in state.partitions:
            a = moving.get((p.topic_id, p.index))
            if a is None or (wanted is not None and p.index not in wanted[name]):
                continue
            parts.append(
                {
                    "partition_index": p.index,
                    "replicas": (a.target, a.leader),
                    "adding_replicas": (a.target,),
                    "removing_replicas": (a.leader,),
                }
            )
        if parts:
            topics.append({"name": name, "partitions": parts})
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "topics": topics,
    }


async def handle_elect_leaders(ctx: HandlerContext, request: Request) -> dict:
    """Every move starts first, then the answer waits for the hand-offs (bounded)."""
    b = request.body
    if not cluster_allowed(ctx, request, Operation.ALTER):
        denied = ErrorCode.cluster_authorization_failed
        return {"throttle_time": 0, "error_code": denied, "replica_election_results": []}
    timeout = min(_MAX_WAIT_S, max(1.0, b.timeout.total_seconds())) if b.timeout else _MAX_WAIT_S
    if b.topic_partitions is None:
        wanted = [(n, list(range(len(s.partitions)))) for n, s in ctx.logs.topics.items()]
    else:
        wanted = [(t.topic, list(t.partitions)) for t in b.topic_partitions]
    results = []
    waits = []
    for topic, indexes in wanted:
        parts = []
        for i in indexes:
            state, missing = _partition(ctx, topic, i)
            if state is None:
                error, message, want = ErrorCode.unknown_topic_or_partition, missing, None
            else:
                error, message, want = await ctx.leadership.elect_preferred(state.partitions[i])
            entry = {"partition_id": i, "error_code": error, "error_message": message}
            if want is not None and state is not None:
                waits.append((entry, state, i, want))
            parts.append(entry)
        results.append({"topic": topic, "partition_result": parts})
    if waits:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # one bound for all: the moves run together
        for entry, state, i, want in waits:
            left = max(0.0, deadline - loop.time())
            if await ctx.leadership.led_by(state.partitions[i], want, left):
                log.info("%s-%d: preferred leader %d elected", state.name, i, want)
            else:
                entry["error_code"] = ErrorCode.request_timed_out
                entry["error_message"] = f"Broker {want} did not take it over in time"
    return {"throttle_time": 0, "error_code": ErrorCode.none, "replica_election_results": results}
