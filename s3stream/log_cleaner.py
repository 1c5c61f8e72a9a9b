"""Key-based log cleaning (Kafka's `cleanup.policy=compact`), the pure parts.

After Kafka's LogCleaner. A stream's log is cut into segment-sized units; every unit
but the last (the active one), wholly uploaded, below the last stable offset and
older than `min.compaction.lag.ms`, is cleanable. The part already cleaned ends at
the stream's *cleaned end* (Kafka's cleaner checkpoint); what follows up to the
cleanable end is *dirty*. A clean is due when the dirty bytes are at least
`min.cleanable.dirty.ratio` of the cleanable bytes, or the oldest dirty data has
waited `max.compaction.lag.ms`.

A clean reads the dirty range once to build an offset map (each key's last offset
in it, within a byte budget: a map that would outgrow it ends the range early),
then rewrites the whole cleanable range: a record survives if its key's latest
offset is not after it; a surviving tombstone (null value) goes once its batch is
older than `delete.retention.ms`; aborted transactions' data goes; a control marker
goes once no data of its transaction is left and it is past `delete.retention.ms`.
Offsets never change: a rebuilt batch keeps its base offset, its last offset delta
(so a producer's last sequence stays as it was), its producer id, epoch, base
sequence, timestamps and attributes, and is compressed again with its own codec; a
batch nothing is left of is dropped, one that lost nothing is copied as it was.

`plan_clean` decides what to clean (pure). `CleanJob` does the CPU work, block group
by block group, and builds the output object; it runs in a worker process (see
`job_*`, for a process pool of one worker), so decoding never holds the event loop
or its interpreter lock.
"""

from __future__ import annotations

import bisect
import contextlib
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory

import crc32c

from protocol.record_codec import decompress, read_varint
from protocol.records import HEADER, HEADER_SIZE, TIMESTAMP_TYPE_LOG_APPEND, iter_headers
from s3stream.codecs import compress
from s3stream.object_format import BlockEntry, ObjectBuilder, PendingBatch

KEY_OVERHEAD = 100  # bytes a map entry costs beyond its key (dict slot, bytes, int)
_AFTER_CRC = struct.Struct(">hiqqqhii")


@dataclass(frozen=True)
class CleanSettings:
    """A topic's cleaning settings, under Kafka's names."""

    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = 2**63 - 1
    delete_retention_ms: int = 86_400_000
    segment_bytes: int = 1024**3
    segment_ms: int = 604_800_000


@dataclass(frozen=True)
class CleanerSettings:
    """The broker's cleaner settings (Kafka's log.cleaner.*)."""

    dedupe_buffer_bytes: int = 128 * 1024 * 1024  # log.cleaner.dedupe.buffer.size
    block_bytes: int = 1024 * 1024
    enabled: bool = True  # log.cleaner.enable
    io_max_bytes_per_second: float = 0.0  # log.cleaner.io.max.bytes.per.second; 0: no bound


def budget_wait_s(bytes_done: int, elapsed_s: float, max_bytes_per_s: float) -> float:
    """How long to pause so `bytes_done` in `elapsed_s` stays within the byte budget
    (Kafka's cleaner throttler): 0 when within it or unbounded."""
    if max_bytes_per_s <= 0:
        return 0.0
    return max(0.0, bytes_done / max_bytes_per_s - elapsed_s)


@dataclass(frozen=True)
class CleanPlan:
    """Clean the stream's first `entries` index entries (all object blocks); the map is
    built over entries [dirty_from, entries)."""

    entries: int
    dirty_from: int
    clean_bytes: int
    dirty_bytes: int
    end_offset: int  # the offset after the last entry cleaned: the next cleaned end

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


@dataclass(frozen=True)
class Cleanable:
    """Where a stream's cleanable range ends, and its dirty ratio."""

    entries: int  # leading index entries that are cleanable
    dirty_from: int  # first entry past the cleaned end
    clean_bytes: int
    dirty_bytes: int
    first_dirty_timestamp: int  # max timestamp of the first dirty entry, -1 if none

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


