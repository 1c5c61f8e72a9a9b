"""A share group's membership (KIP-932) and its heartbeat. Pure, and built on the KIP-848
group (broker.groups.consumer_group): the same members, group epoch, subscriptions and
session expiry; what differs is the assignment. A share group's partitions are shared,
so there is nothing to revoke: a member takes its new target assignment at its next
heartbeat, at the group's assignment epoch.
"""

from __future__ import annotations

import logging
import uuid

from broker.groups.assignors import Assignment
from broker.groups.consumer_group import (
    LEAVE_EPOCH,
    ConsumerGroup,
    ConsumerMember,
    ConsumerSettings,
    HeartbeatError,
    HeartbeatRequest,
    Topics,
    error_response,
    subscribed_topics,
    update_member,
)
from broker.groups.reconcile import MemberState, Reconciled
from protocol.errors import ErrorCode

log = logging.getLogger(__name__)

ShareGroup = ConsumerGroup  # the same record of members and epochs

__all__ = ["ShareGroup", "share_assign", "share_heartbeat", "error_response"]


def share_assign(
    members: dict[str, frozenset[uuid.UUID]], sizes: dict[uuid.UUID, int]
) -> dict[str, Assignment]:
    """Kafka's SimpleAssignor in spirit: per topic, its partitions spread over the members
    subscribing to it; with more members than partitions, each member gets one partition
    and partitions are shared (every member has work)."""
    out: dict[str, dict[uuid.UUID, set[int]]] = {m: {} for m in members}
    for tid, n in sorted(sizes.items()):
        subs = sorted(m for m, ts in members.items() if tid in ts)
        if not subs or n <= 0:
            continue
        if len(subs) >= n:
            for i, m in enumerate(subs):
                out[m].setdefault(tid, set()).add(i % n)
        else:
            for p in range(n):
                out[subs[p % len(subs)]].setdefault(tid, set()).add(p)
    return {m: {t: frozenset(ps) for t, ps in a.items()} for m, a in out.items()}


def _member_topics(m: ConsumerMember, subscribed: dict[str, tuple[uuid.UUID, int]]):
    return frozenset(tid for name, (tid, _) in subscribed.items() if name in m.topic_names)


def _validate(req: HeartbeatRequest) -> None:
    if not req.group_id:
        raise HeartbeatError(ErrorCode.invalid_request, "GroupId can't be empty.")
    if req.member_epoch == 0:
        if not req.subscribed_topic_names:
            raise HeartbeatError(
                ErrorCode.invalid_request, "SubscribedTopicNames must be set in first request."
            )
    elif req.member_epoch > 0 or req.member_epoch == LEAVE_EPOCH:
        if not req.member_id:
            raise HeartbeatError(ErrorCode.invalid_request, "MemberId can't be empty.")
    else:
        raise HeartbeatError(ErrorCode.invalid_request, f"bad MemberEpoch {req.member_epoch}")


def share_heartbeat(
    group: ShareGroup,
    req: HeartbeatRequest,
    topics: Topics,
    now: float,
    settings: ConsumerSettings,
    new_member_id: str,
) -> dict:
    """Apply one ShareGroupHeartbeat; its response body (less throttle time). Raises
    HeartbeatError for a refused one (the group is left as it was)."""
    _validate(req)
    if req.member_epoch == LEAVE_EPOCH:
        if group.remove(req.member_id, "left the share group") is None:
            raise HeartbeatError(ErrorCode.unknown_member_id, f"member {req.member_id} is unknown")
        answer = error_response(ErrorCode.none, "", req.member_id, LEAVE_EPOCH)
        return {**answer, "error_message": None}
    bump = False
    member_id = req.member_id or new_member_id
    member = group.members.get(member_id)
    if req.member_epoch == 0:
        if member is None:
            member = group.members[member_id] = ConsumerMember(member_id=member_id)
            bump = True
            log.info("share group %s: member %s joined", group.group_id, member_id)
    elif member is None:
        raise HeartbeatError(
            ErrorCode.unknown_member_id, f"member {member_id} is not in the share group"
        )
    elif req.member_epoch != member.epoch:
        raise HeartbeatError(
            ErrorCode.fenced_member_epoch,
            f"the member epoch {req.member_epoch} is fenced (the current one is {member.epoch})",
        )
    member.last_heartbeat = now
    bump = update_member(member, req) or bump
    subscribed = subscribed_topics(group, topics)
    if subscribed != group.subscribed:
        group.subscribed, bump = subscribed, True
    if bump:
        group.group_epoch += 1
    if group.assignment_epoch < group.group_epoch:
        subs = {mid: _member_topics(m, group.subscribed) for mid, m in group.members.items()}
        group.target = share_assign(subs, {t: n for t, n in group.subscribed.values()})
        group.assignment_epoch = group.group_epoch
    before = member.state
    if req.member_epoch == 0 or member.epoch != group.assignment_epoch:
        member.state = Reconciled(
            group.assignment_epoch,
            before.epoch,
            MemberState.STABLE,
            group.target.get(member_id, {}),
        )
    with_assignment = req.member_epoch == 0 or member.state.assigned != before.assigned
    out = {
        "error_code": ErrorCode.none,
        "error_message": None,
        "member_id": member_id,
        "member_epoch": member.epoch,
        "heartbeat_interval": group.heartbeat_interval_ms(settings),
        "assignment": None,
    }
    if with_assignment:
        out["assignment"] = {
            "topic_partitions": [
                {"topic_id": t, "partitions": sorted(ps)}
                for t, ps in sorted(member.state.assigned.items())
                if ps
            ]
        }
    return out
