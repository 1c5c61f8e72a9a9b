"""The JoinGroup, SyncGroup, DescribeGroups and ListGroups answers as Kafka shapes them,
from a group's state; and the release of a member's parked requests with an error."""

from __future__ import annotations

from collections.abc import Iterable

from broker.groups.group import Group, GroupState, Member
from protocol.errors import ErrorCode

_NO_AUTH_OPS = -2147483648


def join_error(code: ErrorCode, member_id: str = "") -> dict:
    return {
        "error_code": code,
        "generation_id": -1,
        "protocol_type": None,
        "protocol_name": "",
        "leader": "",
        "skip_assignment": False,
        "member_id": member_id,
        "members": [],
    }


def sync_error(code: ErrorCode) -> dict:
    return {"error_code": code, "protocol_type": None, "protocol_name": None, "assignment": b""}


def release(member: Member, code: ErrorCode) -> None:
    """Answer a member's parked JoinGroup and SyncGroup, each in its own shape."""
    if member.join_waiter is not None and not member.join_waiter.done():
        member.join_waiter.set_result(join_error(code, member.member_id))
    if member.sync_waiter is not None and not member.sync_waiter.done():
        member.sync_waiter.set_result(sync_error(code))
    member.join_waiter = member.sync_waiter = None


def join_response(group: Group, member: Member) -> dict:
    is_leader = member.member_id == group.leader_id
    assert group.protocol_name is not None
    return {
        "error_code": ErrorCode.none,
        "generation_id": group.generation_id,
        "protocol_type": group.protocol_type,
        "protocol_name": group.protocol_name,
        "leader": group.leader_id or "",
        "skip_assignment": False,
        "member_id": member.member_id,
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata_for(group.protocol_name),
            }
            for m in group.members.values()
        ]
        if is_leader
        else [],
    }


def sync_response(group: Group, member: Member) -> dict:
    return {
        "error_code": ErrorCode.none,
        "protocol_type": group.protocol_type,
        "protocol_name": group.protocol_name,
        "assignment": member.assignment,
    }


def describe(group_id: str, group: Group | None) -> dict:
    if group is None:
        return {
            "error_code": ErrorCode.none,
            "group_id": group_id,
            "group_state": "Dead",
            "protocol_type": "",
            "protocol_data": "",
            "members": [],
            "authorized_operations": _NO_AUTH_OPS,
        }
    stable = group.state == GroupState.STABLE
    return {
        "error_code": ErrorCode.none,
        "group_id": group_id,
        "group_state": group.state.value,
        "protocol_type": group.protocol_type or "",
        "protocol_data": group.protocol_name or "",
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "member_metadata": m.metadata_for(group.protocol_name or "") if stable else b"",
                "member_assignment": m.assignment if stable else b"",
            }
            for m in group.members.values()
        ],
        "authorized_operations": _NO_AUTH_OPS,
    }


def listing(groups: Iterable[Group], states: set[str] | None) -> list[dict]:
    out = []
    for g in groups:
        if states and g.state.value.lower() not in states:
            continue
        out.append(
            {
                "group_id": g.group_id,
                "protocol_type": g.protocol_type or "",
                "group_state": g.state.value,
                "group_type": "classic",
            }
        )
    return out