def cleanable(
    base_offsets: Sequence[int],
    last_offsets: Sequence[int],
    max_timestamps: Sequence[int],
    sizes: Sequence[int],
    object_entries: int,
    cleaned_end: int,
    stable_offset: int,
    now_ms: int,
    s: CleanSettings,
) -> Cleanable:
    """The cleanable prefix of a stream's index (columns in offset order; the first
    `object_entries` are object blocks, the rest WAL batches). Segments are cut where
    the next entry would take one past `segment_bytes`, or lies more than `segment_ms`
    after the segment's first entry; the last segment is the active one."""
    n = len(base_offsets)
    active_start = 0  # index of the first entry of the last segment
    seg_bytes, seg_ts = 0, None
    for i in range(n):
        ts = max_timestamps[i]
        if seg_ts is not None and (
            seg_bytes + sizes[i] > s.segment_bytes or ts - seg_ts > s.segment_ms
        ):
            active_start, seg_bytes, seg_ts = i, 0, None
        seg_bytes += sizes[i]
        if seg_ts is None:
            seg_ts = ts
    lag_limit = now_ms - s.min_compaction_lag_ms
    k = 0
    limit = min(active_start, object_entries)
    while (
        k < limit
        and last_offsets[k] < stable_offset
        and (s.min_compaction_lag_ms <= 0 or max_timestamps[k] <= lag_limit)
    ):
        k += 1
    d = 0
    while d < k and last_offsets[d] < cleaned_end:
        d += 1
    clean = sum(sizes[:d])
    dirty = sum(sizes[d:k])
    return Cleanable(k, d, clean, dirty, max_timestamps[d] if d < k else -1)


def clean_due(c: Cleanable, now_ms: int, s: CleanSettings) -> bool:
    """Kafka's rule: enough of the cleanable log is dirty, or its oldest dirty data
    has waited max.compaction.lag.ms."""
    if c.dirty_bytes <= 0:
        return False
    if c.dirty_ratio >= s.min_cleanable_dirty_ratio:
        return True
    return (
        c.first_dirty_timestamp >= 0 and now_ms - c.first_dirty_timestamp > s.max_compaction_lag_ms
    )


def plan_clean(
    c: Cleanable, last_offsets: Sequence[int], now_ms: int, s: CleanSettings
) -> CleanPlan | None:
    """The plan for a due clean (None if none is due)."""
    if not clean_due(c, now_ms, s):
        return None
    return CleanPlan(
        c.entries, c.dirty_from, c.clean_bytes, c.dirty_bytes, last_offsets[c.entries - 1] + 1
    )


# --- the work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobParams:
    log_start: int
    dirty_start: int  # the map covers offsets from here ...
    end_offset: int  # ... to here (exclusive); nothing at or past it is rewritten
    now_ms: int
    delete_retention_ms: int
    # (producer id, first offset, marker offset) of aborted transactions
    aborted: tuple[tuple[int, int, int], ...] = ()
    map_budget_bytes: int = 128 * 1024 * 1024


@dataclass
class CleanStats:
    bytes_read: int = 0
    records_read: int = 0
    records_kept: int = 0
    batches_dropped: int = 0
    tombstones_dropped: int = 0
    markers_dropped: int = 0
    aborted_dropped: int = 0


