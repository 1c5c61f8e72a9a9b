"""The group coordinator for the classic protocol, after Kafka's GroupCoordinator.

Join and sync requests park on futures until the rebalance they belong to completes;
a sweeper task expires silent members and ends join or sync phases that overrun
their timeouts. Membership itself is not persisted: after a restart members rejoin
(UNKNOWN_MEMBER_ID tells them to), while committed offsets come back from the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from broker.groups.classic_record import restore, to_record
from broker.groups.consumer_coordinator import ConsumerGroups
from broker.groups.consumer_protocol import subscription_topics
from broker.groups.group import Group, GroupState, Member
from broker.groups.rebalance import maybe_complete_join, member_error, overdue, prepare_rebalance
from broker.groups.responses import (
    describe,
    join_error,
    join_response,
    listing,
    release,
    sync_error,
    sync_response,
)
from broker.groups.share_coordinator import ShareGroups
from broker.groups.sweeper import Sweeper
from protocol.errors import ErrorCode

log = logging.getLogger(__name__)

# what a JoinGroup or SyncGroup gets at once: its answer, or a future of it while the
# request waits for the rest of the group (it holds no state while it waits)
Answer = dict | asyncio.Future[dict]


SWEEP_INTERVAL = 0.1


@dataclass(frozen=True)
class GroupSettings:
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 3000


def _signature(group: Group) -> tuple:
    return (
        group.state,
        group.generation_id,
        group.leader_id,
        tuple((m.member_id, m.assignment) for m in group.members.values()),
    )


def _assignment_inputs_changed(group: Group, old: Member, new: Member) -> bool:
    """Whether a static member's new incarnation changes what decides the assignment: the
    group's protocol, or (consumer groups) the topics it subscribes to. The raw metadata
    bytes do not decide it: cooperative-sticky's carry the partitions the old incarnation
    owned and its generation, which a fresh incarnation cannot repeat (Kafka compares
    only the selected protocol)."""
    if group.select_protocol() != group.protocol_name:
        return True
    name = group.protocol_name
    if group.protocol_type != "consumer" or name is None:
        return old.metadata_for(name or "") != new.metadata_for(name or "")
    return subscription_topics(old.metadata_for(name)) != subscription_topics(
        new.metadata_for(name)
    )


class GroupStates(Protocol):
    """Where classic groups' state is persisted and replayed (the offsets store)."""

    @property
    def group_types(self) -> Mapping[str, str]: ...

    @property
    def classic_groups(self) -> Mapping[str, dict]: ...

    async def store_classic_group(
        self, group_id: str, protocol_type: str, state: dict | None
    ) -> None: ...


