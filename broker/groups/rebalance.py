"""The rebalance of a classic group as state transitions: preparing, then completing
the join phase into a new generation. Pure functions of a group and the clock (they
answer parked futures but never wait), so they are tested without a broker."""

from __future__ import annotations

import logging
import time

from broker.groups.group import Group, GroupState
from broker.groups.responses import join_response, sync_error
from protocol.errors import ErrorCode

log = logging.getLogger(__name__)


def prepare_rebalance(group: Group, initial_delay_ms: int, reason: str) -> None:
    """Start a rebalance: parked syncs are told so, and members have until the largest
    rebalance timeout (an empty group waits the initial delay for more members first)."""
    if group.state == GroupState.COMPLETING_REBALANCE:
        for m in group.members.values():
            if m.sync_waiter is not None and not m.sync_waiter.done():
                m.sync_waiter.set_result(sync_error(ErrorCode.rebalance_in_progress))
            m.sync_waiter = None
    now = time.monotonic()
    was_empty = group.state == GroupState.EMPTY
    group.state = GroupState.PREPARING_REBALANCE
    group.sync_deadline = None
    timeout = group.max_rebalance_timeout_ms() / 1000
    group.join_deadline = now + timeout
    if was_empty and initial_delay_ms > 0:
        group.delay_started = now
        group.delay_until = min(now + initial_delay_ms / 1000, now + timeout)
    else:
        group.delay_until = None
    log.info(
        "group %s: preparing rebalance (generation %d): %s",
        group.group_id,
        group.generation_id,
        reason,
    )


def maybe_complete_join(group: Group, now: float | None = None) -> None:
    """Complete the join phase once every member rejoined (after the initial delay) or
    the rebalance timeout passed."""
    if group.state != GroupState.PREPARING_REBALANCE:
        return
    now = time.monotonic() if now is None else now
    if group.delay_until is not None and now < group.delay_until:
        return
    if group.all_joined() or (group.join_deadline is not None and now >= group.join_deadline):
        complete_join(group)


def complete_join(group: Group) -> None:
    """The next generation: late dynamic members go, a protocol and leader are chosen,
    and every parked JoinGroup is answered."""
    # dynamic members that did not rejoin in time go; static ones keep their place
    # (KIP-345: a restarting static member should not cost another rebalance)
    late = [mid for mid, m in group.members.items() if m.join_waiter is None]
    for mid in late:
        if group.members[mid].group_instance_id is None:
            log.info("group %s: member %s did not rejoin in time; removed", group.group_id, mid)
            group.remove(mid)
    group.pending_members.clear()
    group.generation_id += 1
    group.join_deadline = group.delay_until = None
    if not group.members:
        group.state = GroupState.EMPTY
        group.protocol_name = None
        log.info("group %s: empty at generation %d", group.group_id, group.generation_id)
        return
    group.protocol_name = group.select_protocol()
    group.state = GroupState.COMPLETING_REBALANCE
    if group.leader_id not in group.members:
        group.leader_id = next(iter(group.members))
    now = time.monotonic()
    group.sync_deadline = now + group.max_rebalance_timeout_ms() / 1000
    for m in group.members.values():
        m.assignment = b""
        m.last_heartbeat = now
        waiter, m.join_waiter = m.join_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(join_response(group, m))
    log.info(
        "group %s: generation %d with %d members, protocol %s, leader %s",
        group.group_id,
        group.generation_id,
        len(group.members),
        group.protocol_name,
        group.leader_id,
    )


def member_error(
    group: Group | None, member_id: str, instance_id: str | None, generation_id: int
) -> ErrorCode | None:
    """Why a member's SyncGroup, Heartbeat or OffsetCommit is refused (None: it is not)."""
    if group is None:
        return ErrorCode.unknown_member_id
    if instance_id:
        known = group.static_members.get(instance_id)
        if known is not None and known != member_id:
            return ErrorCode.fenced_instance_id
    member = group.members.get(member_id)
    if member is None:
        return ErrorCode.unknown_member_id
    if generation_id != group.generation_id:
        return ErrorCode.illegal_generation
    return None


def overdue(group: Group, now: float) -> list[tuple[str, str]]:
    """(member id, why) of the members to remove at `now`: silent past their session
    timeout, or not synced by the sync deadline. Expired pending ids are dropped."""
    for mid, deadline in list(group.pending_members.items()):
        if now >= deadline:
            del group.pending_members[mid]
    out = []
    for mid, m in group.members.items():
        waiting = m.join_waiter is not None or m.sync_waiter is not None
        if not waiting and now - m.last_heartbeat > m.session_timeout_ms / 1000:
            out.append((mid, "expired (no heartbeat within the session timeout)"))
    # (an expiry starts a new rebalance, which ends the sync phase anyway)
    if (
        not out
        and group.state == GroupState.COMPLETING_REBALANCE
        and group.sync_deadline is not None
        and now >= group.sync_deadline
    ):
        out = [
            (mid, "did not send SyncGroup in time")
            for mid, m in group.members.items()
            if m.sync_waiter is None
        ]
    return out
