"""The coordinator of KIP-848 consumer groups: the I/O around broker.groups.consumer_group.

It keeps the groups this broker coordinates, applies heartbeats (the pure core decides),
persists a group's state to `__consumer_offsets` after every change that a restarted or
new coordinator needs (before the heartbeat is answered), restores groups from what the
log replayed, and expires members whose session or revocation ran out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping

from broker.groups.consumer_group import (
    ConsumerGroup,
    ConsumerSettings,
    HeartbeatError,
    HeartbeatRequest,
    Topics,
    error_response,
    from_record,
    heartbeat,
    to_record,
)
from broker.groups.group_configs import HEARTBEAT, SESSION
from broker.groups.sweeper import Sweeper
from protocol.errors import ErrorCode

log = logging.getLogger(__name__)

# group id, its record (None: the group is gone) -> durable
Persist = Callable[[str, dict | None], Awaitable[None]]

SWEEP_INTERVAL = 0.2


class ConsumerGroups:
    kind = "consumer"  # what ListGroups calls them
    apply_heartbeat = staticmethod(heartbeat)  # the pure core of one heartbeat

    def __init__(
        self,
        settings: ConsumerSettings,
        persist: Persist,
        stored: MutableMapping[str, dict],
    ) -> None:
        """`stored`: the groups' records as replayed from `__consumer_offsets` (by the
        offsets table); a group is restored from there the first time it is used."""
        self.settings = settings
        self._persist = persist
        self._stored = stored
        self.groups: dict[str, ConsumerGroup] = {}
        self._sweeper = Sweeper(self.sweep, f"{self.kind} group", SWEEP_INTERVAL)
        self._writes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()

    def group(self, group_id: str) -> ConsumerGroup | None:
        g = self.groups.get(group_id)
        if g is None and group_id in self._stored:
            g = self.groups[group_id] = from_record(
                group_id, self._stored[group_id], time.monotonic(), self.kind
            )
            log.info(
                "%s group %s: restored at epoch %d with %d members",
                self.kind,
                group_id,
                g.group_epoch,
                len(g.members),
            )
        return g

    def known_ids(self) -> set[str]:
        return {*self.groups, *self._stored}

    def is_consumer_group(self, group_id: str) -> bool:
        return self.group(group_id) is not None

    async def heartbeat(self, req: HeartbeatRequest, topics: Topics) -> dict:
        """One ConsumerGroupHeartbeat; answered once any change it made is durable."""
        group = self.group(req.group_id)
        created = group is None
        if group is None:
            if req.member_epoch != 0:
                return error_response(
                    ErrorCode.unknown_member_id, f"group {req.group_id} has no members"
                )
            group = ConsumerGroup(req.group_id, config_prefix=self.kind)
        before = to_record(group)
        try:
            answer = self.apply_heartbeat(
                group,
                req,
                topics,
                time.monotonic(),
                self.settings,
                new_member_id=uuid.uuid4().hex,
            )
        except HeartbeatError as e:  # raised before the group is touched
            return error_response(e.code, e.message, req.member_id, req.member_epoch)
        if created:
            self.groups[req.group_id] = group
        if to_record(group) != before:
            await self._write(req.group_id)
        return answer

    async def _write(self, group_id: str) -> None:
        """Persist the group as it is when the record is appended (so of two writes the
        later one always carries the later state)."""
        g = self.groups.get(group_id)
        value = to_record(g) if g is not None else None
        if value is None:
            self._stored.pop(group_id, None)
        else:
            self._stored[group_id] = value
        await self._persist(group_id, value)

    def _write_later(self, group_id: str) -> None:
        task = asyncio.ensure_future(self._write(group_id))
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s group state not persisted: %s", self.kind, task.exception())

    # --- offsets ------------------------------------------------------------------------

    def commit_error(
        self,
        group_id: str,
        member_id: str,
        member_epoch: int,
        partitions: Iterable[tuple[str, int]] = (),
    ) -> ErrorCode | None:
        """OffsetCommit (v9+: generation id is the member epoch) for a consumer group.

        A commit sent at the member's previous epoch (the heartbeat moving it on crossed
        the commit) is accepted for partitions the member still holds, as KIP-1251's
        assignment epochs allow; otherwise an older epoch is STALE_MEMBER_EPOCH and a
        newer one FENCED_MEMBER_EPOCH."""
        group = self.group(group_id)
        assert group is not None
        if member_epoch < 0 and not member_id:
            return None if not group.members else ErrorCode.unknown_member_id
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if member_epoch == member.epoch:
            return None
        if member_epoch > member.epoch:
            return ErrorCode.fenced_member_epoch
        if member_epoch == member.state.previous_epoch:
            held = {**member.state.assigned}
            for t, ps in member.state.pending_revocation.items():
                held[t] = held.get(t, frozenset()) | ps
            ids = {name: tid for name, (tid, _) in group.subscribed.items()}
            if all(p in held.get(ids.get(name), ()) for name, p in partitions):
                return None
        return ErrorCode.stale_member_epoch

    # --- admin --------------------------------------------------------------------------

    def describe(self, group_id: str, names: dict[uuid.UUID, str]) -> dict:
        group = self.group(group_id)
        if group is None:
            return {
                "error_code": ErrorCode.group_id_not_found,
                "error_message": f"Group {group_id} not found.",
                "group_id": group_id,
                "group_state": "Dead",
                "group_epoch": -1,
                "assignment_epoch": -1,
                "assignor_name": "",
                "members": [],
            }

        def parts(a) -> dict:
            return {
                "topic_partitions": [
                    {"topic_id": t, "topic_name": names.get(t, ""), "partitions": sorted(ps)}
                    for t, ps in sorted(a.items())
                ]
            }

        return {
            "error_code": ErrorCode.none,
            "error_message": None,
            "group_id": group_id,
            "group_state": group.state_name,
            "group_epoch": group.group_epoch,
            "assignment_epoch": group.assignment_epoch,
            "assignor_name": group.assignor_name(self.settings),
            "members": [
                {
                    "member_id": m.member_id,
                    "instance_id": m.instance_id,
                    "rack_id": m.rack_id,
                    "member_epoch": m.epoch,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "subscribed_topic_names": list(m.topic_names),
                    "subscribed_topic_regex": m.topic_regex,
                    "assignment": parts(m.state.assigned),
                    "target_assignment": parts(group.target.get(m.member_id, {})),
                    "member_type": 1,
                }
                for m in group.members.values()
            ],
        }

    def listing(self, states: set[str] | None) -> list[dict]:
        out = []
        for gid in sorted(self.known_ids()):
            g = self.group(gid)
            assert g is not None
            if states and g.state_name.lower() not in states:
                continue
            out.append(
                {
                    "group_id": gid,
                    "protocol_type": self.kind,
                    "group_state": g.state_name,
                    "group_type": self.kind,
                }
            )
        return out

    def delete_error(self, group_id: str) -> ErrorCode | None:
        g = self.group(group_id)
        if g is None:
            return ErrorCode.group_id_not_found
        return ErrorCode.non_empty_group if g.members else None

    def describe_classic(self, group_id: str) -> dict:
        """DescribeGroups (the classic API) of a consumer group: its state and members,
        without classic metadata (ConsumerGroupDescribe has the details)."""
        g = self.group(group_id)
        assert g is not None
        return {
            "error_code": ErrorCode.none,
            "group_id": group_id,
            "group_state": g.state_name,
            "protocol_type": "consumer",
            "protocol_data": g.assignor_name(self.settings),
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "member_metadata": b"",
                    "member_assignment": b"",
                }
                for m in g.members.values()
            ],
            "authorized_operations": -2147483648,
        }

    def drop(self, group_id: str) -> None:
        """An empty group converted to a classic one: forgotten, and its record deleted."""
        self.groups.pop(group_id, None)
        self._stored.pop(group_id, None)
        self._write_later(group_id)

    async def forget(self, group_id: str) -> None:
        """DeleteGroups of an empty group, or its conversion to a classic group."""
        if self.groups.pop(group_id, None) is not None or group_id in self._stored:
            await self._write(group_id)

    # --- group configs (DescribeConfigs / IncrementalAlterConfigs on GROUP resources) ---

    def config_defaults(self) -> dict[str, int]:
        return {
            HEARTBEAT: self.settings.heartbeat_interval_ms,
            SESSION: self.settings.session_timeout_ms,
        }

    def configs(self, group_id: str) -> dict[str, str]:
        g = self.group(group_id)
        return dict(g.configs) if g is not None else {}

    async def set_configs(self, group_id: str, changes: dict[str, str | None]) -> None:
        g = self.group(group_id)
        if g is None:
            g = self.groups[group_id] = ConsumerGroup(group_id, config_prefix=self.kind)
        for k, v in changes.items():
            if v is None:
                g.configs.pop(k, None)
            else:
                g.configs[k] = v
        await self._write(group_id)

    def unload(self, group_id: str) -> None:
        """Another broker coordinates the group now (cluster mode)."""
        self.groups.pop(group_id, None)
        self._stored.pop(group_id, None)

    # --- timers -------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        for gid, group in list(self.groups.items()):
            gone = group.expired(now, self.settings)
            for mid, why in gone:
                group.remove(mid, why)
            if gone:
                self._write_later(gid)