class OffsetMap:
    """Each key's last offset, within a byte budget (keys are kept whole: exact)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.latest: dict[bytes, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.latest)

    def put_all(self, keys: dict[bytes, int]) -> bool:
        """Merge one block group's keys (a later group's offsets win); False, merging
        nothing, if that would take the map past its budget (unless it is empty)."""
        grow = sum(len(k) + KEY_OVERHEAD for k in keys if k not in self.latest)
        if self.latest and self.bytes + grow > self.budget:
            return False
        self.latest.update(keys)
        self.bytes += grow
        return True


def _walk(buf: bytes, count: int) -> list[tuple[int, int, int, int, int, int]]:
    """(start, end, timestamp delta, offset delta, key position, key length) of each
    record in a batch's decompressed records: record_spans' walk with the varints of one
    or two bytes (nearly all of them) read inline, the cleaner's inner loop."""
    out = []
    pos = 0
    for _ in range(count):
        start = pos
        b = buf[pos]
        if b < 0x80:
            length, pos = (b >> 1) ^ -(b & 1), pos + 1
        elif buf[pos + 1] < 0x80:
            v = (b & 0x7F) | (buf[pos + 1] << 7)
            length, pos = (v >> 1) ^ -(v & 1), pos + 2
        else:
            length, pos = read_varint(buf, pos)
        end = pos + length
        if length <= 0 or end > len(buf):
            raise ValueError("record length out of bounds")
        p = pos + 1  # after the attributes byte
        b = buf[p]
        if b < 0x80:
            ts, p = (b >> 1) ^ -(b & 1), p + 1
        else:
            ts, p = read_varint(buf, p)
        b = buf[p]
        if b < 0x80:
            od, p = (b >> 1) ^ -(b & 1), p + 1
        elif buf[p + 1] < 0x80:
            v = (b & 0x7F) | (buf[p + 1] << 7)
            od, p = (v >> 1) ^ -(v & 1), p + 2
        else:
            od, p = read_varint(buf, p)
        b = buf[p]
        if b < 0x80:
            kl, p = (b >> 1) ^ -(b & 1), p + 1
        else:
            kl, p = read_varint(buf, p)
        if p + max(kl, 0) > end:
            raise ValueError("key runs past the record")
        out.append((start, end, ts, od, p, kl))
        pos = end
    return out


def _payload(batch: memoryview, h) -> bytes:
    return decompress(h.compression, bytes(batch[HEADER_SIZE : h.size]))


def _map_walk(
    buf: bytes, count: int, base: int, start: int, end: int, out: dict, keyless: list[int]
) -> None:
    """Put each record's key -> offset into `out` (keyless records' offsets into
    `keyless`) for records in [start, end): the map phase's inner loop, reading only
    what it needs (no timestamps), the one- and two-byte varints inline."""
    inside = start <= base and base + count <= end  # fresh batches: no check per record
    pos = 0
    n = len(buf)
    for _ in range(count):
        b = buf[pos]
        if b < 0x80:
            length, pos = (b >> 1) ^ -(b & 1), pos + 1
        elif buf[pos + 1] < 0x80:
            v = (b & 0x7F) | (buf[pos + 1] << 7)
            length, pos = (v >> 1) ^ -(v & 1), pos + 2
        else:
            length, pos = read_varint(buf, pos)
        rec_end = pos + length
        if length <= 0 or rec_end > n:
            raise ValueError("record length out of bounds")
        p = pos + 1  # after the attributes byte
        while buf[p] & 0x80:  # the timestamp delta, skipped
            p += 1
        p += 1
        b = buf[p]
        if b < 0x80:
            od, p = (b >> 1) ^ -(b & 1), p + 1
        elif buf[p + 1] < 0x80:
            v = (b & 0x7F) | (buf[p + 1] << 7)
            od, p = (v >> 1) ^ -(v & 1), p + 2
        else:
            od, p = read_varint(buf, p)
        b = buf[p]
        if b < 0x80:
            kl, p = (b >> 1) ^ -(b & 1), p + 1
        else:
            kl, p = read_varint(buf, p)
        if p + kl > rec_end:
            raise ValueError("key runs past the record")
        offset = base + od
        if inside or start <= offset < end:
            if kl >= 0:
                out[buf[p : p + kl]] = offset
            else:
                keyless.append(offset)
        pos = rec_end


