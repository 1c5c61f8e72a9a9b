"""Where a share-partition's state is kept, for the partition's leader (KIP-932's
persister): in the group's `__consumer_offsets` partition, at the group's coordinator.

Kafka keeps share-partition state at the partition leader and persists it through the
share coordinator (WriteShareGroupState / ReadShareGroupState to `__share_group_state`).
Strata does the same with the group coordinator it already has: the leader of a topic
partition serves ShareFetch and ShareAcknowledge (clients send them there, as to Kafka)
and holds the in-flight states; each change it must keep is written with
WriteShareGroupState to the broker coordinating the group, which appends it to the
group's offsets partition (key kind 5) and answers once durable. When this broker is the
coordinator too, the write is local. A broker that takes a partition over (a new leader
epoch) reads the state back with ReadShareGroupState before serving it.

Why this rather than a topic of its own: the offsets partition already moves with its
coordinator, is replayed by the broker taking it over and compacted with the rest, so a
coordinator move loses nothing durable; a separate compacted topic would have leaders of
its own, and so need the same peer path. Fencing: every record carries the leader epoch
of the writer, and the coordinator refuses a write older than the one it holds
(FENCED_LEADER_EPOCH), so a deposed leader cannot overwrite its successor's state.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping

from broker.leadership import BrokerAddress
from broker.peers import PeerUnavailable
from protocol.errors import ErrorCode
from protocol.versions import ApiKey

log = logging.getLogger(__name__)

Key = tuple[bytes, int]
GROUP = 32  # DescribeConfigs resource type
RETRY_S = 20.0  # a coordinator move (lease expiry, replay) fits well within it


class StateFenced(Exception):
    """A newer leader of the partition has written its state: this broker lost it."""


class StateUnavailable(Exception):
    """The group's coordinator could not be reached in time."""


def to_wire(key: Key, record: dict) -> dict:
    """A share-partition record (SharePartition.to_record) as WriteShareGroupState's."""
    return {
        "partition": key[1],
        "state_epoch": record.get("epoch", 0),
        "leader_epoch": record.get("le", -1),
        "start_offset": record["start"],
        "state_batches": [
            {"first_offset": a, "last_offset": b, "delivery_state": s, "delivery_count": c}
            for a, b, s, c in record["runs"]
        ],
    }


def from_wire(p) -> dict:
    runs = [
        [b.first_offset, b.last_offset, b.delivery_state, b.delivery_count] for b in p.state_batches
    ]
    end = max([p.start_offset, *(r[1] + 1 for r in runs)])
    return {
        "v": 1,
        "start": p.start_offset,
        "end": end,
        "epoch": p.state_epoch,
        "le": getattr(p, "leader_epoch", -1),
        "runs": runs,
    }


def fenced(stored: dict | None, record: dict | None) -> bool:
    """Whether a write of `record` over `stored` comes from a deposed leader."""
    return stored is not None and record is not None and stored.get("le", -1) > record.get("le", -1)


class SharePersister:
    def __init__(
        self,
        coordinates: Callable[[str], bool],
        coordinator_of: Callable[[str], BrokerAddress | None],
        call: Callable[[BrokerAddress, int, int, dict], Awaitable],
        store: Callable[[str, dict[Key, dict | None]], Awaitable[None]],
        stored: MutableMapping[str, dict[Key, dict]],
    ) -> None:
        self._coordinates = coordinates
        self._coordinator_of = coordinator_of
        self._call = call
        self._store = store
        self._stored = stored

    async def write(self, group_id: str, records: dict[Key, dict | None]) -> None:
        """Durable when it returns; StateFenced, StateUnavailable otherwise."""
        deadline = time.monotonic() + RETRY_S
        retried = False
        while True:
            if self._coordinates(group_id):
                await self.write_local(group_id, records)
                return
            error = await self._remote_write(group_id, records)
            if error == ErrorCode.none:
                return
            if error == ErrorCode.fenced_leader_epoch:
                raise StateFenced(group_id)
            if time.monotonic() > deadline:
                raise StateUnavailable(f"share group {group_id}: {error!r}")
            if not retried:
                log.info("share group %s: state write: %s, retrying", group_id, error.name)
                retried = True
            await asyncio.sleep(0.25)

    async def write_local(self, group_id: str, records: dict[Key, dict | None]) -> None:
        table = self._stored.get(group_id, {})
        if any(fenced(table.get(k), r) for k, r in records.items()):
            raise StateFenced(group_id)
        await self._store(group_id, records)

    async def _remote_write(self, group_id: str, records: dict[Key, dict | None]) -> ErrorCode:
        peer = self._coordinator_of(group_id)
        if peer is None:
            return ErrorCode.coordinator_not_available
        live = {k: r for k, r in records.items() if r is not None}
        by_topic: dict[bytes, list[dict]] = {}
        for key, record in live.items():
            by_topic.setdefault(key[0], []).append(to_wire(key, record))
        body = {
            "group_id": group_id,
            "topics": [
                {"topic_id": uuid.UUID(bytes=t), "partitions": ps} for t, ps in by_topic.items()
            ],
        }
        try:
            answer = await self._call(peer, ApiKey.WRITE_SHARE_GROUP_STATE, 0, body)
        except PeerUnavailable as e:
            log.debug("share group %s: state write to broker %s: %s", group_id, peer.broker_id, e)
            return ErrorCode.coordinator_not_available
        for t in answer.results:
            for p in t.partitions:
                if p.error_code != ErrorCode.none:
                    return ErrorCode(p.error_code)
        return ErrorCode.none

    async def read(self, group_id: str, topic_id: uuid.UUID, index: int) -> dict | None:
        """The stored state of a share-partition (None: none yet)."""
        deadline = time.monotonic() + RETRY_S
        while True:
            if self._coordinates(group_id):
                return self._stored.get(group_id, {}).get((topic_id.bytes, index))
            peer = self._coordinator_of(group_id)
            error = ErrorCode.coordinator_not_available
            if peer is not None:
                body = {
                    "group_id": group_id,
                    "topics": [
                        {
                            "topic_id": topic_id,
                            "partitions": [{"partition": index, "leader_epoch": -1}],
                        }
                    ],
                }
                try:
                    answer = await self._call(peer, ApiKey.READ_SHARE_GROUP_STATE, 0, body)
                    p = answer.results[0].partitions[0]
                    if p.error_code == ErrorCode.none:
                        return None if p.start_offset < 0 else from_wire(p)
                    error = ErrorCode(p.error_code)
                except PeerUnavailable as e:
                    log.debug("share group %s: state read: %s", group_id, e)
            if time.monotonic() > deadline:
                raise StateUnavailable(f"share group {group_id}: {error!r}")
            await asyncio.sleep(0.25)

    async def configs(self, group_id: str) -> dict[str, str] | None:
        """The group's share.* configs as its coordinator holds them (None: this broker is
        the coordinator, or it could not be asked now)."""
        if self._coordinates(group_id):
            return None
        peer = self._coordinator_of(group_id)
        if peer is None:
            return None
        body = {
            "resources": [
                {"resource_type": GROUP, "resource_name": group_id, "configuration_keys": None}
            ],
            "include_synonyms": False,
            "include_documentation": False,
        }
        try:
            answer = await self._call(peer, ApiKey.DESCRIBE_CONFIGS, 4, body)
        except PeerUnavailable as e:
            log.info("share group %s: configs not read: %s", group_id, e)
            return None
        r = answer.results[0]
        if r.error_code != ErrorCode.none:
            return None
        return {c.name: c.value for c in r.configs if c.name.startswith("share.") and c.value}
