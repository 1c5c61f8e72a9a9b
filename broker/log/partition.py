"""One partition's log state: offsets, high watermark, batch index, producer state.

Offsets are assigned when a batch is appended to the WAL; the high watermark moves
only when the entry is durable by the broker's contract (WAL fsync, or upload in
`object` mode), and reads never go past it, so a consumer never sees a record that a
crash could take back.

The index has two kinds of entries, in offset order: blocks in uploaded objects
first, then single batches still only in the WAL. An upload swaps a run of the
latter for a few of the former.
"""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from collections.abc import Iterator

from broker.log.batch_index import BatchIndex
from broker.log.producer_state import ProducerStateTable
from broker.log.txn_index import TxnIndex
from protocol.record_codec import COMMIT
from protocol.records import BatchHeader
from s3stream.api import WAL, BatchRef, BlockRow, WalSlice


class Partition:
    """A partition's log; the object tier sees it as a stream (s3stream.api.Stream)."""

    def __init__(self, topic_id: bytes, topic: str, index: int, held: bool = True) -> None:
        self.topic_id = topic_id
        self.topic = topic
        self.index = index
        self.leader_epoch = 0
        # held: this broker owns the partition's data (uploads it, snapshots it);
        # leading: it also takes writes and serves reads. The embedded broker holds and
        # leads everything; in cluster mode a hand-off stops leading first, then lets go.
        self.held = held
        self.leading = held
        self.fenced = 0  # times it was taken away without a hand-off (see HandOff.drop)
        self.epoch_start_offset = 0  # where the current leader epoch began (as far as known)
        self.log_start_offset = 0
        self.log_end_offset = 0  # next offset to assign
        self.high_watermark = 0  # end of durable, readable data
        self.batches = BatchIndex()
        self.producers = ProducerStateTable()
        self.txns = TxnIndex()
        self.tail: dict[int, bytes] = {}  # base offset -> batch, managed by TailCache
        self.max_timestamp_offset = -1
        self.max_timestamp = -1
        self.size_bytes = 0
        # (WAL end position, log end offset) of appends waiting for their sync
        self._unsynced: deque[tuple[int, int]] = deque()
        self.object_entries = 0  # the index's leading entries that are object blocks
        # compacted topics: offsets below are cleaned (Kafka's cleaner checkpoint)
        self.cleaned_end = 0
        self.deleted = False

    def reset(self) -> None:
        """Forget the log (another broker leads the partition now, or is about to)."""
        self.held = self.leading = False
        self.log_start_offset = self.log_end_offset = self.high_watermark = 0
        self.batches = BatchIndex()
        self.producers = ProducerStateTable()
        self.txns = TxnIndex()
        self.max_timestamp_offset = self.max_timestamp = -1
        self.size_bytes = 0
        self._unsynced.clear()
        self.object_entries = 0
        self.cleaned_end = 0

    def __repr__(self) -> str:
        return f"{self.topic}-{self.index}"

    def record_append(
        self,
        h: BatchHeader,
        base_offset: int,
        position: int,
        wal_end: int | None,
        control: int | None = None,
    ) -> None:
        """Index a batch the WAL holds; `wal_end` None means already durable (recovery);
        `control` is a control batch's type (protocol.record_codec COMMIT or ABORT)."""
        last = base_offset + h.last_offset_delta
        self.batches.add(base_offset, last, h.max_timestamp, position, h.size)
        self.record_producer(h, base_offset, control)
        self.log_end_offset = last + 1
        self.size_bytes += h.size
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp = h.max_timestamp
            self.max_timestamp_offset = base_offset
        if wal_end is None:
            self.high_watermark = self.log_end_offset
        else:
            self._unsynced.append((wal_end, self.log_end_offset))

    def record_producer(self, h: BatchHeader, base_offset: int, control: int | None) -> None:
        """A batch's effect on producer and transaction state (also for batches replayed
        from the WAL that are already in objects)."""
        self.producers.update(h, base_offset)
        if h.is_transactional:
            if h.is_control:
                self.txns.marker(h.producer_id, base_offset, control == COMMIT)
            else:
                self.txns.data(h.producer_id, base_offset)

    @property
    def last_stable_offset(self) -> int:
        """Where read_committed consumers stop: before the oldest open transaction."""
        return max(self.log_start_offset, self.txns.last_stable_offset(self.high_watermark))

    @property
    def objects_end(self) -> int:
        """The first offset not in an uploaded object."""
        n = self.object_entries
        return self.batches.last_offsets[n - 1] + 1 if n else self.log_start_offset

    def stream_state(self) -> list:
        """What the catalog stores beside the object entries: the transactions as of
        the end of the uploaded data, the cleaned end (compacted topics), then the
        idempotent producers as of that end."""
        end = self.objects_end
        return [*self.txns.state_at(end), self.cleaned_end, self.producers.snapshot_at(end)]

    def record_block(self, ref: BatchRef) -> None:
        """Index a block of an uploaded object (when opening from the bucket, before
        the WAL is replayed)."""
        assert ref.object_id != WAL and self.object_entries == len(self.batches)
        self.batches.add(
            ref.base_offset,
            ref.last_offset,
            ref.max_timestamp,
            ref.position,
            ref.size,
            ref.object_id,
        )
        self.object_entries += 1
        self.log_end_offset = self.high_watermark = max(self.log_end_offset, ref.last_offset + 1)
        self.size_bytes += ref.size
        if ref.max_timestamp > self.max_timestamp:
            self.max_timestamp = ref.max_timestamp
            self.max_timestamp_offset = ref.base_offset

    def wal_slice(self, durable_end: int) -> WalSlice | None:
        """The WAL batches not yet uploaded whose entries end by `durable_end`, as copies
        of the index columns (C-speed slices, safe to hand to a thread)."""
        idx = self.batches
        start = self.object_entries
        # WAL entries are in WAL order, so only the last one below the end can cross it
        stop = bisect.bisect_left(idx.positions, durable_end, lo=start)
        if stop > start and idx.positions[stop - 1] + idx.sizes[stop - 1] > durable_end:
            stop -= 1
        if stop == start:
            return None
        return WalSlice(
            idx.base_offsets[start:stop],
            idx.last_offsets[start:stop],
            idx.max_timestamps[start:stop],
            idx.positions[start:stop],
            idx.sizes[start:stop],
            self.tail,
        )

    def uploaded(self, last_offset: int, blocks: list[BatchRef]) -> None:
        """The WAL batches up to `last_offset` now live in `blocks`: swap the entries.

        Retention may have dropped some of them while the upload ran; blocks wholly
        before the log start are left out for the same reason.
        """
        idx = self.batches
        start = self.object_entries
        stop = start
        while stop < len(idx) and idx.last_offsets[stop] <= last_offset:
            stop += 1
        kept = [b for b in blocks if b.last_offset >= self.log_start_offset]
        if stop == start and not kept:
            return
        self.size_bytes += sum(b.size for b in kept) - sum(idx.sizes[start:stop])
        idx.replace(start, stop, kept)
        self.object_entries += len(kept)

    def holds_at(self, epoch: int) -> bool:
        return not self.deleted and self.held and self.leader_epoch == epoch

    def object_ids(self) -> array:
        return self.batches.objects[: self.object_entries]

    def object_rows(self) -> Iterator[BlockRow]:
        idx, n = self.batches, self.object_entries
        return zip(
            idx.base_offsets[:n],
            idx.last_offsets[:n],
            idx.max_timestamps[:n],
            idx.positions[:n],
            idx.sizes[:n],
            idx.objects[:n],
            strict=True,
        )

    def _object_hits(self, ids: set[int]) -> list[int] | None:
        """Index entries of the object blocks in `ids`; None if not contiguous."""
        objects = self.batches.objects
        hits = [i for i in range(self.object_entries) if objects[i] in ids]
        if hits and hits[-1] + 1 - hits[0] != len(hits):
            return None
        return hits

    def object_run(self, ids: set[int]) -> list[BatchRef] | None:
        hits = self._object_hits(ids)
        return None if hits is None else [self.batches.ref(i) for i in hits]

    def replace_run(self, ids: set[int], blocks: list[BatchRef]) -> None:
        """A compaction merged objects `ids`: `blocks` (but those wholly before the log
        start, which retention may have moved meanwhile) stand in for their entries."""
        hits = self._object_hits(ids)
        if not hits:
            return
        idx = self.batches
        start, stop = hits[0], hits[-1] + 1
        kept = [b for b in blocks if b.last_offset >= self.log_start_offset]
        self.size_bytes += sum(b.size for b in kept) - sum(idx.sizes[start:stop])
        idx.replace(start, stop, kept)
        self.object_entries += len(kept) - (stop - start)

    def replace_prefix(self, expected: list[BatchRef], blocks: list[BatchRef]) -> bool:
        """The log cleaner rewrote the object blocks `expected` (the index's first
        entries when it started) as `blocks`: put them in their place. Retention may
        have dropped some of the first meanwhile (then the rest still lead the index,
        and blocks wholly before the log start are left out); anything else changed
        them (a hand-off, a reset): False, nothing replaced."""
        idx = self.batches
        for dropped in range(len(expected) + 1):
            if dropped and expected[dropped - 1].last_offset >= self.log_start_offset:
                return False  # not dropped by retention: changed some other way
            rest = expected[dropped:]
            if len(rest) <= self.object_entries and all(
                idx.ref(i) == r for i, r in enumerate(rest)
            ):
                break
        else:
            return False
        stop = len(rest)
        kept = [b for b in blocks if b.last_offset >= self.log_start_offset]
        self.size_bytes += sum(b.size for b in kept) - sum(idx.sizes[:stop])
        idx.replace(0, stop, kept)
        self.object_entries += len(kept) - stop
        return True

    def start_at(self, offset: int) -> None:
        """Make `offset` the log start: batches wholly before it leave the index.

        A partition whose batches were all trimmed from the WAL still continues its
        offsets from here, so they are never reused.
        """
        self.log_start_offset = max(self.log_start_offset, offset)
        self.txns.trim(self.log_start_offset)
        if self.log_end_offset < self.log_start_offset:
            self.log_end_offset = self.high_watermark = self.log_start_offset
        idx = self.batches
        n = 0
        while n < len(idx) and idx.last_offsets[n] < self.log_start_offset:
            self.size_bytes -= idx.sizes[n]
            n += 1
        if n:
            idx.drop_first(n)
            self.object_entries = max(0, self.object_entries - n)
            if self.max_timestamp_offset < self.log_start_offset:  # the newest went: recompute
                self.max_timestamp, self.max_timestamp_offset = -1, -1
                for i in range(len(idx)):
                    if idx.max_timestamps[i] > self.max_timestamp:
                        self.max_timestamp = idx.max_timestamps[i]
                        self.max_timestamp_offset = idx.base_offsets[i]

    @property
    def first_position(self) -> int | None:
        """WAL position of the oldest batch not yet uploaded, if any."""
        if self.object_entries < len(self.batches):
            return self.batches.positions[self.object_entries]
        return None

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
