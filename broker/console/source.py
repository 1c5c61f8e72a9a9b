"""The console's figures, gathered on the event loop.

Offsets, groups, configs and topic changes are asked over the Kafka protocol, through
the broker's own client (broker.peers), of the broker that answers for them: a
partition's leader, a group's coordinator. So the console shows what any Kafka client
would see, and in cluster mode any broker gives the whole cluster's view. The cluster's
shape (brokers, leaders, moves) comes from this broker's leadership view (etcd's, in
cluster mode); WAL and object-store figures are this broker's own.

Every method is a coroutine for the event loop and does no heavy work there: record
batches come back raw, and the HTTP thread decodes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.console.views import BrokerInfo, GroupMember, Moving, PartitionLead, decode_assignment
from broker.peer_fetch import one_partition_fetch
from broker.peers import Peers, PeerUnavailable
from protocol.errors import ErrorCode
from protocol.versions import ApiKey

if TYPE_CHECKING:
    from broker.leadership import BrokerAddress, Leadership
    from broker.log.manager import LogManager
    from broker.replay.core import Query, ReplayResult
    from s3stream.counting_store import CountingStore

log = logging.getLogger(__name__)

LATEST, EARLIEST = -1, -2
TOPIC_RESOURCE = 2
FETCH_MAX_BYTES = 1024 * 1024

# ApiKey -> the version the console speaks
V = {
    ApiKey.LIST_OFFSETS: 7,
    ApiKey.FETCH: 11,
    ApiKey.LIST_GROUPS: 4,
    ApiKey.DESCRIBE_GROUPS: 5,
    ApiKey.OFFSET_FETCH: 8,
    ApiKey.FIND_COORDINATOR: 3,
    ApiKey.CREATE_TOPICS: 5,
    ApiKey.DELETE_TOPICS: 4,
    ApiKey.DESCRIBE_CONFIGS: 4,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: 1,
}


class NotFound(LookupError):
    """No such topic or group."""


class Refused(Exception):
    """A broker refused a change; the message says why, in Kafka's words."""


@dataclass(frozen=True, slots=True)
class Offsets:
    start: int | None
    end: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    batches: bytes  # raw record batches, for the HTTP thread to decode
    high_watermark: int
    log_start: int
    error: str | None = None


def _error(code: Any) -> str | None:
    code = int(code)
    if code == 0:
        return None
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"


