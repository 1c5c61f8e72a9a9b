"""Replay one record key: its records from the bucket (and the un-uploaded tail), in order.

The question an investigator asks is "what did session X do": every record of one key.
A consumer answers it by scanning the whole topic. Here each object's key index (see
s3stream.key_index) names the few blocks that may hold the key, those blocks alone are
fetched with ranged GETs (adjacent ones in one GET), decoded on a worker thread and
filtered by the exact key, time range and the partition's log start. What is not
uploaded yet comes from the source's tail (the broker's tail cache and WAL).

Records come in offset order within a partition, merged by timestamp across
partitions. The sources (broker.replay.sources) say where each partition's data is;
this module knows only the store and the object format.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from protocol.record_codec import record_spans, record_timestamp, value_and_headers
from protocol.records import (
    CONTROL,
    TRANSACTIONAL,
    parse_header,
)
from s3stream.key_index import BlockKeys, fingerprint
from s3stream.object_format import (
    FOOTER,
    CorruptObject,
    parse_footer,
    parse_index,
    parse_key_index,
    parse_locator,
    split_block,
)
from s3stream.store import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 100_000
_TAIL_READ = 64 * 1024  # the footer, the block index and usually the key index
_GETS_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """One object block of a partition, as its catalog knows it."""

    key: str  # the object's key
    object_size: int
    position: int
    size: int
    base_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(frozen=True)
class PartitionData:
    """Where one partition's records are: object blocks, then a tail not uploaded yet
    (`tail()` returns its batches, in offset order), from `log_start` on. For
    read_committed: `stable_end` (the last stable offset; None: no open transaction
    holds it back) and the aborted transactions, (producer id, first offset, marker
    offset)."""

    partition: int
    log_start: int
    blocks: Sequence[StoredBlock]
    tail: Callable[[], Awaitable[list[bytes | memoryview]]] | None = None
    stable_end: int | None = None
    aborted: Sequence[tuple[int, int, int]] = ()


@dataclass(frozen=True, slots=True)
class Query:
    key: bytes
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int = DEFAULT_LIMIT
    committed: bool = False  # read_committed: no aborted records, none past the LSO


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


@dataclass
class ReplayStats:
    gets: int = 0
    bytes: int = 0  # fetched from the store
    blocks_read: int = 0  # chosen to be read (the key index says they may hold the key)
    blocks_fetched: int = 0  # read so far
    blocks_total: int = 0
    tail_batches: int = 0
    seconds: float = 0.0


@dataclass
class ReplayResult:
    records: list[ReplayRecord]
    stats: ReplayStats = field(default_factory=ReplayStats)
    truncated: bool = False  # more records than the limit


class KeyIndexes:
    """Objects' key indexes by object key, read from the store once (objects never
    change) and kept least recently used within `max_fingerprints`. An object from
    before key indexes maps to None: every one of its blocks is a candidate."""

    def __init__(self, store: ObjectStore, max_fingerprints: int = 16 * 1024 * 1024) -> None:
        self.store = store
        self.max_fingerprints = max_fingerprints
        self._cache: OrderedDict[str, tuple[dict[int, BlockKeys] | None, int]] = OrderedDict()
        self._held = 0

    async def get(self, key: str, size: int, stats: ReplayStats) -> dict[int, BlockKeys] | None:
        """Block position -> its key index entry, for object `key` of `size` bytes."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0]
        try:
            by_position = await self._read(key, size, stats)
        except CorruptObject as e:  # read its blocks whole rather than fail the replay
            log.warning("%s: key index unreadable (%s); its blocks are read whole", key, e)
            by_position = None
        weight = 1 + sum(len(b.fingerprints or ()) for b in (by_position or {}).values())
        self._cache[key] = (by_position, weight)
        self._held += weight
        while self._held > self.max_fingerprints and len(self._cache) > 1:
            _, (_, w) = self._cache.popitem(last=False)
            self._held -= w
        return by_position

    async def _read(self, key: str, size: int, stats: ReplayStats) -> dict[int, BlockKeys] | None:
        start = max(0, size - _TAIL_READ)
        buf = await self._get(key, start, size, stats)

        async def upto(lo: int) -> memoryview:
            nonlocal buf, start
            if lo < start:
                buf = await self._get(key, lo, start, stats) + buf
                start = lo
            return memoryview(buf)

        footer = parse_footer(buf)
        if footer.index_position + footer.index_size + FOOTER.size != size:
            raise CorruptObject(f"{key}: footer does not match the object size {size}")
        located = footer.locator_range
        if located is None:
            return None
        view = await upto(located[0])
        loc = parse_locator(footer, view[located[0] - start : located[1] - start])
        view = await upto(loc.position)
        index = view[
            footer.index_position - start : footer.index_position - start + footer.index_size
        ]
        entries = parse_index(footer, index)
        blocks = parse_key_index(loc, view[loc.position - start : loc.end - start])
        if len(blocks) != len(entries):
            raise CorruptObject(f"{key}: key index has {len(blocks)} blocks, index {len(entries)}")
        return {e.position: b for e, b in zip(entries, blocks, strict=True)}

    async def _get(self, key: str, start: int, end: int, stats: ReplayStats) -> bytes:
        data = await self.store.get(key, start, end)
        stats.gets += 1
        stats.bytes += len(data)
        return data


