"""Committed offsets, kept in the internal `__consumer_offsets` topic like any other data.

A commit is a batch of records appended through the same WAL as client data and
acknowledged after the same sync; the in-memory table is rebuilt at start by replaying
that topic. When the log moves to object storage, committed offsets move with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import replace

import msgpack

from broker.groups.committed import (
    CONSUMER_GROUP_KEY,
    GROUP_KEY,
    OFFSET_KEY,
    OFFSETS_TOPIC,
    SHARE_GROUP_KEY,
    SHARE_STATE_KEY,
    CommittedOffset,
    CommittedOffsets,
    TopicPartitionKey,
)
from broker.log.manager import LogManager
from broker.log.topics import TopicState
from protocol import records
from protocol.record_codec import encode_batch

log = logging.getLogger(__name__)

Entry = tuple[bytes, bytes | None]  # record key, value (None: a tombstone)


def _offset_record(group_id: str, key: TopicPartitionKey, c: CommittedOffset) -> Entry:
    return (
        msgpack.packb([OFFSET_KEY, group_id, *key]),
        msgpack.packb([c.offset, c.leader_epoch, c.metadata, c.commit_timestamp]),
    )


def _consumer_group_record(group_id: str, state: dict | None) -> Entry:
    return (
        msgpack.packb([CONSUMER_GROUP_KEY, group_id]),
        None if state is None else msgpack.packb(state),
    )


def _share_group_record(group_id: str, state: dict | None) -> Entry:
    return (
        msgpack.packb([SHARE_GROUP_KEY, group_id]),
        None if state is None else msgpack.packb(state),
    )


def _share_state_record(group_id: str, key: tuple[bytes, int], state: dict | None) -> Entry:
    return (
        msgpack.packb([SHARE_STATE_KEY, group_id, *key]),
        None if state is None else msgpack.packb(state),
    )


def _type_record(group_id: str, protocol_type: str, state: dict | None = None) -> Entry:
    return msgpack.packb([GROUP_KEY, group_id]), msgpack.packb([protocol_type, state])


class CommitFenced(Exception):
    """The commit's offsets partition moved to another broker without a hand-off."""


class CommitTimedOut(Exception):
    """The commit was not durable within offsets.commit.timeout.ms; it may still be
    applied later (as in Kafka, the client does not know and retries)."""


COMMIT_TIMEOUT_MS = 5000  # Kafka's offsets.commit.timeout.ms