@dataclass
class GroupInfo:
    """What the map phase saw of one block group: whether the rewrite may skip it
    unread when none of its offsets survive (no control or transactional batch, none
    reaching below the map's start), and what skipping it counts."""

    first: int = -1  # offsets of its batches in the map's range
    last: int = -1
    records: int = 0
    batches: int = 0
    bytes: int = 0
    skippable: bool = True


def group_keys(
    data: bytes | memoryview, start: int, end: int, keyless: list[int] | None = None
) -> tuple[dict[bytes, int], GroupInfo]:
    """Last offset of each key among the records in [start, end) of consecutive
    batches `data` (control batches and null keys count for nothing; the offsets of
    records without a key go to `keyless`), and what the group holds."""
    out: dict[bytes, int] = {}
    info = GroupInfo()
    keyless = [] if keyless is None else keyless
    view = memoryview(data)
    for pos, h in iter_headers(view):
        if h.last_offset < start or h.base_offset >= end:
            continue
        if info.first < 0:
            info.first = h.base_offset
        info.last = h.last_offset
        info.records += h.record_count
        info.batches += 1
        info.bytes += h.size
        if h.is_control or h.is_transactional or h.base_offset < start:
            info.skippable = False
        if h.is_control:
            continue
        buf = _payload(view[pos : pos + h.size], h)
        _map_walk(buf, h.record_count, h.base_offset, start, end, out, keyless)
    return out, info


class _Aborted:
    """Aborted transactions by producer, to drop their data batches."""

    def __init__(self, ranges: Sequence[tuple[int, int, int]]) -> None:
        self.by_pid: dict[int, list[tuple[int, int]]] = {}
        for pid, first, last in ranges:
            self.by_pid.setdefault(pid, []).append((first, last))

    def holds(self, pid: int, offset: int) -> bool:
        return any(first <= offset <= last for first, last in self.by_pid.get(pid, ()))


_UNDECIDED = object()


