"""A KIP-848 consumer group (`group.protocol=consumer`) and its heartbeat, after Kafka's
GroupMetadataManager. Pure: the group, one heartbeat, the topics and the clock in; the
answer and whether the group changed (to be persisted) out. No I/O, no asyncio.

The group epoch moves when membership, subscriptions or the subscribed topics change;
the target assignment is recomputed by the group's assignor when the group epoch is
ahead of it; each member then reconciles towards its target (broker.groups.reconcile).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import re2

from broker.groups.assignors import ASSIGNORS, Assignment
from broker.groups.reconcile import MemberState, Reconciled, is_subset, reconcile
from protocol.errors import ErrorCode

log = logging.getLogger(__name__)

LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2  # a static member that will come back

# topic name -> (topic id, partition count): the topics a heartbeat may subscribe to
Topics = Mapping[str, tuple[uuid.UUID, int]]


class HeartbeatError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ConsumerSettings:
    heartbeat_interval_ms: int = 5000
    session_timeout_ms: int = 45000
    assignors: tuple[str, ...] = ("uniform", "range")


@dataclass(frozen=True)
class HeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None
    rack_id: str | None
    rebalance_timeout_ms: int
    subscribed_topic_names: tuple[str, ...] | None
    subscribed_topic_regex: str | None
    server_assignor: str | None
    owned: Assignment | None  # topic_partitions; None: unchanged since the last heartbeat
    client_id: str = ""
    client_host: str = ""


@dataclass(eq=False)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = 300_000
    topic_names: tuple[str, ...] = ()
    topic_regex: str | None = None
    server_assignor: str | None = None
    state: Reconciled = field(default_factory=lambda: Reconciled(0, -1, MemberState.STABLE))
    last_heartbeat: float = 0.0
    revoke_deadline: float | None = None  # UNREVOKED_PARTITIONS: revoke by then or go

    @property
    def epoch(self) -> int:
        return self.state.epoch


@dataclass(eq=False)
class ConsumerGroup:
    group_id: str
    group_epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ConsumerMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    # the subscribed topics as of the last target assignment: name -> (id, partitions)
    subscribed: dict[str, tuple[uuid.UUID, int]] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)  # group.consumer.* overrides
    # whose group configs apply: consumer.* (KIP-848) or share.* (a share group)
    config_prefix: str = "consumer"

    @property
    def state_name(self) -> str:
        if not self.members:
            return "Empty"
        if self.assignment_epoch != self.group_epoch:
            return "Assigning"
        if any(
            m.epoch != self.assignment_epoch or m.state.state != MemberState.STABLE
            for m in self.members.values()
        ):
            return "Reconciling"
        return "Stable"

    def assignor_name(self, settings: ConsumerSettings) -> str:
        for m in self.members.values():
            if m.server_assignor:
                return m.server_assignor
        return settings.assignors[0]

    def session_timeout_ms(self, settings: ConsumerSettings) -> int:
        v = self.configs.get(f"{self.config_prefix}.session.timeout.ms")
        return int(v) if v else settings.session_timeout_ms

    def heartbeat_interval_ms(self, settings: ConsumerSettings) -> int:
        v = self.configs.get(f"{self.config_prefix}.heartbeat.interval.ms")
        return int(v) if v else settings.heartbeat_interval_ms

    def partition_epoch(self, topic: uuid.UUID, partition: int) -> int:
        for m in self.members.values():
            s = m.state
            if partition in s.assigned.get(topic, ()) or partition in s.pending_revocation.get(
                topic, ()
            ):
                return s.epoch
        return -1

    # --- membership changes -----------------------------------------------------------

    def remove(self, member_id: str, why: str) -> ConsumerMember | None:
        m = self.members.pop(member_id, None)
        if m is None:
            return None
        self.target.pop(member_id, None)
        if m.instance_id and self.static_members.get(m.instance_id) == member_id:
            del self.static_members[m.instance_id]
        self.group_epoch += 1
        log.info(
            "%s group %s: member %s %s (group epoch %d)",
            self.config_prefix,
            self.group_id,
            member_id,
            why,
            self.group_epoch,
        )
        return m

    def expired(self, now: float, settings: ConsumerSettings) -> list[tuple[str, str]]:
        """(member id, why) of the members to remove at `now`."""
        session = self.session_timeout_ms(settings) / 1000
        out = []
        for mid, m in self.members.items():
            if now - m.last_heartbeat > session:
                out.append((mid, "expired (no heartbeat within the session timeout)"))
            elif m.revoke_deadline is not None and now >= m.revoke_deadline:
                out.append((mid, "did not revoke its partitions within the rebalance timeout"))
        return out


def compile_regex(pattern: str) -> re2._Regexp:
    try:
        return re2.compile(pattern)
    except re2.error as e:
        raise HeartbeatError(
            ErrorCode.invalid_regular_expression, f"invalid regular expression {pattern!r}: {e}"
        ) from None


def subscribed_topics(group: ConsumerGroup, topics: Topics) -> dict[str, tuple[uuid.UUID, int]]:
    """The existing topics any member subscribes to, by name or by its regex (RE2, the
    whole name must match, internal topics excluded), with their ids and sizes."""
    names: set[str] = set()
    for m in group.members.values():
        names.update(n for n in m.topic_names if n in topics)
        if m.topic_regex:
            rx = compile_regex(m.topic_regex)
            names.update(n for n in topics if not n.startswith("__") and rx.fullmatch(n))
    return {n: topics[n] for n in sorted(names)}


def _member_topic_ids(m: ConsumerMember, subscribed: Mapping[str, tuple[uuid.UUID, int]]):
    rx = compile_regex(m.topic_regex) if m.topic_regex else None
    return frozenset(
        tid
        for name, (tid, _) in subscribed.items()
        if name in m.topic_names or (rx is not None and rx.fullmatch(name))
    )


def _validate(req: HeartbeatRequest, settings: ConsumerSettings) -> None:
    if not req.group_id:
        raise HeartbeatError(ErrorCode.invalid_request, "GroupId can't be empty.")
    if req.instance_id == "":
        raise HeartbeatError(ErrorCode.invalid_request, "InstanceId can't be empty.")
    if req.member_epoch == 0:
        if req.rebalance_timeout_ms == -1:
            raise HeartbeatError(ErrorCode.invalid_request, "RebalanceTimeoutMs must be provided.")
        if req.owned is None or any(req.owned.values()):
            raise HeartbeatError(
                ErrorCode.invalid_request, "TopicPartitions must be empty when (re-)joining."
            )
        if req.subscribed_topic_names is None and req.subscribed_topic_regex is None:
            raise HeartbeatError(
                ErrorCode.invalid_request,
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            )
    elif req.member_epoch > 0 or req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
        if not req.member_id:
            raise HeartbeatError(ErrorCode.invalid_request, "MemberId can't be empty.")
    else:
        raise HeartbeatError(ErrorCode.invalid_request, f"bad MemberEpoch {req.member_epoch}")
    if req.member_epoch == STATIC_LEAVE_EPOCH and not req.instance_id:
        raise HeartbeatError(
            ErrorCode.invalid_request, "InstanceId must be set when MemberEpoch is -2."
        )
    if req.server_assignor and req.server_assignor not in settings.assignors:
        raise HeartbeatError(
            ErrorCode.unsupported_assignor,
            f"ServerAssignor {req.server_assignor} is not supported.",
        )
    if req.subscribed_topic_regex:
        compile_regex(req.subscribed_topic_regex)


def _response(member: ConsumerMember, interval_ms: int, with_assignment: bool) -> dict:
    out: dict = {
        "error_code": ErrorCode.none,
        "error_message": None,
        "member_id": member.member_id,
        "member_epoch": member.epoch,
        "heartbeat_interval": interval_ms,
        "assignment": None,
    }
    if with_assignment:
        out["assignment"] = {
            "topic_partitions": [
                {"topic_id": t, "partitions": sorted(ps)}
                for t, ps in sorted(member.state.assigned.items())
            ]
        }
    return out


def error_response(code: ErrorCode, message: str, member_id: str = "", epoch: int = 0) -> dict:
    return {
        "error_code": code,
        "error_message": message,
        "member_id": member_id or None,
        "member_epoch": epoch,
        "heartbeat_interval": 0,
        "assignment": None,
    }


def leave(group: ConsumerGroup, req: HeartbeatRequest, settings: ConsumerSettings) -> dict:
    """MemberEpoch -1 (leave) or -2 (a static member leaving for a while: it keeps its
    assignment for the session timeout, waiting for its next incarnation)."""
    member_id = req.member_id
    if req.instance_id:
        holder = group.static_members.get(req.instance_id)
        if holder is None:
            raise HeartbeatError(
                ErrorCode.unknown_member_id, f"instance {req.instance_id} is unknown"
            )
        if holder != member_id:
            raise HeartbeatError(
                ErrorCode.fenced_instance_id, f"instance {req.instance_id} is another member's"
            )
    m = group.members.get(member_id)
    if m is None:
        raise HeartbeatError(ErrorCode.unknown_member_id, f"member {member_id} is unknown")
    if req.member_epoch == STATIC_LEAVE_EPOCH:
        m.state = Reconciled(
            STATIC_LEAVE_EPOCH,
            m.state.previous_epoch,
            m.state.state,
            m.state.assigned,
            m.state.pending_revocation,
        )
        log.info(
            "consumer group %s: static member %s (%s) left for a while",
            group.group_id,
            m.instance_id,
            member_id,
        )
    else:
        group.remove(member_id, "left the group")
    return {**_response(m, 0, False), "member_epoch": req.member_epoch}


def heartbeat(
    group: ConsumerGroup,
    req: HeartbeatRequest,
    topics: Topics,
    now: float,
    settings: ConsumerSettings,
    new_member_id: str,
) -> dict:
    """Apply one ConsumerGroupHeartbeat; its response body (less throttle time). Raises
    HeartbeatError for a refused one (the group is left as it was)."""
    _validate(req, settings)
    if req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
        return leave(group, req, settings)
    bump = False
    if req.member_epoch == 0:
        member, bump = _joining(group, req, now, new_member_id)
    else:
        member = group.members.get(req.member_id)
        if member is None:
            raise HeartbeatError(
                ErrorCode.unknown_member_id, f"member {req.member_id} is not in the group"
            )
        if req.instance_id and group.static_members.get(req.instance_id) != member.member_id:
            raise HeartbeatError(
                ErrorCode.fenced_instance_id, f"instance {req.instance_id} is another member's"
            )
        _check_epoch(member, req)
    member.last_heartbeat = now
    bump = update_member(member, req) or bump
    subscribed = subscribed_topics(group, topics)
    if subscribed != group.subscribed:
        group.subscribed, bump = subscribed, True
    if bump:
        group.group_epoch += 1
    if group.assignment_epoch < group.group_epoch:
        _assign(group, settings)
    before = member.state
    member.state = reconcile(
        member.state,
        group.assignment_epoch,
        group.target.get(member.member_id, {}),
        req.owned,
        group.partition_epoch,
    )
    s = member.state
    if s.state == MemberState.UNREVOKED_PARTITIONS:
        if member.revoke_deadline is None:
            member.revoke_deadline = now + member.rebalance_timeout_ms / 1000
    else:
        member.revoke_deadline = None
    if s != before:
        log.info(
            "consumer group %s: member %s at epoch %d %s, assigned %s, revoking %s",
            group.group_id,
            member.member_id,
            s.epoch,
            s.state.value,
            _show(s.assigned),
            _show(s.pending_revocation),
        )
    with_assignment = (
        req.member_epoch == 0
        or s.assigned != before.assigned
        or (req.owned is not None and not _same(req.owned, s.assigned))
    )
    return _response(member, group.heartbeat_interval_ms(settings), with_assignment)


def update_member(member: ConsumerMember, req: HeartbeatRequest) -> bool:
    """Take the fields the heartbeat sets (None: unchanged); whether its subscription or
    assignor changed (which moves the group epoch)."""
    changed = False
    if req.rack_id is not None:
        member.rack_id = req.rack_id
    if req.rebalance_timeout_ms != -1:
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
    if req.client_id:
        member.client_id = req.client_id
    if req.client_host:
        member.client_host = req.client_host
    if req.subscribed_topic_names is not None:
        names = tuple(sorted(set(req.subscribed_topic_names)))
        if names != member.topic_names:
            member.topic_names, changed = names, True
    if req.subscribed_topic_regex is not None:
        rx = req.subscribed_topic_regex or None
        if rx != member.topic_regex:
            member.topic_regex, changed = rx, True
    if req.server_assignor is not None and req.server_assignor != member.server_assignor:
        member.server_assignor, changed = req.server_assignor or None, True
    return changed


def _show(a: Assignment) -> str:
    return "{" + ", ".join(f"{str(t)[:8]}:{sorted(ps)}" for t, ps in sorted(a.items())) + "}"


def _same(a: Assignment, b: Assignment) -> bool:
    return {t: ps for t, ps in a.items() if ps} == {t: ps for t, ps in b.items() if ps}


def _joining(
    group: ConsumerGroup, req: HeartbeatRequest, now: float, new_member_id: str
) -> tuple[ConsumerMember, bool]:
    """Epoch 0: a new member, a static member's new incarnation, or a known member that
    lost its state and starts over."""
    if req.instance_id:
        holder_id = group.static_members.get(req.instance_id)
        holder = group.members.get(holder_id) if holder_id else None
        if holder is not None:
            if holder.epoch != STATIC_LEAVE_EPOCH and holder.member_id != (
                req.member_id or new_member_id
            ):
                raise HeartbeatError(
                    ErrorCode.unreleased_instance_id,
                    f"instance {req.instance_id} is still held by member {holder.member_id}",
                )
            # KIP-848 static membership: the new incarnation takes the old one's place
            # and assignment, at its epoch; no rebalance
            member_id = req.member_id or new_member_id
            del group.members[holder.member_id]
            target = group.target.pop(holder.member_id, {})
            holder.member_id = member_id
            restored_epoch = holder.state.previous_epoch if holder.epoch < 0 else holder.epoch
            holder.state = Reconciled(
                max(restored_epoch, 0),
                holder.state.previous_epoch,
                holder.state.state,
                holder.state.assigned,
                holder.state.pending_revocation,
            )
            group.members[member_id] = holder
            group.target[member_id] = target
            group.static_members[req.instance_id] = member_id
            log.info(
                "consumer group %s: static member %s rejoined as %s",
                group.group_id,
                req.instance_id,
                member_id,
            )
            return holder, False
    member_id = req.member_id or new_member_id
    existing = group.members.get(member_id)
    if existing is not None:
        # it lost its state (it was fenced, or restarted with the same id): it starts
        # again from nothing owned; what it held is revoked through reconciliation
        return existing, False
    member = ConsumerMember(member_id=member_id, instance_id=req.instance_id, last_heartbeat=now)
    group.members[member_id] = member
    if req.instance_id:
        group.static_members[req.instance_id] = member_id
    log.info("consumer group %s: member %s joined", group.group_id, member_id)
    return member, True


def _check_epoch(member: ConsumerMember, req: HeartbeatRequest) -> None:
    """Kafka's rule: the member's epoch, or its previous one if it lost a response and
    owns nothing beyond what it has now."""
    if req.member_epoch == member.epoch:
        return
    if (
        req.member_epoch < member.epoch
        and req.member_epoch == member.state.previous_epoch
        and req.owned is not None
        and is_subset(req.owned, member.state.assigned)
    ):
        return
    raise HeartbeatError(
        ErrorCode.fenced_member_epoch,
        f"the member epoch {req.member_epoch} is fenced (the current one is {member.epoch})",
    )


def _assign(group: ConsumerGroup, settings: ConsumerSettings) -> None:
    name = group.assignor_name(settings)
    assignor = ASSIGNORS.get(name, ASSIGNORS[settings.assignors[0]])
    subs = {mid: _member_topic_ids(m, group.subscribed) for mid, m in group.members.items()}
    sizes = {tid: n for tid, n in group.subscribed.values()}
    group.target = assignor(subs, sizes, group.target)
    group.assignment_epoch = group.group_epoch
    log.info(
        "consumer group %s: target assignment at epoch %d by %s: %s",
        group.group_id,
        group.assignment_epoch,
        name,
        {mid: _show(a) for mid, a in group.target.items()},
    )


# --- persistence: the group as one record value ---------------------------------------


def _pack_assignment(a: Assignment) -> list:
    return [[t.bytes, sorted(ps)] for t, ps in sorted(a.items())]


def _unpack_assignment(v: list) -> Assignment:
    return {uuid.UUID(bytes=t): frozenset(ps) for t, ps in v}


def to_record(group: ConsumerGroup) -> dict:
    """What a restarted or new coordinator needs to carry the group on."""
    return {
        "v": 1,
        "epoch": group.group_epoch,
        "assignment_epoch": group.assignment_epoch,
        "subscribed": [[n, t.bytes, c] for n, (t, c) in group.subscribed.items()],
        "configs": group.configs,
        "members": [
            {
                "id": m.member_id,
                "instance": m.instance_id,
                "rack": m.rack_id,
                "client": m.client_id,
                "host": m.client_host,
                "rebalance_timeout": m.rebalance_timeout_ms,
                "topics": list(m.topic_names),
                "regex": m.topic_regex,
                "assignor": m.server_assignor,
                "epoch": m.state.epoch,
                "previous_epoch": m.state.previous_epoch,
                "state": m.state.state.value,
                "assigned": _pack_assignment(m.state.assigned),
                "revoking": _pack_assignment(m.state.pending_revocation),
                "target": _pack_assignment(group.target.get(m.member_id, {})),
            }
            for m in group.members.values()
        ],
    }


def from_record(group_id: str, v: dict, now: float, prefix: str = "consumer") -> ConsumerGroup:
    """The group as persisted; its members' sessions start again at `now`."""
    g = ConsumerGroup(
        group_id,
        config_prefix=prefix,
        group_epoch=v["epoch"],
        assignment_epoch=v["assignment_epoch"],
        subscribed={n: (uuid.UUID(bytes=t), c) for n, t, c in v["subscribed"]},
        configs=dict(v.get("configs", {})),
    )
    for mv in v["members"]:
        m = ConsumerMember(
            member_id=mv["id"],
            instance_id=mv["instance"],
            rack_id=mv["rack"],
            client_id=mv["client"],
            client_host=mv["host"],
            rebalance_timeout_ms=mv["rebalance_timeout"],
            topic_names=tuple(mv["topics"]),
            topic_regex=mv["regex"],
            server_assignor=mv["assignor"],
            state=Reconciled(
                mv["epoch"],
                mv["previous_epoch"],
                MemberState(mv["state"]),
                _unpack_assignment(mv["assigned"]),
                _unpack_assignment(mv["revoking"]),
            ),
            last_heartbeat=now,
        )
        g.members[m.member_id] = m
        g.target[m.member_id] = _unpack_assignment(mv["target"])
        if m.instance_id:
            g.static_members[m.instance_id] = m.member_id
    return g
