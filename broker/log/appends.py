"""The append path: offsets assigned, batches into the WAL, high watermarks on durability.

An append is synchronous (so order is kept) and only queues the batch; it becomes
readable when it is durable by the broker's contract: synced in the WAL, or (object
mode) uploaded. Then the partition's high watermark moves and its long polls wake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.log.partition import Partition
from broker.log.topics import TopicState
from broker.log.watch import Watchers
from protocol import records
from protocol.record_codec import control_type
from protocol.records import BatchHeader
from s3stream.tail_cache import TailCache
from s3stream.uploader import Uploader
from wal import WriteAheadLog


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    wal_end: int | None  # None: nothing was written (a duplicate)
    log_append_time: int = -1


class AppendPath:
    def __init__(
        self,
        wal: WriteAheadLog,
        tail: TailCache,
        uploader: Uploader,
        watchers: Watchers,
        topic_config: Callable[[TopicState, str], str],
        *,
        object_mode: bool,
        max_backlog_bytes: int,
    ) -> None:
        self.wal = wal
        self.tail = tail
        self.uploader = uploader
        self.watchers = watchers
        self._topic_config = topic_config
        self.object_mode = object_mode
        self.max_backlog_bytes = max_backlog_bytes
        self._unsynced: set[Partition] = set()  # partitions with appends not yet durable

    @property
    def backlog_full(self) -> bool:
        return self.uploader.backlog_bytes >= self.max_backlog_bytes

    def wait_acked(self, wal_end: int) -> asyncio.Future[None]:
        """Resolved when an append ending at `wal_end` is durable by the broker's
        contract: synced in the WAL, or (object mode) uploaded."""
        if self.object_mode:
            return self.uploader.wait_uploaded(wal_end)
        return self.wal.wait_durable(wal_end)

    def append(self, topic: TopicState, p: Partition, batch: bytes, h: BatchHeader) -> AppendResult:
        """Assign offsets and queue the batch in the WAL; synchronous, so order is kept."""
        base_offset = p.log_end_offset
        append_time = -1
        if self._topic_config(topic, "message.timestamp.type") == "LogAppendTime":
            append_time = int(time.time() * 1000)
            batch = records.with_log_append_time(batch, append_time)
            h = records.parse_header(batch)
        batch = records.with_base_offset(batch, base_offset, p.leader_epoch)
        position, wal_end = self.wal.append(p.topic_id, p.index, p.leader_epoch, base_offset, batch)
        control = control_type(batch) if h.is_control else None
        p.record_append(h, base_offset, position, wal_end, control)
        self._unsynced.add(p)
        self.tail.put(p.tail, base_offset, batch)
        return AppendResult(base_offset, wal_end, append_time)

    def append_at(self, p: Partition, batch: bytes | memoryview, h: BatchHeader) -> AppendResult:
        """Queue another cluster's batch at its own base offset (a link's mirror): the
        batch is kept as it came (timestamps, producer ids, control batches; only the
        leader epoch is this log's), and offsets it skips (the source's compaction or
        retention) stay a gap. Refused (ValueError) below the log end."""
        base_offset = h.base_offset
        if base_offset < p.log_end_offset:
            raise ValueError(f"{p}: batch at {base_offset} is below the log end {p.log_end_offset}")
        if not len(p.batches) and base_offset > p.log_start_offset:
            p.start_at(base_offset)  # the source's log starts later: so does the mirror's
        batch = records.with_base_offset(batch, base_offset, p.leader_epoch)
        position, wal_end = self.wal.append(p.topic_id, p.index, p.leader_epoch, base_offset, batch)
        control = control_type(batch) if h.is_control else None
        p.record_append(h, base_offset, position, wal_end, control)
        self._unsynced.add(p)
        self.tail.put(p.tail, base_offset, batch)
        return AppendResult(base_offset, wal_end)

    def awaits_durability(self, p: Partition) -> None:
        """`p` holds appends not yet durable (recovery, in object mode)."""
        self._unsynced.add(p)

    def on_durable(self, position: int) -> None:
        """The log is durable up to WAL `position`: high watermarks move there."""
        done = []
        for p in self._unsynced:
            if p.on_durable(position):
                self.watchers.wake(p)
            if not p.has_unsynced:
                done.append(p)
        for p in done:
            self._unsynced.discard(p)

    def forget(self, p: Partition) -> None:
        """Stop tracking a partition this broker lets go of: its cached batches, its
        appends waiting to be durable; its long polls wake to find it gone."""
        self.tail.drop(p.tail)
        self._unsynced.discard(p)
        self.watchers.wake(p)