@dataclass
class CleanJob:
    """One stream's clean: the map, then the rewrite, then the output object."""

    params: JobParams
    map: OffsetMap = field(init=False)
    stats: CleanStats = field(default_factory=CleanStats)
    out: list[PendingBatch] = field(default_factory=list)
    map_complete_to: int = -1  # where the map ended (the budget may stop it early)

    def __post_init__(self) -> None:
        self.map = OffsetMap(self.params.map_budget_bytes)
        self._aborted = _Aborted(self.params.aborted)
        self._txn_kept: dict[int, bool] = {}  # producer -> data of its open txn kept
        self._keyless: list[int] = []  # offsets of records without a key, in the map's range
        self._groups: list[GroupInfo] = []  # the map's groups, in order
        self._survivors: array | None = None  # sorted offsets the map keeps, once built

    # phase 1
    def add_to_map(self, data: bytes | memoryview, group_end: int) -> bool:
        """A dirty block group (its batches end by `group_end`); False when the map is
        full: the clean then ends where this group begins."""
        keyless: list[int] = []
        keys, info = group_keys(data, self.params.dirty_start, self.params.end_offset, keyless)
        if not self.map.put_all(keys):
            return False
        self._keyless += keyless
        self._groups.append(info)
        self.map_complete_to = group_end
        return True

    def survivors(self) -> array:
        """The offsets in the map's range that survive: each key's latest, and records
        without a key (kept, as they were). Sorted, for bisect."""
        if self._survivors is None:
            self._survivors = array("q", sorted([*self.map.latest.values(), *self._keyless]))
        return self._survivors

    def needed_groups(self) -> list[bool]:
        """For each group the map took, in order: whether the rewrite must read it. A
        group none of whose offsets survive, holding no transactional data, is dropped
        whole without being read again (its records counted as read and removed)."""
        s = self.survivors()
        out = []
        for g in self._groups:
            i = bisect.bisect_left(s, g.first)
            need = not g.skippable or (i < len(s) and s[i] <= g.last)
            if not need:
                self.stats.bytes_read += g.bytes
                self.stats.records_read += g.records
                self.stats.batches_dropped += g.batches
            out.append(need)
        return out

    # phase 2
    def rewrite(self, data: bytes | memoryview, end_offset: int | None = None) -> None:
        """Filter one block group's batches below `end_offset` (the map's end) into the
        output, in offset order."""
        end = self.params.end_offset if end_offset is None else end_offset
        view = memoryview(data)
        for pos, h in iter_headers(view):
            if h.last_offset < self.params.log_start or h.base_offset >= end:
                continue
            self.stats.bytes_read += h.size
            batch = view[pos : pos + h.size]
            kept = self._filter(h, batch)
            if kept is None:
                self.stats.batches_dropped += 1
            else:
                self.out.append(PendingBatch(h.base_offset, h.last_offset, _max_ts(kept), kept))

    def _filter(self, h, batch: memoryview) -> bytes | memoryview | None:
        p = self.params
        horizon_passed = h.max_timestamp < p.now_ms - p.delete_retention_ms
        if h.is_control:
            self.stats.records_read += h.record_count
            data_kept = self._txn_kept.pop(h.producer_id, False)
            if horizon_passed and not data_kept:
                self.stats.markers_dropped += 1
                return None
            self.stats.records_kept += h.record_count
            return batch
        if h.is_transactional and self._aborted.holds(h.producer_id, h.base_offset):
            self.stats.records_read += h.record_count
            self.stats.aborted_dropped += h.record_count
            return None
        base = h.base_offset
        if base >= p.dirty_start and self._groups:
            decided = self._by_survivors(h, batch, horizon_passed)
            if decided is not _UNDECIDED:
                return decided  # type: ignore[return-value]
        buf = _payload(batch, h)
        latest = self.map.latest
        kept: list[tuple[int, int]] = []  # (start, end) of kept records in buf
        max_ts = -1
        count = 0
        for start, end, ts_delta, offset_delta, key_pos, key_len in _walk(buf, h.record_count):
            count += 1
            if key_len >= 0:
                newest = latest.get(buf[key_pos : key_pos + key_len])
                if newest is not None and newest > base + offset_delta:
                    continue
                if horizon_passed and read_varint(buf, key_pos + key_len)[0] < 0:
                    self.stats.tombstones_dropped += 1  # a tombstone past delete.retention.ms
                    continue
            kept.append((start, end))
            if h.base_timestamp + ts_delta > max_ts:
                max_ts = h.base_timestamp + ts_delta
        self.stats.records_read += count
        self.stats.records_kept += len(kept)
        if kept and h.is_transactional:
            self._txn_kept[h.producer_id] = True
        if len(kept) == count:
            return batch
        if not kept:
            return None
        body = b"".join(buf[a:b] for a, b in kept)
        return _rebuild(h, batch, body, len(kept), max_ts)

    def _by_survivors(self, h, batch: memoryview, horizon_passed: bool) -> object:
        """A batch in the map's range judged by the surviving offsets alone, without
        decompressing it: none (dropped) or all (kept as it is, unless tombstones may
        go); _UNDECIDED when some survive, to be filtered record by record."""
        s = self.survivors()
        lo = bisect.bisect_left(s, h.base_offset)
        hi = bisect.bisect_right(s, h.last_offset)
        if lo == hi:
            self.stats.records_read += h.record_count
            return None
        if hi - lo == h.record_count and not horizon_passed:
            self.stats.records_read += h.record_count
            self.stats.records_kept += h.record_count
            if h.is_transactional:
                self._txn_kept[h.producer_id] = True
            return batch
        return _UNDECIDED

    def finish(self, topic_id: bytes, partition: int, block_bytes: int, created_ms: int):
        """The output object: (body, its index entries)."""
        builder = ObjectBuilder(block_bytes)
        if self.out:
            builder.add_partition(topic_id, partition, self.out)
        return builder.finish(created_ms), builder.entries


