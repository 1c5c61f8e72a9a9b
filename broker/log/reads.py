"""The read path: batches from the tail cache, the WAL, or object blocks.

A partition's index says where each entry lives. WAL entries come from the tail
cache, else the WAL (the cold reader); object blocks from the tail cache when it
still has all their batches (recently uploaded), else the block cache, which fetches
them from the object store with readahead.
"""

from __future__ import annotations

from typing import Protocol

from broker.log.partition import Partition
from protocol import records
from s3stream.api import BatchRef
from s3stream.block_cache import BlockCache, BlockRef
from s3stream.catalog import Catalog
from s3stream.object_format import split_block
from s3stream.store import ObjectNotFound
from s3stream.tail_cache import TailCache
from wal import TrimmedRead


class ColdReader(Protocol):
    """Where WAL batches that left the tail cache are read from."""

    async def read(self, ranges: list[tuple[int, int]]) -> list[bytes]: ...


class ReadPath:
    def __init__(
        self,
        tail: TailCache,
        cold: ColdReader,
        catalog: Catalog,
        block_cache: BlockCache,
        readahead_bytes: int,
    ) -> None:
        self.tail = tail
        self.cold = cold
        self.catalog = catalog
        self.block_cache = block_cache
        self.readahead_bytes = readahead_bytes

    async def read(
        self,
        p: Partition,
        offset: int,
        max_bytes: int,
        limit_offset: int,
        first_may_exceed: bool = True,
    ) -> list[bytes | memoryview]:
        """Batches from the one holding `offset`, below `limit_offset`, up to `max_bytes`
        (the first may exceed it if `first_may_exceed`, as KIP-74 wants).

        An upload (which trims the WAL) or a compaction (which retires objects) may move
        the batches while the read is under way: then the index is asked again.
        """
        for attempt in range(3):
            try:
                return await self._read(p, offset, max_bytes, limit_offset, first_may_exceed)
            except (TrimmedRead, ObjectNotFound):
                if attempt == 2 or offset < p.log_start_offset:
                    raise
        raise AssertionError("unreachable")

    async def _read(
        self,
        p: Partition,
        offset: int,
        max_bytes: int,
        limit_offset: int,
        first_may_exceed: bool,
    ) -> list[bytes | memoryview]:
        refs = p.refs_from(offset, limit_offset, max_bytes, first_may_exceed)
        parts: list[list[bytes | memoryview] | None] = []
        missing = []
        for i, r in enumerate(refs):
            if r.in_wal:
                cached = self.tail.get(p.tail, r.base_offset)
                parts.append(None if cached is None else [cached])
                if cached is None:
                    missing.append(i)
            else:
                parts.append(await self._read_block(p, r, offset))
        if missing:
            cold = await self.cold.read([(refs[i].position, refs[i].size) for i in missing])
            for i, data in zip(missing, cold, strict=True):
                parts[i] = [data]
        out: list[bytes | memoryview] = []
        total = 0
        for r, group in zip(refs, parts, strict=True):
            assert group is not None
            if r.in_wal:  # one batch, within the limits refs_from applied
                out.append(group[0])
                total += len(group[0])
                continue
            for b in group:  # a block: its batches may run past the limits
                if records.parse_header(b).base_offset >= limit_offset:
                    return out
                if total + len(b) > max_bytes and (out or not first_may_exceed):
                    return out
                out.append(b)
                total += len(b)
        return out

    async def _read_block(
        self, p: Partition, ref: BatchRef, offset: int
    ) -> list[bytes | memoryview]:
        """The batches of an object block that end at or after `offset`: from the tail
        cache when it still has them all (recently uploaded), else the block cache."""
        start = max(offset, ref.base_offset)
        walked: list[bytes | memoryview] = []
        cur = start
        while cur <= ref.last_offset:
            b = p.tail.get(cur)
            if b is None:
                break
            walked.append(b)
            h = records.parse_header(b)
            cur = h.base_offset + h.last_offset_delta + 1
        if walked and cur > ref.last_offset:
            self.tail.hits += 1
            return walked
        obj = self.catalog.get(ref.object_id)
        want = BlockRef(ref.object_id, obj.key, ref.position, ref.size)
        ahead = self._blocks_ahead(p, ref)
        data = await self.block_cache.read(want, ahead)
        return [b for _, last, _, b in split_block(data) if last >= offset]

    def _blocks_ahead(self, p: Partition, ref: BatchRef) -> list[BlockRef]:
        """The partition's object blocks after `ref`, for readahead: the window the cache
        starts GETs in (two readaheads) plus one more, so the GET started at the window's
        far edge is still a whole readahead long rather than the window's leftover."""
        idx = p.batches
        i = idx.find(ref.last_offset + 1)
        out = []
        total = 0
        limit = 3 * self.readahead_bytes
        while i < p.object_entries and total < limit:
            oid = idx.objects[i]
            obj = self.catalog.objects.get(oid)
            if obj is None:
                break
            out.append(BlockRef(oid, obj.key, idx.positions[i], idx.sizes[i]))
            total += idx.sizes[i]
            i += 1
        return out

    async def read_entry(self, ref: BatchRef, p: Partition) -> list[bytes | memoryview]:
        """Every batch of one index entry (one WAL batch, or an object block)."""
        if not ref.in_wal:
            return await self._read_block(p, ref, ref.base_offset)
        cached = self.tail.get(p.tail, ref.base_offset)
        if cached is not None:
            return [cached]
        return [(await self.cold.read([(ref.position, ref.size)]))[0]]
