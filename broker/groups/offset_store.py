"""Committed offsets, kept in the internal `__consumer_offsets` topic like any other data.

A commit is a batch of records appended through the same WAL as client data and
acknowledged after the same sync; the in-memory table is rebuilt at start by replaying
that topic. When the log moves to object storage, committed offsets move with it.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

import msgpack

from broker.log_manager import LogManager, TopicState
from protocol import records
from protocol.record_codec import decode_records, encode_batch

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
_OFFSET_KEY = 1  # record key [1, group, topic, partition]: value [offset, epoch, metadata, ts]
_GROUP_KEY = 2  # record key [2, group]: value [protocol type]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp: int


TopicPartitionKey = tuple[str, int]


class OffsetStore:
    def __init__(self, logs: LogManager, partitions: int) -> None:
        self.logs = logs
        self.partitions = partitions
        self.offsets: dict[str, dict[TopicPartitionKey, CommittedOffset]] = {}
        self.group_types: dict[str, str] = {}  # protocol type of groups that had members
        logs.internal_replayers[OFFSETS_TOPIC] = self._replay

    async def ensure_topic(self) -> TopicState:
        topic = self.logs.topics.get(OFFSETS_TOPIC)
        if topic is None:
            topic = await self.logs.create_topic(
                OFFSETS_TOPIC, self.partitions, {"cleanup.policy": "delete"}, internal=True
            )
        return topic

    def partition_for(self, group_id: str) -> int:
        """Which partition of the offsets topic holds a group (and, later, who coordinates it)."""
        count = len(self.logs.topics[OFFSETS_TOPIC].partitions)
        return zlib.crc32(group_id.encode()) % count

    # --- replay -----------------------------------------------------------------------

    def _replay(self, batch: bytes) -> None:
        try:
            for r in decode_records(batch):
                self._apply(r.key, r.value)
        except Exception as e:
            log.error("skipping an unreadable batch in %s: %r", OFFSETS_TOPIC, e)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        kind, group, *rest = msgpack.unpackb(key)
        if kind == _GROUP_KEY:
            if value is None:
                self.group_types.pop(group, None)
            else:
                (self.group_types[group],) = msgpack.unpackb(value)
            return
        if kind != _OFFSET_KEY:
            return
        topic, partition = rest
        table = self.offsets.setdefault(group, {})
        if value is None:
            table.pop((topic, partition), None)
            if not table:
                del self.offsets[group]
        else:
            offset, epoch, metadata, ts = msgpack.unpackb(value)
            table[(topic, partition)] = CommittedOffset(offset, epoch, metadata, ts)

    # --- writes -----------------------------------------------------------------------

    async def _write(self, group_id: str, entries: list[tuple[bytes, bytes | None]]) -> None:
        """Append records for one group and wait until they are durable, then apply them."""
        topic = await self.ensure_topic()
        p = topic.partitions[self.partition_for(group_id)]
        batch = encode_batch([v for _, v in entries], keys=[k for k, _ in entries])
        h = records.validate(batch)
        appended = self.logs.append(topic, p, batch, h)
        assert appended.wal_end is not None
        await self.logs.wal.wait_durable(appended.wal_end)
        for key, value in entries:
            self._apply(key, value)

    async def commit(
        self,
        group_id: str,
        offsets: dict[TopicPartitionKey, CommittedOffset],
        protocol_type: str | None = None,
    ) -> None:
        """Store offsets; a group's protocol type rides along the first time it is seen,
        so the group is still a consumer group after its members leave or a restart."""
        now = int(time.time() * 1000)
        entries: list[tuple[bytes, bytes | None]] = [
            (
                msgpack.packb([_OFFSET_KEY, group_id, topic, partition]),
                msgpack.packb([c.offset, c.leader_epoch, c.metadata, c.commit_timestamp or now]),
            )
            for (topic, partition), c in offsets.items()
        ]
        if protocol_type and self.group_types.get(group_id) != protocol_type:
            entries.append((msgpack.packb([_GROUP_KEY, group_id]), msgpack.packb([protocol_type])))
        await self._write(group_id, entries)

    async def delete(self, group_id: str, keys: list[TopicPartitionKey]) -> None:
        present = [k for k in keys if k in self.offsets.get(group_id, {})]
        if present:
            await self._write(
                group_id, [(msgpack.packb([_OFFSET_KEY, group_id, t, p]), None) for t, p in present]
            )

    async def delete_group(self, group_id: str) -> None:
        await self.delete(group_id, list(self.offsets.get(group_id, {})))
        if group_id in self.group_types:
            await self._write(group_id, [(msgpack.packb([_GROUP_KEY, group_id]), None)])

    async def forget_topic(self, topic: str) -> None:
        """Drop every group's offsets for a deleted topic, so a new topic of the same
        name starts from its own beginning, as in Kafka."""
        for group_id, table in list(self.offsets.items()):
            keys = [k for k in table if k[0] == topic]
            if keys:
                await self.delete(group_id, keys)

    # --- reads ------------------------------------------------------------------------

    def get(self, group_id: str, topic: str, partition: int) -> CommittedOffset | None:
        return self.offsets.get(group_id, {}).get((topic, partition))

    def of_group(self, group_id: str) -> dict[TopicPartitionKey, CommittedOffset]:
        return dict(self.offsets.get(group_id, {}))