def _rebuild(h, original: memoryview, records: bytes, count: int, max_ts: int) -> bytes:
    """The batch with only `records` (raw, as they were: their deltas still hold, base
    offset and timestamp being unchanged), compressed with the batch's codec."""
    payload = compress(h.compression, records, original[HEADER_SIZE : HEADER_SIZE + 16])
    if h.attributes & TIMESTAMP_TYPE_LOG_APPEND:
        max_ts = h.max_timestamp
    after_crc = (
        _AFTER_CRC.pack(
            h.attributes,
            h.last_offset_delta,
            h.base_timestamp,
            max_ts,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            count,
        )
        + payload
    )
    batch_length = 4 + 1 + 4 + len(after_crc)
    head = struct.pack(
        ">qiibI", h.base_offset, batch_length, h.leader_epoch, 2, crc32c.crc32c(after_crc)
    )
    return head + after_crc


def _max_ts(batch: bytes | memoryview) -> int:
    return HEADER.unpack_from(batch)[8]


def block_groups(
    refs: Sequence[tuple[int, int, int, int]], max_bytes: int
) -> Iterator[tuple[int, int, int, int, int]]:
    """Consecutive blocks (object id, position, size, last offset) that lie back to back
    in one object, merged into ranged reads of up to `max_bytes`: (object id, start,
    end, last offset, number of blocks)."""
    cur: list[int] | None = None
    for oid, pos, size, last in refs:
        if (
            cur is not None
            and cur[0] == oid
            and cur[2] == pos
            and cur[2] - cur[1] + size <= max_bytes
        ):
            cur[2] += size
            cur[3] = last
            cur[4] += 1
            continue
        if cur is not None:
            yield tuple(cur)  # type: ignore[misc]
        cur = [oid, pos, pos + size, last, 1]
    if cur is not None:
        yield tuple(cur)  # type: ignore[misc]


# --- the worker process's side (a pool of one worker runs these in order) -------------

_JOBS: dict[int, CleanJob] = {}
_SHARED: dict[str, SharedMemory] = {}  # the parent's staging buffers, attached here


def _release_shared() -> None:
    for shm in _SHARED.values():
        with contextlib.suppress(BufferError):  # a view still held: it goes with the process
            shm.close()
    _SHARED.clear()


def job_open(job_id: int, params: JobParams) -> None:
    _JOBS[job_id] = CleanJob(params)


def job_map(job_id: int, data: bytes | memoryview, group_end: int) -> tuple[bool, int, int]:
    """(whether the group fit, keys in the map, map bytes)."""
    job = _JOBS[job_id]
    fit = job.add_to_map(data, group_end)
    return fit, len(job.map), job.map.bytes


def job_needed(job_id: int) -> list[bool]:
    """Which of the map's groups the rewrite must read (see CleanJob.needed_groups)."""
    return _JOBS[job_id].needed_groups()


def job_map_shared(job_id: int, name: str, size: int, group_end: int) -> tuple[bool, int, int]:
    """job_map of the first `size` bytes of the parent's shared staging buffer `name`
    (no copy through a pipe; the map keeps copies of the keys only, nothing of the
    buffer, which the parent fills again for the next group)."""
    shm = _SHARED.get(name)
    if shm is None:
        _release_shared()
        shm = _SHARED[name] = SharedMemory(name)
    view = shm.buf[:size]
    try:
        return job_map(job_id, view, group_end)
    finally:
        view.release()


def job_rewrite(job_id: int, data: bytes, end_offset: int) -> None:
    _JOBS[job_id].rewrite(data, end_offset)


def job_finish(
    job_id: int, topic_id: bytes, partition: int, block_bytes: int, created_ms: int
) -> tuple[bytes, list[BlockEntry], CleanStats]:
    _release_shared()
    job = _JOBS.pop(job_id)
    body, entries = job.finish(topic_id, partition, block_bytes, created_ms)
    return body, entries, job.stats


def job_close(job_id: int) -> None:
    _release_shared()
    _JOBS.pop(job_id, None)