class GroupCoordinator:
    def __init__(
        self,
        settings: GroupSettings,
        consumer: ConsumerGroups,
        share: ShareGroups,
        states: GroupStates,
    ) -> None:
        """`consumer`: the KIP-848 groups, which share the group id space with these;
        `states`: where a group's stable or empty state is persisted, and read back the
        first time a group this broker did not know is used (after a restart or a move)."""
        self.settings = settings
        self.consumer = consumer
        self.share = share  # share groups (KIP-932), in the same group id space
        self.states = states
        self._persisted: dict[str, tuple] = {}  # group -> what its persisted record shows
        self._writes: set[asyncio.Task[None]] = set()
        self.groups: dict[str, Group] = {}
        self._sweeper = Sweeper(self.sweep, "group", SWEEP_INTERVAL)
        self.rebalances = 0

    def start(self) -> None:
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()

    def group(self, group_id: str, create: bool = False) -> Group | None:
        g = self.groups.get(group_id)
        if g is None and group_id in self.states.classic_groups:
            state = self.states.classic_groups[group_id]
            protocol_type = self.states.group_types.get(group_id)
            g = self.groups[group_id] = restore(group_id, protocol_type, state, time.monotonic())
            self._persisted[group_id] = _signature(g)
            log.info(
                "group %s: restored at generation %d (%s) with %d members",
                group_id,
                g.generation_id,
                g.state.value,
                len(g.members),
            )
        if g is None and create:
            g = self.groups[group_id] = Group(group_id)
        return g

    # --- persistence ----------------------------------------------------------------------

    def _persist(self, group: Group) -> None:
        """Write the group's record if its stable or empty state changed since the last."""
        if group.state == GroupState.EMPTY and not group.empty_since_ms:
            group.empty_since_ms = int(time.time() * 1000)
        elif group.state != GroupState.EMPTY:
            group.empty_since_ms = 0
        sig = _signature(group)
        if group.state not in (GroupState.STABLE, GroupState.EMPTY) or not group.protocol_type:
            return
        if self._persisted.get(group.group_id) == sig:
            return
        self._persisted[group.group_id] = sig
        task = asyncio.ensure_future(self._write(group))
        self._writes.add(task)
        task.add_done_callback(self._written)

    async def _write(self, group: Group) -> None:
        # the state as of the append (so the later of two writes carries the later state)
        if self.groups.get(group.group_id) is not group:
            return
        assert group.protocol_type
        await self.states.store_classic_group(group.group_id, group.protocol_type, to_record(group))

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("group state not persisted: %s", task.exception())

    def emptied_at_ms(self, group_id: str) -> int | None:
        """For offsets retention: when the group became empty (0: unknown), None while it
        has members."""
        consumer = self.consumer.group(group_id)
        if consumer is not None:
            return None if consumer.members else 0
        g = self.group(group_id)
        if g is None:
            return 0
        return g.empty_since_ms if g.state == GroupState.EMPTY else None

    # --- JoinGroup --------------------------------------------------------------------

    def start_join(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool,
    ) -> Answer:
        """Apply a JoinGroup now; the answer, or (while the rebalance completes) a future
        of it. Everything the request changes is done before this returns."""
        error = self._join_error(group_id, session_timeout_ms, protocol_type, protocols)
        if error is not None:
            return join_error(error, member_id)
        group = self.group(group_id, create=True)
        assert group is not None
        # the member this request describes, once its id is known
        new_member = partial(
            Member,
            group_instance_id=group_instance_id,
            client_id=client_id,
            client_host=client_host,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            protocol_type=protocol_type,
            protocols=list(protocols),
        )
        if not member_id:
            new_id = f"{client_id or 'member'}-{uuid.uuid4()}"
            return self._join_unknown(group, new_member(new_id), require_known_member_id)
        holder = group.static_members.get(group_instance_id) if group_instance_id else None
        if holder is not None and holder != member_id:
            return join_error(ErrorCode.fenced_instance_id, member_id)
        if member_id in group.pending_members:
            del group.pending_members[member_id]
            return self._add_and_wait(group, new_member(member_id))
        member = group.members.get(member_id)
        if member is None:
            return join_error(ErrorCode.unknown_member_id, member_id)
        return self._rejoin(group, member, new_member(member_id))

    def _join_error(
        self,
        group_id: str,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> ErrorCode | None:
        """Why a JoinGroup is refused before any member is looked at (None: it is not)."""
        s = self.settings
        if not group_id:
            return ErrorCode.invalid_group_id
        if self.share.group(group_id) is not None:
            return ErrorCode.inconsistent_group_protocol
        consumer = self.consumer.group(group_id)
        if consumer is not None:
            if consumer.members:  # a KIP-848 group in use
                return ErrorCode.inconsistent_group_protocol
            # an empty consumer group becomes a classic one (online conversion)
            self.consumer.drop(group_id)
            log.info("group %s: empty consumer group converted to classic", group_id)
        if not s.min_session_timeout_ms <= session_timeout_ms <= s.max_session_timeout_ms:
            return ErrorCode.invalid_session_timeout
        group = self.group(group_id, create=True)
        assert group is not None
        if not group.supports(protocol_type, [name for name, _ in protocols]):
            return ErrorCode.inconsistent_group_protocol
        return None

    def _join_unknown(self, group: Group, member: Member, require_known_id: bool) -> Answer:
        """A member joining without an id: a static one takes its old place, KIP-394 hands
        out an id to rejoin with, else it joins at once."""
        instance_id = member.group_instance_id
        if instance_id:
            existing = group.static_members.get(instance_id)
            if existing is not None:
                return self._replace_static_member(group, existing, member)
        elif require_known_id:  # KIP-394: hand out an id, the client rejoins with it
            timeout = member.session_timeout_ms / 1000
            group.pending_members[member.member_id] = time.monotonic() + timeout
            return join_error(ErrorCode.member_id_required, member.member_id)
        return self._add_and_wait(group, member)

    def _rejoin(self, group: Group, member: Member, request: Member) -> Answer:
        """A known member joins again: it takes the request's protocols and timeouts; an
        unchanged one in a settled group gets the current answer, else a rebalance."""
        changed = member.protocols != request.protocols
        member.protocols = request.protocols
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.last_heartbeat = time.monotonic()
        if group.state == GroupState.COMPLETING_REBALANCE and not changed:
            return join_response(group, member)  # it lost the response: same answer
        if group.state == GroupState.STABLE and not changed and member.member_id != group.leader_id:
            return join_response(group, member)
        if group.state != GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, f"member {member.member_id} rejoined")
        return self._wait_join(group, member)

    def _add_and_wait(self, group: Group, member: Member) -> Answer:
        group.add(member)
        now = time.monotonic()
        if group.state == GroupState.PREPARING_REBALANCE and group.delay_until is not None:
            delay = self.settings.initial_rebalance_delay_ms / 1000
            group.delay_until = min(
                now + delay, group.delay_started + group.max_rebalance_timeout_ms() / 1000
            )
        elif group.state != GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, f"new member {member.member_id} joined")
        return self._wait_join(group, member)

    def _wait_join(self, group: Group, member: Member) -> Answer:
        if member.join_waiter is not None and not member.join_waiter.done():
            member.join_waiter.set_result(
                join_error(ErrorCode.rebalance_in_progress, member.member_id)
            )
        member.join_waiter = asyncio.get_running_loop().create_future()
        waiter = member.join_waiter
        maybe_complete_join(group)
        return waiter

    def _replace_static_member(self, group: Group, old_id: str, member: Member) -> Answer:
        """KIP-345: a static member rejoining with a new id takes its old place, no rebalance."""
        old = group.members[old_id]
        release(old, ErrorCode.fenced_instance_id)
        member.assignment = old.assignment
        was_leader = group.leader_id == old_id
        group.members.pop(old_id)
        group.members[member.member_id] = member
        assert member.group_instance_id is not None
        group.static_members[member.group_instance_id] = member.member_id
        if was_leader:
            group.leader_id = member.member_id
        log.info(
            "group %s: static member %s rejoined as %s",
            group.group_id,
            member.group_instance_id,
            member.member_id,
        )
        if group.state == GroupState.STABLE and not _assignment_inputs_changed(group, old, member):
            self._persist(group)
            response = join_response(group, member)
            response["skip_assignment"] = was_leader
            return response
        if group.state != GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, f"static member {member.group_instance_id} changed")
        return self._wait_join(group, member)

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        prepare_rebalance(group, self.settings.initial_rebalance_delay_ms, reason)
        self.rebalances += 1

    # --- SyncGroup, Heartbeat, LeaveGroup ---------------------------------------------

    def start_sync(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> Answer:
        """Apply a SyncGroup now; the answer, or a future of it until the leader's
        assignment arrives."""
        group = self.group(group_id)
        error = member_error(group, member_id, group_instance_id, generation_id)
        if error is not None:
            return sync_error(error)
        assert group is not None
        if (protocol_type and protocol_type != group.protocol_type) or (
            protocol_name and protocol_name != group.protocol_name
        ):
            return sync_error(ErrorCode.inconsistent_group_protocol)
        member = group.members[member_id]
        member.last_heartbeat = time.monotonic()
        if group.state == GroupState.PREPARING_REBALANCE:
            return sync_error(ErrorCode.rebalance_in_progress)
        if group.state == GroupState.STABLE:
            return sync_response(group, member)
        if group.state != GroupState.COMPLETING_REBALANCE:
            return sync_error(ErrorCode.unknown_member_id)
        if member.sync_waiter is not None and not member.sync_waiter.done():
            member.sync_waiter.set_result(sync_error(ErrorCode.rebalance_in_progress))
        member.sync_waiter = asyncio.get_running_loop().create_future()
        waiter = member.sync_waiter
        if member_id == group.leader_id:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            group.state = GroupState.STABLE
            group.sync_deadline = None
            for m in group.members.values():
                w, m.sync_waiter = m.sync_waiter, None
                if w is not None and not w.done():
                    w.set_result(sync_response(group, m))
            log.info("group %s: stable at generation %d", group.group_id, group.generation_id)
            self._persist(group)
        return waiter

    def heartbeat(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        group = self.group(group_id)
        error = member_error(group, member_id, group_instance_id, generation_id)
        if error is not None:
            return error
        assert group is not None
        group.members[member_id].last_heartbeat = time.monotonic()
        if group.state == GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            return ErrorCode.none
        return ErrorCode.unknown_member_id

    def leave(self, group_id: str, members: list[tuple[str, str | None]]) -> list[ErrorCode]:
        """Per leaving member: its error code."""
        group = self.group(group_id)
        results = []
        for member_id, instance_id in members:
            if group is None:
                results.append(ErrorCode.unknown_member_id)
                continue
            if instance_id:
                known = group.static_members.get(instance_id)
                if known is None:
                    results.append(ErrorCode.unknown_member_id)
                    continue
                if member_id and member_id != known:
                    results.append(ErrorCode.fenced_instance_id)
                    continue
                member_id = known
            if member_id in group.pending_members:
                del group.pending_members[member_id]
                results.append(ErrorCode.none)
                continue
            if member_id not in group.members:
                results.append(ErrorCode.unknown_member_id)
                continue
            self._remove_member(group, member_id, "left the group")
            results.append(ErrorCode.none)
        if group is not None:
            self._persist(group)
        return results

    def _remove_member(self, group: Group, member_id: str, why: str) -> None:
        member = group.remove(member_id)
        if member is None:
            return
        release(member, ErrorCode.unknown_member_id)
        log.info("group %s: member %s %s", group.group_id, member_id, why)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, f"member {member_id} {why}")
        maybe_complete_join(group)

    # --- offsets commit checks --------------------------------------------------------

    def commit_error(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        partitions: Iterable[tuple[str, int]] = (),
    ) -> ErrorCode | None:
        """Whether an OffsetCommit (of `partitions`) may go ahead (None) or the error that
        refuses it."""
        if self.consumer.is_consumer_group(group_id):
            return self.consumer.commit_error(group_id, member_id, generation_id, partitions)
        group = self.group(group_id)
        if group is None:
            if generation_id < 0:
                self.group(group_id, create=True)  # a standalone consumer's commits
                return None
            return ErrorCode.illegal_generation
        if generation_id < 0 and group.state == GroupState.EMPTY:
            return None
        error = member_error(group, member_id, group_instance_id, generation_id)
        if error is not None:
            return error
        group.members[member_id].last_heartbeat = time.monotonic()
        if group.state == GroupState.COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return None

    # --- admin --------------------------------------------------------------------------

    def describe(self, group_id: str) -> dict:
        if self.group(group_id) is None and self.consumer.is_consumer_group(group_id):
            return self.consumer.describe_classic(group_id)
        if self.group(group_id) is None and self.share.is_consumer_group(group_id):
            return self.share.describe_classic(group_id)
        return describe(group_id, self.group(group_id))

    def listing(self, states: set[str] | None) -> list[dict]:
        consumer = self.consumer.listing(states) + self.share.listing(states)
        shown = {g["group_id"] for g in consumer}
        classic = [g for g in listing(self.groups.values(), states) if g["group_id"] not in shown]
        return classic + consumer

    def delete_error(self, group_id: str) -> ErrorCode | None:
        if self.group(group_id) is None and self.consumer.is_consumer_group(group_id):
            return self.consumer.delete_error(group_id)
        if self.group(group_id) is None and self.share.is_consumer_group(group_id):
            return self.share.delete_error(group_id)
        group = self.group(group_id)
        if group is None:
            return ErrorCode.group_id_not_found
        if group.state != GroupState.EMPTY:
            return ErrorCode.non_empty_group
        return None

    def forget(self, group_id: str) -> None:
        self._persisted.pop(group_id, None)
        group = self.groups.pop(group_id, None)
        if group is not None:
            group.state = GroupState.DEAD
        elif self.consumer.is_consumer_group(group_id):
            self.consumer.drop(group_id)
        elif self.share.is_consumer_group(group_id):
            self.share.drop(group_id)

    def yield_to_consumer_protocol(self, group_id: str) -> bool:
        """A ConsumerGroupHeartbeat for this group id: whether it may become (or stay) a
        KIP-848 group. An empty classic group is converted (its offsets stay); one with
        members is not."""
        if self.consumer.group(group_id) is not None:
            return True
        group = self.group(group_id)  # restored first, if persisted
        if group is None:
            return True
        if group.members or group.pending_members:
            return False
        self.groups.pop(group_id)
        self._persisted.pop(group_id, None)
        group.state = GroupState.DEAD
        if group_id in self.states.classic_groups:  # its classic state goes; offsets stay
            task = asyncio.ensure_future(
                self.states.store_classic_group(group_id, group.protocol_type or "consumer", None)
            )
            self._writes.add(task)
            task.add_done_callback(self._written)
        log.info("group %s: empty classic group converted to the consumer protocol", group_id)
        return True

    def unload(self, group_id: str) -> None:
        """Another broker coordinates the group now (cluster mode): parked joins and
        syncs get NOT_COORDINATOR, so the members find the new coordinator."""
        self.consumer.unload(group_id)
        self.share.unload(group_id)
        self._persisted.pop(group_id, None)
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        for member in group.members.values():
            release(member, ErrorCode.not_coordinator)
        group.state = GroupState.DEAD

    # --- timers -------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        for group in list(self.groups.values()):
            state = group.state
            gone = overdue(group, now)
            for mid, why in gone:
                self._remove_member(group, mid, why)
            maybe_complete_join(group, now)
            if gone or group.state != state:
                self._persist(group)
