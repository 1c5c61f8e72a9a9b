"""The source cluster of a link, asked through the broker's own Kafka client (broker.peers).

Neither confluent-kafka nor aiokafka hands out the record batches as the broker sent
them (they decode records and drop producer ids, control batches and batch
boundaries), and a mirror must append exactly the source's batches at the source's
offsets. So the link speaks the wire protocol itself, through the same kio schemas
the broker serves with: Metadata for the topics and partition leaders, Fetch for the
raw batches (read_uncommitted: transactions' data and markers both), ListOffsets for
the source's ends, DescribeConfigs for topic configs, and ListGroups, FindCoordinator
and OffsetFetch for the consumer groups' committed offsets. All of it is async; the
only CPU-heavy step (checking the fetched batches' CRCs) runs in a thread, in the
mirror.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from broker.leadership import BrokerAddress
from broker.peer_fetch import READ_UNCOMMITTED, fetch_request
from broker.peers import Peers, PeerSecurity, PeerUnavailable
from protocol.versions import ApiKey

log = logging.getLogger(__name__)

METADATA_VERSION = 12
FETCH_VERSION = 12  # topics by name, flexible
LIST_OFFSETS_VERSION = 7
DESCRIBE_CONFIGS_VERSION = 4
LIST_GROUPS_VERSION = 4
FIND_COORDINATOR_VERSION = 4
OFFSET_FETCH_VERSION = 7

TOPIC_RESOURCE = 2
DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself
LATEST, EARLIEST = -1, -2


class SourceError(Exception):
    """The source cluster could not be reached or refused a request."""


@dataclass
class SourceTopic:
    name: str
    leaders: dict[int, int]  # partition -> leader broker id (-1: none)

    @property
    def partitions(self) -> int:
        return len(self.leaders)


@dataclass
class SourceMetadata:
    brokers: dict[int, BrokerAddress]
    topics: dict[str, SourceTopic]


@dataclass
class FetchedPartition:
    partition: int
    error: int
    high_watermark: int
    log_start_offset: int
    records: bytes


@dataclass
class SourceCluster:
    bootstrap: list[tuple[str, int]]
    peers: Peers
    metadata: SourceMetadata | None = None
    _coordinators: dict[str, BrokerAddress] = field(default_factory=dict)

    @classmethod
    def connect(
        cls, bootstrap: str, client_id: str, security: PeerSecurity | None = None
    ) -> SourceCluster:
        servers = []
        for item in bootstrap.split(","):
            host, _, port = item.strip().rpartition(":")
            servers.append((host.strip("[]"), int(port)))
        return cls(servers, Peers(client_id, security))

    async def close(self) -> None:
        await self.peers.close()

    async def _call(self, peer: BrokerAddress, api: ApiKey, version: int, body: dict):
        try:
            return await self.peers.call(peer, api, version, body)
        except PeerUnavailable as e:
            raise SourceError(str(e)) from None

    async def _any(self, api: ApiKey, version: int, body: dict):
        """A call any broker can answer: the known brokers first, then the bootstrap."""
        candidates = list(self.metadata.brokers.values()) if self.metadata else []
        random.shuffle(candidates)
        candidates += [BrokerAddress(-1 - i, h, p, None) for i, (h, p) in enumerate(self.bootstrap)]
        last: SourceError | None = None
        for peer in candidates:
            try:
                return await self._call(peer, api, version, body)
            except SourceError as e:
                last = e
        raise last or SourceError("no source broker to ask")

    async def refresh(self) -> SourceMetadata:
        """Every topic of the source with its partitions' leaders."""
        r = await self._any(
            ApiKey.METADATA,
            METADATA_VERSION,
            {
                "topics": None,
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False,
            },
        )
        brokers = {b.node_id: BrokerAddress(b.node_id, b.host, b.port, b.rack) for b in r.brokers}
        topics = {}
        for t in r.topics:
            if int(t.error_code) != 0 or t.is_internal or t.name is None:
                continue
            leaders = {p.partition_index: p.leader_id for p in t.partitions}
            topics[t.name] = SourceTopic(t.name, dict(sorted(leaders.items())))
        self.metadata = SourceMetadata(brokers, topics)
        return self.metadata

    def leader(self, topic: str, partition: int) -> BrokerAddress | None:
        if self.metadata is None:
            return None
        t = self.metadata.topics.get(topic)
        leader = t.leaders.get(partition, -1) if t else -1
        return self.metadata.brokers.get(leader)

    async def fetch(
        self,
        peer: BrokerAddress,
        wanted: dict[str, dict[int, int]],
        max_wait_ms: int,
        partition_max_bytes: int,
        max_bytes: int,
    ) -> dict[str, list[FetchedPartition]]:
        """The raw batches of `wanted` (topic -> partition -> offset) from their leader."""
        body = fetch_request(
            wanted,
            max_wait_ms=max_wait_ms,
            partition_max_bytes=partition_max_bytes,
            max_bytes=max_bytes,
            isolation_level=READ_UNCOMMITTED,
        )
        r = await self._call(peer, ApiKey.FETCH, FETCH_VERSION, body)
        if int(r.error_code) != 0:
            raise SourceError(f"fetch from broker {peer.broker_id}: error {int(r.error_code)}")
        return {
            t.topic: [
                FetchedPartition(
                    p.partition_index,
                    int(p.error_code),
                    p.high_watermark,
                    p.log_start_offset,
                    bytes(p.records or b""),
                )
                for p in t.partitions
            ]
            for t in r.responses
        }

    async def list_offsets(
        self, topic: str, partitions: list[int], which: int = LATEST
    ) -> dict[int, int]:
        """The source's end (LATEST) or start (EARLIEST) of each partition, from its leader."""
        by_leader: dict[BrokerAddress, list[int]] = {}
        for p in partitions:
            leader = self.leader(topic, p)
            if leader is None:
                raise SourceError(f"{topic}-{p} has no leader on the source")
            by_leader.setdefault(leader, []).append(p)
        out: dict[int, int] = {}
        for peer, parts in by_leader.items():
            body = {
                "replica_id": -1,
                "isolation_level": 0,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [
                            {"partition_index": p, "current_leader_epoch": -1, "timestamp": which}
                            for p in parts
                        ],
                    }
                ],
            }
            r = await self._call(peer, ApiKey.LIST_OFFSETS, LIST_OFFSETS_VERSION, body)
            for t in r.topics:
                for part in t.partitions:
                    if int(part.error_code) != 0:
                        raise SourceError(
                            f"list offsets of {topic}-{part.partition_index}: "
                            f"error {int(part.error_code)}"
                        )
                    out[part.partition_index] = part.offset
        return out

    async def topic_configs(self, topics: list[str]) -> dict[str, dict[str, str]]:
        """The configs set on each topic itself (not the broker defaults)."""
        if not topics:
            return {}
        body = {
            "resources": [
                {"resource_type": TOPIC_RESOURCE, "resource_name": t, "configuration_keys": None}
                for t in topics
            ],
            "include_synonyms": False,
            "include_documentation": False,
        }
        r = await self._any(ApiKey.DESCRIBE_CONFIGS, DESCRIBE_CONFIGS_VERSION, body)
        out: dict[str, dict[str, str]] = {}
        for res in r.results:
            if int(res.error_code) != 0:
                continue
            out[res.resource_name] = {
                c.name: c.value
                for c in res.configs
                if c.config_source == DYNAMIC_TOPIC_CONFIG and c.value is not None
            }
        return out

    async def groups(self) -> dict[str, str]:
        """Every consumer group of the source (group -> state), asked of each broker."""
        assert self.metadata is not None
        out: dict[str, str] = {}
        for peer in self.metadata.brokers.values():
            r = await self._call(
                peer, ApiKey.LIST_GROUPS, LIST_GROUPS_VERSION, {"states_filter": []}
            )
            for g in r.groups:
                if g.protocol_type in ("consumer", ""):
                    out[g.group_id] = g.group_state
        return out

    async def committed(self, group: str) -> dict[tuple[str, int], int]:
        """A group's committed offsets on the source, from its coordinator."""
        coordinator = self._coordinators.get(group) or await self._find_coordinator(group)
        body = {"group_id": group, "topics": None, "require_stable": False}
        try:
            r = await self._call(coordinator, ApiKey.OFFSET_FETCH, OFFSET_FETCH_VERSION, body)
        except SourceError:
            self._coordinators.pop(group, None)
            raise
        if int(r.error_code) != 0:
            self._coordinators.pop(group, None)
            raise SourceError(f"offsets of group {group}: error {int(r.error_code)}")
        return {
            (t.name, p.partition_index): p.committed_offset
            for t in r.topics
            for p in t.partitions
            if int(p.error_code) == 0 and p.committed_offset >= 0
        }

    async def _find_coordinator(self, group: str) -> BrokerAddress:
        r = await self._any(
            ApiKey.FIND_COORDINATOR,
            FIND_COORDINATOR_VERSION,
            {"key_type": 0, "coordinator_keys": [group]},
        )
        c = r.coordinators[0]
        if int(c.error_code) != 0:
            raise SourceError(f"coordinator of group {group}: error {int(c.error_code)}")
        peer = BrokerAddress(c.node_id, c.host, c.port, None)
        self._coordinators[group] = peer
        return peer