class OffsetStore:
    def __init__(
        self,
        logs: LogManager,
        committed: CommittedOffsets,
        partitions: int,
        may_ack: Callable[[], bool],
    ) -> None:
        """`committed` is the table the log replays `__consumer_offsets` into."""
        self.logs = logs
        self.committed = committed
        # cluster mode: whether this broker's lease surely holds (Leadership.may_ack)
        self.may_ack = may_ack
        self.partitions = partitions
        self.offsets = committed.offsets
        self.group_types = committed.group_types
        self.consumer_groups = committed.consumer_groups
        self.share_groups = committed.share_groups
        self.share_states = committed.share_states
        self.classic_groups = committed.classic_groups
        self._inflight: dict[int, int] = {}  # offsets partition -> writes not yet applied

    async def ensure_topic(self) -> TopicState:
        topic = self.logs.topics.get(OFFSETS_TOPIC)
        if topic is None:
            try:
                topic = await self.logs.create_topic(
                    # compacted as in Kafka: housekeeping keeps the latest record per key
                    OFFSETS_TOPIC,
                    self.partitions,
                    {"cleanup.policy": "compact"},
                    internal=True,
                )
            except FileExistsError:  # another broker of the cluster was first
                topic = self.logs.topics[OFFSETS_TOPIC]
        return topic

    def groups_of(self, index: int) -> set[str]:
        """The groups whose offsets (and coordination) live in offsets partition `index`."""
        known = {*self.offsets, *self.group_types, *self.consumer_groups, *self.share_groups}
        return {g for g in known if self.partition_for(g) == index}

    def unload(self, index: int) -> set[str]:
        """Forget the groups of a partition another broker leads now; returns them."""
        groups = self.groups_of(index)
        for g in groups:
            self.offsets.pop(g, None)
            self.group_types.pop(g, None)
            self.consumer_groups.pop(g, None)
            self.classic_groups.pop(g, None)
            self.share_groups.pop(g, None)
            self.share_states.pop(g, None)
        for staged in self.committed.pending.values():
            for g in groups:
                staged.pop(g, None)
        return groups

    def partition_for(self, group_id: str) -> int:
        """Which partition of the offsets topic holds a group (and, later, who coordinates it)."""
        count = len(self.logs.topics[OFFSETS_TOPIC].partitions)
        return zlib.crc32(group_id.encode()) % count

    # --- writes -----------------------------------------------------------------------

    async def _write(
        self,
        group_id: str,
        entries: list[tuple[bytes, bytes | None]],
        timeout_ms: int | None = None,
        producer: tuple[int, int] | None = None,
    ) -> None:
        """Append records for one group and wait until they are durable, then apply them
        (or, for a transaction's `producer` (id, epoch), stage them until its marker).
        Raises CommitFenced if the partition was taken away meanwhile (cluster mode)."""
        topic = await self.ensure_topic()
        index = self.partition_for(group_id)
        p = topic.partitions[index]
        pid, epoch = producer or (-1, -1)
        batch = encode_batch(
            [v for _, v in entries],
            keys=[k for k, _ in entries],
            producer_id=pid,
            producer_epoch=epoch,
            attributes=records.TRANSACTIONAL if producer else 0,
        )
        appended = self.logs.append(topic, p, batch, records.validate(batch))
        assert appended.wal_end is not None
        self._inflight[index] = self._inflight.get(index, 0) + 1
        fenced = p.fenced

        async def apply_when_durable() -> None:
            try:
                await self.logs.wait_acked(appended.wal_end)
                if p.fenced != fenced or not self.may_ack():
                    raise CommitFenced(f"{p} was taken over before the commit was durable")
                for key, value in entries:
                    if producer:
                        self.committed.stage(pid, key, value)
                    else:
                        self.committed.apply(key, value)
            finally:
                self._inflight[index] -= 1

        # its own task: a client that leaves, or a commit that times out, never leaves a
        # durable commit unapplied
        durable = asyncio.ensure_future(apply_when_durable())
        durable.add_done_callback(_outcome_seen)
        try:
            timeout = None if timeout_ms is None else timeout_ms / 1000
            await asyncio.wait_for(asyncio.shield(durable), timeout)
        except TimeoutError:
            raise CommitTimedOut(f"{p}: not durable within {timeout_ms} ms") from None

    def _records_of(self, group_id: str) -> list[tuple[bytes, bytes | None]]:
        """The records that recreate a group's current state."""
        out = [
            _offset_record(group_id, key, c) for key, c in self.offsets.get(group_id, {}).items()
        ]
        if group_id in self.group_types:
            state = self.classic_groups.get(group_id)
            out.append(_type_record(group_id, self.group_types[group_id], state))
        if group_id in self.consumer_groups:
            out.append(_consumer_group_record(group_id, self.consumer_groups[group_id]))
        if group_id in self.share_groups:
            out.append(_share_group_record(group_id, self.share_groups[group_id]))
        for key, state in self.share_states.get(group_id, {}).items():
            out.append(_share_state_record(group_id, key, state))
        return out

    async def compact(self, min_batches: int = 64) -> None:
        """Rewrite each busy offsets partition as one snapshot of its live records and
        start the partition there, so old commits stop pinning WAL segments."""
        topic = self.logs.topics.get(OFFSETS_TOPIC)
        if topic is None:
            return
        segments = self.logs.wal.segment_bases
        for p in topic.partitions:
            if not p.leading:
                continue  # another broker's (cluster mode)
            first = p.first_position
            # busy partitions, and quiet ones whose old commits pin the oldest WAL segment
            pins = first is not None and len(segments) > 1 and first < segments[1]
            if not (len(p.batches) >= min_batches or pins) or self._inflight.get(p.index):
                continue
            if any(self.partition_for(g) == p.index for g in self.committed.pending_groups()):
                continue  # staged transactional offsets live only in the log until the marker
            groups = {
                *self.offsets,
                *self.group_types,
                *self.consumer_groups,
                *self.share_groups,
                *self.share_states,
            }
            entries = [
                r
                for g in sorted(groups)
                if self.partition_for(g) == p.index
                for r in self._records_of(g)
            ]
            # no await between reading the table and appending: the snapshot is exact
            if entries:
                batch = encode_batch([v for _, v in entries], keys=[k for k, _ in entries])
                appended = self.logs.append(topic, p, batch, records.validate(batch))
                start = appended.base_offset
                assert appended.wal_end is not None
                await self.logs.wait_acked(appended.wal_end)
            else:
                start = p.log_end_offset
            await self.logs.move_log_starts([(topic, p, start)])
            log.info(
                "compacted %s-%d: %d live records from offset %d",
                OFFSETS_TOPIC,
                p.index,
                len(entries),
                start,
            )

    async def commit(
        self,
        group_id: str,
        offsets: dict[TopicPartitionKey, CommittedOffset],
        protocol_type: str | None = None,
    ) -> None:
        """Store offsets; a group's protocol type rides along the first time it is seen,
        so the group is still a consumer group after its members leave or a restart."""
        now = int(time.time() * 1000)
        entries = [
            _offset_record(
                group_id, key, c if c.commit_timestamp else replace(c, commit_timestamp=now)
            )
            for key, c in offsets.items()
        ]
        if protocol_type and self.group_types.get(group_id) != protocol_type:
            entries.append(_type_record(group_id, protocol_type, self.classic_groups.get(group_id)))
        await self._write(group_id, entries, COMMIT_TIMEOUT_MS)

    async def store_consumer_group(self, group_id: str, state: dict | None) -> None:
        """A KIP-848 group's state (None: the group is gone), durable before it returns."""
        await self._write(group_id, [_consumer_group_record(group_id, state)], COMMIT_TIMEOUT_MS)

    async def store_share_group(self, group_id: str, state: dict | None) -> None:
        """A share group's membership and configs (None: the group is gone)."""
        await self._write(group_id, [_share_group_record(group_id, state)], COMMIT_TIMEOUT_MS)

    async def store_share_states(
        self, group_id: str, states: dict[tuple[bytes, int], dict | None]
    ) -> None:
        """Share-partition states of one group (None: deleted), durable before it returns."""
        entries = [_share_state_record(group_id, k, v) for k, v in states.items()]
        await self._write(group_id, entries, COMMIT_TIMEOUT_MS)

    async def store_classic_group(
        self, group_id: str, protocol_type: str, state: dict | None
    ) -> None:
        """A classic group's type and state (broker.groups.classic_record)."""
        if state is None:
            self.classic_groups.pop(group_id, None)
        else:
            self.classic_groups[group_id] = state
        await self._write(
            group_id, [_type_record(group_id, protocol_type, state)], COMMIT_TIMEOUT_MS
        )

    async def expire_offsets(
        self, retention_ms: int, emptied_at_ms: Callable[[str], int | None], now_ms: int
    ) -> list[str]:
        """offsets.retention.minutes: the offsets of a group without members (emptied_at_ms
        answers None for a group with members) go once its newest commit and its becoming
        empty are both older than the retention; the groups whose offsets went."""
        expired = []
        topic = self.logs.topics.get(OFFSETS_TOPIC)
        if topic is None:
            return expired
        pending = self.committed.pending_groups()
        for group_id, table in list(self.offsets.items()):
            if not table or group_id in pending:
                continue
            if not topic.partitions[self.partition_for(group_id)].leading:
                continue
            emptied = emptied_at_ms(group_id)
            if emptied is None:
                continue
            newest = max(c.commit_timestamp for c in table.values())
            if now_ms - max(newest, emptied) >= retention_ms:
                await self.delete(group_id, list(table))
                expired.append(group_id)
        if expired:
            log.info("offsets of %d empty groups expired: %s", len(expired), sorted(expired)[:10])
        return expired

    async def txn_commit(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: dict[TopicPartitionKey, CommittedOffset],
    ) -> None:
        """TxnOffsetCommit: the offsets are written now and become the group's when the
        transaction commits (its marker reaches this partition; see complete_txn)."""
        now = int(time.time() * 1000)
        entries = [
            _offset_record(group_id, key, replace(c, commit_timestamp=now))
            for key, c in offsets.items()
        ]
        await self._write(group_id, entries, COMMIT_TIMEOUT_MS, (producer_id, producer_epoch))

    def complete_txn(self, producer_id: int, commit: bool) -> None:
        """A transaction marker is durable in an offsets partition this broker leads."""
        self.committed.complete(producer_id, commit)

    def is_pending(self, group_id: str, topic: str, partition: int) -> bool:
        return self.committed.is_pending(group_id, (topic, partition))

    async def delete(self, group_id: str, keys: list[TopicPartitionKey]) -> None:
        present = [k for k in keys if k in self.offsets.get(group_id, {})]
        if present:
            await self._write(
                group_id, [(msgpack.packb([OFFSET_KEY, group_id, t, p]), None) for t, p in present]
            )

    async def delete_group(self, group_id: str) -> None:
        await self.delete(group_id, list(self.offsets.get(group_id, {})))
        if group_id in self.group_types:
            await self._write(group_id, [(msgpack.packb([GROUP_KEY, group_id]), None)])

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


def _outcome_seen(write: asyncio.Future) -> None:
    """A commit's failure is answered to its client; one nobody waits for any more (it
    timed out, or the client left) is only logged."""
    if not write.cancelled() and write.exception() is not None:
        log.info("offset commit not applied: %s", write.exception())