class Replayer:
    def __init__(
        self,
        store: ObjectStore,
        indexes: KeyIndexes | None = None,
        progress: Callable[[ReplayStats], None] | None = None,
    ) -> None:
        """`progress(stats)` after each block GET (a long read's progress bar)."""
        self.store = store
        self.indexes = indexes or KeyIndexes(store)
        self.progress = progress

    async def replay(self, partitions: Sequence[PartitionData], q: Query) -> ReplayResult:
        started = time.perf_counter()
        stats = ReplayStats()
        per_partition = await asyncio.gather(*(self._partition(p, q, stats) for p in partitions))
        merged = heapq.merge(*per_partition, key=lambda r: (r.timestamp, r.partition))
        records: list[ReplayRecord] = []
        truncated = False
        for r in merged:
            if len(records) == q.limit:
                truncated = True
                break
            records.append(r)
        stats.seconds = time.perf_counter() - started
        return ReplayResult(records, stats, truncated)

    async def _partition(
        self, p: PartitionData, q: Query, stats: ReplayStats
    ) -> list[ReplayRecord]:
        fp = fingerprint(q.key)
        live = [
            b
            for b in p.blocks
            if b.last_offset >= p.log_start
            and (q.start_ms is None or b.max_timestamp >= q.start_ms)
        ]
        stats.blocks_total += len(live)
        objects = {b.key: b.object_size for b in live}
        gate = asyncio.Semaphore(_GETS_AT_ONCE)

        async def index(key: str, size: int) -> dict[int, BlockKeys] | None:
            async with gate:
                return await self.indexes.get(key, size, stats)

        found = await asyncio.gather(*(index(k, n) for k, n in objects.items()))
        indexes = dict(zip(objects, found, strict=True))
        wanted = []
        for b in live:
            by_position = indexes[b.key]
            entry = None if by_position is None else by_position.get(b.position)
            if entry is None or (entry.overlaps(q.start_ms, q.end_ms) and entry.may_hold(fp)):
                wanted.append(b)
        stats.blocks_read += len(wanted)
        tail: list[bytes | memoryview] = []
        if p.tail is not None:
            tail = await p.tail()
            stats.tail_batches += len(tail)
        datas = await self._fetch(wanted, stats)
        covered = max((b.last_offset for b in p.blocks), default=-1)
        return await asyncio.to_thread(_matching, p, q, datas, tail, covered)

    async def _fetch(self, blocks: list[StoredBlock], stats: ReplayStats) -> list[memoryview]:
        """The blocks' bytes, adjacent blocks of an object in one ranged GET."""
        runs: list[list[StoredBlock]] = []
        for b in blocks:
            last = runs[-1][-1] if runs else None
            if last is not None and last.key == b.key and last.position + last.size == b.position:
                runs[-1].append(b)
            else:
                runs.append([b])
        gate = asyncio.Semaphore(_GETS_AT_ONCE)

        async def get(run: list[StoredBlock]) -> list[memoryview]:
            first, last = run[0], run[-1]
            async with gate:
                data = memoryview(
                    await self.store.get(first.key, first.position, last.position + last.size)
                )
            stats.gets += 1
            stats.bytes += len(data)
            stats.blocks_fetched += len(run)
            if self.progress is not None:
                self.progress(stats)
            return [
                data[b.position - first.position : b.position - first.position + b.size]
                for b in run
            ]

        out: list[memoryview] = []
        for parts in await asyncio.gather(*(get(r) for r in runs)):
            out.extend(parts)
        return out


def _matching(
    p: PartitionData,
    q: Query,
    blocks: list[memoryview],
    tail: list[bytes | memoryview],
    covered: int,
) -> list[ReplayRecord]:
    """The records of `q.key` in the blocks and the tail (on a worker thread)."""
    batches = [d for block in blocks for *_, d in split_block(block)]
    batches += [t for t in tail if parse_header(t).last_offset > covered]
    aborted: dict[int, list[tuple[int, int]]] = {}
    end = None
    if q.committed:
        end = p.stable_end
        for pid, first, last in p.aborted:
            aborted.setdefault(pid, []).append((first, last))
    out = []
    seen = -1
    for batch in batches:
        h = parse_header(batch)
        if h.attributes & CONTROL or h.last_offset < max(p.log_start, seen + 1):
            continue
        if end is not None and h.base_offset >= end:
            break
        if h.attributes & TRANSACTIONAL and any(
            first <= h.base_offset <= last for first, last in aborted.get(h.producer_id, ())
        ):
            seen = max(seen, h.last_offset)
            continue
        for offset, ts, value, headers in records_with_key(batch, q.key):
            if offset < p.log_start or offset <= seen or (end is not None and offset >= end):
                continue
            if q.start_ms is not None and ts < q.start_ms:
                continue
            if q.end_ms is not None and ts > q.end_ms:
                continue
            out.append(ReplayRecord(p.partition, offset, ts, q.key, value, headers))
        seen = max(seen, h.last_offset)
    return out


def records_with_key(
    batch: bytes | memoryview, key: bytes
) -> list[tuple[int, int, bytes | None, tuple[tuple[str, bytes | None], ...]]]:
    """(offset, timestamp, value, headers) of the records of `batch` keyed `key`: only
    their keys are read until one matches (most records in a block are other keys')."""
    h, buf, spans = record_spans(batch)
    want = len(key)
    out = []
    for ts_delta, offset_delta, key_pos, key_len, end in spans:
        if key_len == want and buf[key_pos : key_pos + key_len] == key:
            value, headers = value_and_headers(buf, key_pos, key_len, end)
            out.append(
                (h.base_offset + offset_delta, record_timestamp(h, ts_delta), value, headers)
            )
    return out
