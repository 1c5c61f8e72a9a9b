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

from broker.cluster.assignment import NONE
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.app import Broker
    from broker.log.topics import TopicState

log = logging.getLogger(__name__)

_MAX_WAIT_S = 30.0


def _partition(broker: Broker, topic: str, index: int) -> tuple[TopicState | None, str | None]:
    state = broker.logs.topics.get(topic)
    if state is None or not 0 <= index < len(state.partitions):
        return None, f"{topic}-{index} does not exist"
    return state, None


async def _reassign(broker: Broker, state: TopicState, index: int, replicas) -> tuple:
    """(error, message) of one partition's reassignment (replicas None: cancel)."""
    if replicas is not None and len(replicas) != 1:
        return (
            ErrorCode.invalid_replication_factor,
            "The bucket is each partition's only replica: a reassignment names one broker, "
            "the partition's next leader",
        )
    target = None if replicas is None else replicas[0]
    if broker.cluster is None:
        if target is None:
            return ErrorCode.no_reassignment_in_progress, "No reassignment is in progress"
        if target != broker.config.broker_id:
            return (
                ErrorCode.invalid_replica_assignment,
                f"Strata runs embedded here: broker {broker.config.broker_id} is the only "
                f"broker, there is no broker {target} to move {state.name}-{index} to",
            )
        return ErrorCode.none, None
    from broker.cluster.reassignment import MoveRefused, move

    p = state.partitions[index]
    try:
        moved = await move(broker.cluster, (p.topic_id, index), target)
    except MoveRefused as e:
        return ErrorCode.invalid_replica_assignment, str(e)
    if target is None and not moved:
        return ErrorCode.no_reassignment_in_progress, "No reassignment is in progress"
    if moved:
        log.info(
            "%s-%d: %s", state.name, index, "move called off" if target is None else f"to {target}"
        )
    return ErrorCode.none, None


async def handle_alter_reassignments(broker: Broker, request: Request) -> dict:
    responses = []
    for t in request.body.topics:
        parts = []
        for rp in t.partitions:
            state, missing = _partition(broker, t.name, rp.partition_index)
            if state is None:
                error, message = ErrorCode.unknown_topic_or_partition, missing
            else:
                error, message = await _reassign(broker, state, rp.partition_index, rp.replicas)
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


async def handle_list_reassignments(broker: Broker, request: Request) -> dict:
    """Moves in flight: replicas [target, leader], adding the target, removing the leader."""
    moving = {}
    if broker.cluster is not None:
        from broker.cluster.reassignment import ongoing

        moving = ongoing(broker.cluster)
    wanted = None
    if request.body.topics is not None:
        wanted = {t.name: set(t.partition_indexes) for t in request.body.topics}
    topics = []
    for name, state in broker.logs.topics.items():
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


async def _start_election(broker: Broker, state: TopicState, index: int) -> tuple:
    """(error, message, broker to wait for or None) of one partition's election."""
    if broker.cluster is None:
        return ErrorCode.election_not_needed, None, None
    from broker.cluster.reassignment import MoveRefused, move, preferred_leader

    node = broker.cluster
    p = state.partitions[index]
    k = (p.topic_id, index)
    live = sorted(node.live())
    a = node.assignments.get(k)
    if not live or a is None:
        return ErrorCode.eligible_leaders_not_available, "No live broker can lead it yet", None
    want = preferred_leader(live, index)
    if a.leader == want and a.target == NONE:
        return ErrorCode.election_not_needed, None, None
    try:
        await move(node, k, want)
    except MoveRefused as e:
        return ErrorCode.preferred_leader_not_available, str(e), None
    return ErrorCode.none, None, want


async def handle_elect_leaders(broker: Broker, request: Request) -> dict:
    """Every move starts first, then the answer waits for the hand-offs (bounded)."""
    b = request.body
    timeout = min(_MAX_WAIT_S, max(1.0, b.timeout.total_seconds())) if b.timeout else _MAX_WAIT_S
    if b.topic_partitions is None:
        wanted = [(n, list(range(len(s.partitions)))) for n, s in broker.logs.topics.items()]
    else:
        wanted = [(t.topic, list(t.partitions)) for t in b.topic_partitions]
    results = []
    waits = []
    for topic, indexes in wanted:
        parts = []
        for i in indexes:
            state, missing = _partition(broker, topic, i)
            if state is None:
                error, message, want = ErrorCode.unknown_topic_or_partition, missing, None
            else:
                error, message, want = await _start_election(broker, state, i)
            entry = {"partition_id": i, "error_code": error, "error_message": message}
            if want is not None and state is not None:
                waits.append((entry, state, i, want))
            parts.append(entry)
        results.append({"topic": topic, "partition_result": parts})
    if waits:
        from broker.cluster.reassignment import led_by

        assert broker.cluster is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # one bound for all: the moves run together
        for entry, state, i, want in waits:
            k = (state.partitions[i].topic_id, i)
            if await led_by(broker.cluster, k, want, max(0.0, deadline - loop.time())):
                log.info("%s-%d: preferred leader %d elected", state.name, i, want)
            else:
                entry["error_code"] = ErrorCode.request_timed_out
                entry["error_message"] = f"Broker {want} did not take it over in time"
    return {"throttle_time": 0, "error_code": ErrorCode.none, "replica_election_results": results}
