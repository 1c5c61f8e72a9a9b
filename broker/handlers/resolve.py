"""Which partition a request names, and whether this broker may answer for it now.

One place for the checks every partition-level request makes in the same order as
Kafka: the topic and partition exist, this broker leads the partition, and the
client's leader epoch (KIP-320) is neither newer than ours (UNKNOWN_LEADER_EPOCH: we
have not caught up) nor older (FENCED_LEADER_EPOCH: the client has stale metadata).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.groups.committed import OFFSETS_TOPIC
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext
    from broker.leadership import BrokerAddress, Leadership
    from broker.log.partition import Partition
    from broker.log.topics import TopicState


def partition(state: TopicState | None, index: int) -> Partition | None:
    """Partition `index` of a topic; None when the topic or the partition does not exist."""
    if state is None or not 0 <= index < len(state.partitions):
        return None
    return state.partitions[index]


def leader_error(leadership: Leadership, p: Partition, current_epoch: int = -1) -> ErrorCode:
    """NONE when this broker serves `p` at the client's leader epoch (-1: any)."""
    if not leadership.serves(p):
        return ErrorCode.not_leader_or_follower
    if current_epoch > p.leader_epoch:
        return ErrorCode.unknown_leader_epoch
    if 0 <= current_epoch < p.leader_epoch:
        return ErrorCode.fenced_leader_epoch
    return ErrorCode.none


def served(
    ctx: HandlerContext, state: TopicState | None, index: int, current_epoch: int = -1
) -> tuple[Partition | None, ErrorCode]:
    """(the partition or None, the error to answer with or NONE)."""
    p = partition(state, index)
    if p is None:
        return None, ErrorCode.unknown_topic_or_partition
    return p, leader_error(ctx.leadership, p, current_epoch)


def _offsets_partition(ctx: HandlerContext, group_id: str) -> Partition | None:
    """The `__consumer_offsets` partition holding a group's offsets."""
    return partition(ctx.logs.topics.get(OFFSETS_TOPIC), ctx.offsets.partition_for(group_id))


def coordinates(ctx: HandlerContext, group_id: str) -> bool:
    """Whether this broker coordinates the group: it leads the group's offsets partition."""
    p = _offsets_partition(ctx, group_id)
    return p is not None and ctx.leadership.serves(p)


def coordinator_of(ctx: HandlerContext, group_id: str) -> BrokerAddress | None:
    """The broker coordinating a group; None while its offsets partition has no live
    leader."""
    return leader_address(ctx, _offsets_partition(ctx, group_id))


def txn_coordinator_of(ctx: HandlerContext, transactional_id: str) -> BrokerAddress | None:
    """The broker coordinating a transactional id: the leader of its state partition."""
    return leader_address(ctx, ctx.transactions.state_partition(transactional_id))


def leader_address(ctx: HandlerContext, p: Partition | None) -> BrokerAddress | None:
    if p is None:
        return None
    leader, _ = ctx.leadership.leader_of(p)
    return next((b for b in ctx.leadership.brokers() if b.broker_id == leader), None)
