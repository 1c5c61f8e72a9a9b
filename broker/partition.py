"""One partition's log state: offsets, high watermark, batch index, producer state.

Offsets are assigned when a batch is appended to the WAL; the high watermark moves
only when the WAL reports the entry durable, and reads never go past it, so a
consumer never sees a record that a crash could take back.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from dataclasses import dataclass

from broker.producer_state import ProducerStateTable
from protocol.records import BatchHeader


@dataclass(frozen=True, slots=True)
class BatchRef:
    """Where one batch lives: its offsets, its size, and its position in the cold store."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    position: int
    size: int


class BatchIndex:
    """Compact per-batch index (about 40 bytes a batch), sorted by offset."""

    def __init__(self) -> None:
        self.base_offsets = array("q")
        self.last_offsets = array("q")
        self.max_timestamps = array("q")
        self.positions = array("q")
        self.sizes = array("l")

    def __len__(self) -> int:
        return len(self.base_offsets)

    def add(
        self, base_offset: int, last_offset: int, max_ts: int, position: int, size: int
    ) -> None:
        self.base_offsets.append(base_offset)
        self.last_offsets.append(last_offset)
        self.max_timestamps.append(max_ts)
        self.positions.append(position)
        self.sizes.append(size)

    def drop_first(self, n: int) -> None:
        """Forget the first `n` batches (deleted by retention or DeleteRecords)."""
        for arr in (
            self.base_offsets,
            self.last_offsets,
            self.max_timestamps,
            self.positions,
            self.sizes,
        ):
            del arr[:n]

    def ref(self, i: int) -> BatchRef:
        return BatchRef(
            self.base_offsets[i],
            self.last_offsets[i],
            self.max_timestamps[i],
            self.positions[i],
            self.sizes[i],
        )

    def find(self, offset: int) -> int:
        """Index of the batch holding `offset`, or of the first batch after it."""
        i = bisect.bisect_right(self.base_offsets, offset) - 1
        if i < 0:
            return 0
        if self.last_offsets[i] < offset:
            return i + 1
        return i


class Partition:
    def __init__(self, topic_id: bytes, topic: str, index: int) -> None:
        self.topic_id = topic_id
        self.topic = topic
        self.index = index
        self.leader_epoch = 0
        self.log_start_offset = 0
        self.log_end_offset = 0  # next offset to assign
        self.high_watermark = 0  # end of durable, readable data
        self.batches = BatchIndex()
        self.producers = ProducerStateTable()
        self.tail: dict[int, bytes] = {}  # base offset -> batch, managed by TailCache
        self.max_timestamp_offset = -1
        self.max_timestamp = -1
        self.size_bytes = 0
        # (WAL end position, log end offset) of appends waiting for their sync
        self._unsynced: deque[tuple[int, int]] = deque()
        self.deleted = False

    def __repr__(self) -> str:
        return f"{self.topic}-{self.index}"

    def record_append(
        self, h: BatchHeader, base_offset: int, position: int, wal_end: int | None
    ) -> None:
        """Index a batch the WAL holds; `wal_end` None means already durable (recovery)."""
        last = base_offset + h.last_offset_delta
        self.batches.add(base_offset, last, h.max_timestamp, position, h.size)
        self.producers.update(h, base_offset)
        self.log_end_offset = last + 1
        self.size_bytes += h.size
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp = h.max_timestamp
            self.max_timestamp_offset = base_offset
        if wal_end is None:
            self.high_watermark = self.log_end_offset
        else:
            self._unsynced.append((wal_end, self.log_end_offset))

    def start_at(self, offset: int) -> None:
        """Make `offset` the log start: batches wholly before it leave the index.

        A partition whose batches were all trimmed from the WAL still continues its
        offsets from here, so they are never reused.
        """
        self.log_start_offset = max(self.log_start_offset, offset)
        if self.log_end_offset < self.log_start_offset:
            self.log_end_offset = self.high_watermark = self.log_start_offset
        idx = self.batches
        n = 0
        while n < len(idx) and idx.last_offsets[n] < self.log_start_offset:
            self.size_bytes -= idx.sizes[n]
            n += 1
        if n:
            idx.drop_first(n)
            if self.max_timestamp_offset < self.log_start_offset:  # the newest went: recompute
                self.max_timestamp, self.max_timestamp_offset = -1, -1
                for i in range(len(idx)):
                    if idx.max_timestamps[i] > self.max_timestamp:
                        self.max_timestamp = idx.max_timestamps[i]
                        self.max_timestamp_offset = idx.base_offsets[i]

    @property
    def first_position(self) -> int | None:
        """Cold-store position of the oldest batch still in the log, if any."""
        return self.batches.positions[0] if len(self.batches) else None

    def on_durable(self, wal_position: int) -> bool:
        """Advance the high watermark to what is synced; True if it moved."""
        moved = False
        while self._unsynced and self._unsynced[0][0] <= wal_position:
            _, self.high_watermark = self._unsynced.popleft()
            moved = True
        return moved

    @property
    def has_unsynced(self) -> bool:
        return bool(self._unsynced)

    def refs_from(
        self, offset: int, limit_offset: int, max_bytes: int, first_may_exceed: bool = True
    ) -> list[BatchRef]:
        """Batches from the one holding `offset`, up to `max_bytes`.

        The first batch comes even when larger than `max_bytes` if `first_may_exceed`
        (KIP-74), so a consumer can always make progress.
        """
        idx = self.batches
        i = idx.find(offset)
        out: list[BatchRef] = []
        total = 0
        n = len(idx)
        while i < n and idx.base_offsets[i] < limit_offset:
            size = idx.sizes[i]
            if total + size > max_bytes and (out or not first_may_exceed):
                break
            out.append(idx.ref(i))
            total += size
            i += 1
        return out
