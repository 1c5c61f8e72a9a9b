"""A classic group's state as a record value in `__consumer_offsets`, after Kafka's
GroupMetadata records: generation, protocol, leader and every member with its protocols
and assignment, so a restarted or new coordinator carries a stable group on and its
members need not rejoin. Pure: a Group in, a msgpack-able dict out, and back."""

from __future__ import annotations

from broker.groups.group import Group, GroupState, Member


def to_record(group: Group) -> dict | None:
    """The group as persisted; None while it is rebalancing (the last stable or empty
    state stays the persisted one)."""
    if group.state not in (GroupState.STABLE, GroupState.EMPTY):
        return None
    return {
        "v": 1,
        "state": group.state.value,
        "generation": group.generation_id,
        "protocol": group.protocol_name,
        "leader": group.leader_id,
        "empty_since_ms": group.empty_since_ms,
        "members": [
            {
                "id": m.member_id,
                "instance": m.group_instance_id,
                "client": m.client_id,
                "host": m.client_host,
                "session_timeout": m.session_timeout_ms,
                "rebalance_timeout": m.rebalance_timeout_ms,
                "protocols": [[n, md] for n, md in m.protocols],
                "assignment": m.assignment,
            }
            for m in group.members.values()
        ]
        if group.state == GroupState.STABLE
        else [],
    }


def restore(group_id: str, protocol_type: str | None, v: dict, now: float) -> Group:
    """The group as persisted; its members' sessions start again at `now`."""
    g = Group(group_id, protocol_type=protocol_type)
    g.generation_id = v["generation"]
    g.empty_since_ms = v.get("empty_since_ms", 0)
    for mv in v["members"]:
        m = Member(
            member_id=mv["id"],
            group_instance_id=mv["instance"],
            client_id=mv["client"],
            client_host=mv["host"],
            session_timeout_ms=mv["session_timeout"],
            rebalance_timeout_ms=mv["rebalance_timeout"],
            protocol_type=protocol_type or "",
            protocols=[(n, md) for n, md in mv["protocols"]],
            assignment=mv["assignment"],
            last_heartbeat=now,
        )
        g.members[m.member_id] = m
        if m.group_instance_id:
            g.static_members[m.group_instance_id] = m.member_id
    if g.members and v["state"] == GroupState.STABLE.value:
        g.state = GroupState.STABLE
        g.protocol_name = v["protocol"]
        g.leader_id = v["leader"] if v["leader"] in g.members else next(iter(g.members))
    return g
