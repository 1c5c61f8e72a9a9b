"""Retention and upkeep: log start offsets moved forward, objects merged and deleted,
WAL segments nothing needs any more trimmed."""

from __future__ import annotations

import logging
import time

from broker.log.cleaner import LogCleaner
from broker.log.partition import Partition
from broker.log.topics import TopicRegistry, TopicState
from s3stream.compaction import Compactor
from wal import WriteAheadLog

log = logging.getLogger(__name__)


class Retention:
    def __init__(
        self,
        registry: TopicRegistry,
        wal: WriteAheadLog,
        compactor: Compactor,
        cleaner: LogCleaner,
    ) -> None:
        self.registry = registry
        self.wal = wal
        self.compactor = compactor
        self.cleaner = cleaner
        self.producer_id_expiration_ms = 86_400_000  # Kafka's producer.id.expiration.ms

    async def delete_records(self, topic: TopicState, p: Partition, offset: int) -> None:
        """Move the log start offset forward (DeleteRecords)."""
        await self.move_log_starts([(topic, p, offset)])

    async def move_log_starts(self, moves: list[tuple[TopicState, Partition, int]]) -> None:
        """Persist new log start offsets in one metadata write, then apply them and trim
        the WAL segments that no partition needs any more."""
        meta = self.registry.meta

        def change() -> bool:
            # decided inside the change: a concurrent move may have gone further
            # meanwhile, and the persisted start must never go back (offsets reused)
            moved = False
            for t, p, offset in moves:
                rec = meta.topics.get(t.name)
                if rec is not None and offset > rec.log_start.get(p.index, 0):
                    rec.log_start[p.index] = offset
                    moved = True
            return moved

        moves = [(t, p, o) for t, p, o in moves if o > p.log_start_offset]
        if not moves:
            return
        await self.registry.change(change)
        for _, p, offset in moves:
            if p.log_start_offset >= offset:
                log.info("%s: log start offset moved to %d", p, offset)
        self.trim_wal()

    def trim_wal(self) -> None:
        """Delete WAL segments holding only batches that are uploaded, before their
        partitions' log start, or of deleted topics."""
        floor = self.wal.durable_position
        for state in self.registry.topics.values():
            for p in state.partitions:
                first = p.first_position
                if first is not None:
                    floor = min(floor, first)
        self.wal.trim(floor)

    async def maintain_objects(self) -> None:
        """Log cleaning of compacted topics, compaction of small objects, then deletion
        of objects nothing needs (housekeeping). One after the other: a clean and an
        object compaction must not both rewrite a partition's entries at once."""
        for _ in range(4):  # the dirtiest partitions first, a few per round
            if not await self.cleaner.clean_once():
                break
        for _ in range(4):  # a few runs per round, so a backlog shrinks steadily
            merged = await self.compactor.compact_once()
            await self.compactor.collect()  # retires the sources before the next pick
            if not merged:
                break
        self.trim_wal()

    async def enforce_retention(self, now_ms: int | None = None) -> None:
        """retention.ms and retention.bytes, batch by batch, for every non-internal topic
        whose cleanup.policy has `delete` (as in Kafka, a `compact`-only topic keeps
        everything that compaction does not replace)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        moves = []
        for state in list(self.registry.topics.values()):
            if state.record.internal:
                continue
            policy = self.registry.topic_config(state, "cleanup.policy")
            deletes = "delete" in (part.strip() for part in policy.split(","))
            retention_ms = int(self.registry.topic_config(state, "retention.ms"))
            retention_bytes = int(self.registry.topic_config(state, "retention.bytes"))
            for p in state.partitions:
                if not p.leading:
                    continue
                p.producers.expire(now_ms, self.producer_id_expiration_ms)
                n = _expired_batches(p, now_ms, retention_ms, retention_bytes) if deletes else 0
                if n:
                    moves.append((state, p, p.batches.last_offsets[n - 1] + 1))
        await self.move_log_starts(moves)


def _expired_batches(p: Partition, now_ms: int, retention_ms: int, retention_bytes: int) -> int:
    """How many of the partition's oldest batches retention deletes (never any at or
    past the high watermark)."""
    idx, n, size = p.batches, 0, p.size_bytes
    while n < len(idx) and idx.last_offsets[n] < p.high_watermark:
        expired = retention_ms >= 0 and idx.max_timestamps[n] < now_ms - retention_ms
        too_big = retention_bytes >= 0 and size > retention_bytes
        if not (expired or too_big):
            break
        size -= idx.sizes[n]
        n += 1
    return n