class ConsoleSource:
    def __init__(
        self,
        logs: LogManager,
        leadership: Leadership,
        peers: Peers,
        store: CountingStore,
        replay: Callable[[str, Query], Awaitable[ReplayResult]],
        *,
        broker_id: int,
        cluster_mode: bool,
    ) -> None:
        """`peers`: the console's own connections (not shared with the transaction
        markers'); `replay(topic, query)`: the replay API's reader (broker.replay)."""
        self.logs = logs
        self.leadership = leadership
        self.peers = peers
        self.store = store
        self._replay = replay
        self.broker_id = broker_id
        self.cluster_mode = cluster_mode

    # --- the cluster's shape (local views, no requests) ---------------------------------

    def brokers(self) -> list[BrokerInfo]:
        return [BrokerInfo(b.broker_id, b.host, b.port, b.rack) for b in self.leadership.brokers()]

    def cluster(self) -> tuple[list[BrokerInfo], int, list[PartitionLead], list[Moving]]:
        leads = []
        by_id: dict[tuple[bytes, int], tuple[str, int]] = {}
        for name, t in self.logs.topics.items():
            for p in t.partitions:
                leader, epoch = self.leadership.leader_of(p)
                leads.append(PartitionLead(name, p.index, leader, epoch))
                by_id[(p.topic_id, p.index)] = (name, p.index)
        moving = [
            Moving(*by_id[k], m.leader, m.target)
            for k, m in self.leadership.moves().items()
            if k in by_id
        ]
        return self.brokers(), self.leadership.controller_id(), leads, moving

    def topics(self) -> list[tuple[str, int]]:
        return [(n, len(t.partitions)) for n, t in self.logs.topics.items()]

    def partitions_of(self, topic: str) -> int:
        t = self.logs.topics.get(topic)
        if t is None:
            raise NotFound(topic)
        return len(t.partitions)

    def leaders(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        t = self.logs.topics.get(topic)
        if t is None:
            raise NotFound(topic)
        return {i: self.leadership.leader_of(t.partitions[i]) for i in partitions}

    def local_bytes(self, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(WAL bytes, bucket bytes) of the partitions this broker holds."""
        t = self.logs.topics.get(topic)
        out: dict[int, tuple[int, int]] = {}
        if t is None:
            return out
        for i in partitions:
            p = t.partitions[i]
            if not p.held:
                continue
            bucket = sum(row[4] for row in p.object_rows())
            out[i] = (max(p.size_bytes - bucket, 0), bucket)
        return out

    # --- requests -----------------------------------------------------------------------

    def _peer(self, broker_id: int) -> BrokerAddress | None:
        return next((b for b in self.leadership.brokers() if b.broker_id == broker_id), None)

    def _me(self) -> BrokerAddress:
        me = self._peer(self.broker_id)
        if me is None:  # not registered (yet): any live broker answers these
            brokers = self.leadership.brokers()
            if not brokers:
                raise PeerUnavailable("no live broker")
            return brokers[0]
        return me

    async def _call(self, peer: BrokerAddress, api: ApiKey, body: dict) -> Any:
        return await self.peers.call(peer, api, V[api], body)

    async def offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, Offsets]:
        """Log start and end (high watermark) of each partition, by ListOffsets to its
        leader."""
        by_leader: dict[int, list[int]] = {}
        for i, (leader, _) in self.leaders(topic, partitions).items():
            by_leader.setdefault(leader, []).append(i)
        out: dict[int, Offsets] = {}

        async def ask(leader: int, parts: list[int]) -> None:
            peer = self._peer(leader)
            if peer is None:
                for i in parts:
                    out[i] = Offsets(None, None, f"leader {leader} is not live")
                return
            try:
                first, last = await asyncio.gather(
                    self._list_offsets(peer, topic, parts, EARLIEST),
                    self._list_offsets(peer, topic, parts, LATEST),
                )
            except PeerUnavailable as e:
                for i in parts:
                    out[i] = Offsets(None, None, str(e))
                return
            for i in parts:
                (s, es), (e_, ee) = (
                    first.get(i, (None, "no answer")),
                    last.get(i, (None, "no answer")),
                )
                out[i] = Offsets(s, e_, es or ee)

        await asyncio.gather(*(ask(leader, parts) for leader, parts in by_leader.items()))
        return out

    async def _list_offsets(
        self, peer: BrokerAddress, topic: str, parts: Sequence[int], timestamp: int
    ) -> dict[int, tuple[int | None, str | None]]:
        body = {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {
                    "name": topic,
                    "partitions": [{"partition_index": i, "timestamp": timestamp} for i in parts],
                }
            ],
        }
        r = await self._call(peer, ApiKey.LIST_OFFSETS, body)
        out: dict[int, tuple[int | None, str | None]] = {}
        for t in r.topics:
            for p in t.partitions:
                err = _error(p.error_code)
                out[int(p.partition_index)] = (None if err else int(p.offset), err)
        return out

    async def offset_for_time(self, topic: str, partition: int, time_ms: int) -> int | None:
        """The first offset at or after `time_ms`; None if no record is that late."""
        leader, _ = self.leaders(topic, [partition])[partition]
        peer = self._peer(leader)
        if peer is None:
            raise PeerUnavailable(f"leader {leader} is not live")
        got = await self._list_offsets(peer, topic, [partition], time_ms)
        offset, err = got.get(partition, (None, "no answer"))
        if err:
            raise PeerUnavailable(f"ListOffsets: {err}")
        return None if offset is None or offset < 0 else offset

    async def fetch(self, topic: str, partition: int, offset: int) -> Fetched:
        leader, _ = self.leaders(topic, [partition])[partition]
        peer = self._peer(leader)
        if peer is None:
            return Fetched(b"", -1, -1, f"leader {leader} is not live")
        body = one_partition_fetch(topic, partition, offset, FETCH_MAX_BYTES)
        r = await self._call(peer, ApiKey.FETCH, body)
        p = r.responses[0].partitions[0]
        return Fetched(
            bytes(p.records or b""),
            int(p.high_watermark),
            int(p.log_start_offset),
            _error(p.error_code),
        )

    async def configs(self, topic: str) -> list[tuple[str, str | None, bool]]:
        body = {
            "resources": [
                {
                    "resource_type": TOPIC_RESOURCE,
                    "resource_name": topic,
                    "configuration_keys": None,
                }
            ],
            "include_synonyms": False,
            "include_documentation": False,
        }
        r = await self._call(self._me(), ApiKey.DESCRIBE_CONFIGS, body)
        res = r.results[0]
        if _error(res.error_code):
            if int(res.error_code) == ErrorCode.unknown_topic_or_partition:
                raise NotFound(topic)
            raise Refused(res.error_message or _error(res.error_code))
        # config_source 1: set on the topic (DYNAMIC_TOPIC_CONFIG)
        return [(c.name, c.value, int(c.config_source) == 1) for c in res.configs]

    async def create_topic(
        self, name: str, partitions: int, configs: list[tuple[str, str]]
    ) -> None:
        body = {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": -1,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in configs],
                }
            ],
            "timeout": 30_000,
            "validate_only": False,
        }
        r = await self._call(self._me(), ApiKey.CREATE_TOPICS, body)
        t = r.topics[0]
        if _error(t.error_code):
            raise Refused(t.error_message or _error(t.error_code))
        await self._until(lambda: name in self.logs.topics)

    async def delete_topic(self, name: str) -> None:
        r = await self._call(
            self._me(), ApiKey.DELETE_TOPICS, {"topic_names": [name], "timeout": 30_000}
        )
        t = r.responses[0]
        if _error(t.error_code):
            if int(t.error_code) == ErrorCode.unknown_topic_or_partition:
                raise NotFound(name)
            raise Refused(_error(t.error_code))
        await self._until(lambda: name not in self.logs.topics)

    async def alter_config(self, topic: str, key: str, value: str | None) -> None:
        """Set `key` (or with None, delete it: back to the default), IncrementalAlterConfigs."""
        body = {
            "resources": [
                {
                    "resource_type": TOPIC_RESOURCE,
                    "resource_name": topic,
                    "configs": [
                        {
                            "name": key,
                            "config_operation": 0 if value is not None else 1,
                            "value": value,
                        }
                    ],
                }
            ],
            "validate_only": False,
        }
        r = await self._call(self._me(), ApiKey.INCREMENTAL_ALTER_CONFIGS, body)
        res = r.responses[0]
        if _error(res.error_code):
            raise Refused(res.error_message or _error(res.error_code))

    async def _until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait for a change made through another broker (cluster mode) to reach this one."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # --- groups -------------------------------------------------------------------------

    async def groups(self) -> list[dict]:
        """ListGroups of every live broker: each lists the groups it coordinates."""

        async def ask(b: BrokerAddress) -> list[dict]:
            try:
                r = await self._call(b, ApiKey.LIST_GROUPS, {"states_filter": []})
            except PeerUnavailable as e:
                log.warning("console: ListGroups of broker %d: %s", b.broker_id, e)
                return []
            return [
                {
                    "group_id": g.group_id,
                    "state": g.group_state,
                    "protocol_type": g.protocol_type,
                    "coordinator": b.broker_id,
                }
                for g in r.groups
            ]

        lists = await asyncio.gather(*(ask(b) for b in self.leadership.brokers()))
        seen: dict[str, dict] = {}
        for rows in lists:
            for g in rows:
                seen.setdefault(g["group_id"], g)
        return list(seen.values())

    async def coordinator(self, group_id: str) -> BrokerAddress:
        r = await self._call(self._me(), ApiKey.FIND_COORDINATOR, {"key": group_id, "key_type": 0})
        if _error(r.error_code):
            raise PeerUnavailable(f"FindCoordinator: {_error(r.error_code)}")
        peer = self._peer(int(r.node_id))
        if peer is None:
            raise PeerUnavailable(f"coordinator {int(r.node_id)} is not live")
        return peer

    async def group(self, group_id: str) -> dict:
        """DescribeGroups and OffsetFetch of the group's coordinator, and the end of each
        partition it committed (ListOffsets of the partitions' leaders)."""
        coord = await self.coordinator(group_id)
        described, fetched = await asyncio.gather(
            self._call(
                coord,
                ApiKey.DESCRIBE_GROUPS,
                {"groups": [group_id], "include_authorized_operations": False},
            ),
            self._call(
                coord,
                ApiKey.OFFSET_FETCH,
                {"groups": [{"group_id": group_id, "topics": None}], "require_stable": False},
            ),
        )
        g = described.groups[0]
        committed: dict[tuple[str, int], int] = {}
        for t in fetched.groups[0].topics:
            for p in t.partitions:
                if not _error(p.error_code) and int(p.committed_offset) >= 0:
                    committed[(t.name, int(p.partition_index))] = int(p.committed_offset)
        if (g.group_state in ("Dead", "") or _error(g.error_code)) and not committed:
            raise NotFound(group_id)
        members = [
            GroupMember(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                decode_assignment(bytes(m.member_assignment)),
            )
            for m in g.members
        ]
        ends: dict[tuple[str, int], int | None] = {}
        by_topic: dict[str, list[int]] = {}
        for topic, i in committed:
            by_topic.setdefault(topic, []).append(i)
        for topic, parts in by_topic.items():
            try:
                got = await self.offsets(topic, parts)
            except NotFound:
                continue
            for i, o in got.items():
                ends[(topic, i)] = o.end
        return {
            "state": g.group_state,
            "protocol_type": g.protocol_type,
            "protocol": g.protocol_data,
            "coordinator": coord.broker_id,
            "members": members,
            "committed": committed,
            "ends": ends,
        }

    # --- sessions -----------------------------------------------------------------------

    async def replay(self, topic: str, query: Query) -> ReplayResult:
        return await self._replay(topic, query)

    # --- the object store (this broker's) -----------------------------------------------

    def object_figures(self) -> dict[str, float]:
        logs, store = self.logs, self.store
        objects = logs.catalog.objects
        up = logs.uploader
        return {
            "objects": len(objects),
            "object_bytes": sum(o.size for o in objects.values()),
            "uploads": up.uploads,
            "upload_failures": up.failures,
            "upload_backlog_bytes": up.backlog_bytes,
            "compactions": logs.compactor.compactions,
            "objects_deleted": logs.compactor.objects_deleted,
            "puts": store.requests["put"],
            "gets": store.requests["get"],
            "lists": store.requests["list"],
            "deletes": store.requests["delete"],
            "errors": sum(store.errors.values()),
            "bytes_up": store.bytes_up,
            "bytes_down": store.bytes_down,
            "wal_retained_bytes": logs.wal.retained_bytes,
            "block_cache_bytes": logs.block_cache.bytes,
            "tail_cache_bytes": logs.tail.bytes,
        }
