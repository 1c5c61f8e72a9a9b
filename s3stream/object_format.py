"""The layout of one data object: raw batches in blocks, an index, a fixed footer.

    block* | index entry* | footer

One object holds the batches of many partitions from one upload (or one compaction):
each partition's batches are contiguous, cut into blocks of about `block_bytes`, so a
catch-up reader fetches only the blocks it needs, and a run of them in one ranged GET.
Batches stay exactly as the WAL held them (offsets already assigned). A reader that
knows nothing of the object fetches the footer (fixed size, at the end), then the
index it points to, then only the byte ranges it wants.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from protocol.records import iter_headers
from s3stream.api import BatchRef

MAGIC = b"STRATAO1"
VERSION = 1
# index position, index size, index crc32c, created (ms), version, magic
FOOTER = struct.Struct(">QIIqH8s")
# topic id, partition, first offset, last offset, max timestamp, position, size, batches
ENTRY = struct.Struct(">16siqqqQII")
DEFAULT_BLOCK_BYTES = 1024 * 1024


class CorruptObject(ValueError):
    """An object whose footer or index does not check out."""


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One block: a run of one partition's consecutive batches inside an object."""

    topic_id: bytes
    partition: int
    first_offset: int
    last_offset: int
    max_timestamp: int
    position: int
    size: int
    batch_count: int


def refs_by_partition(
    entries: list[BlockEntry], object_id: int
) -> dict[tuple[bytes, int], list[BatchRef]]:
    """An object's index entries as each stream's list of index entries, in the
    object's order."""
    out: dict[tuple[bytes, int], list[BatchRef]] = {}
    for e in entries:
        out.setdefault((e.topic_id, e.partition), []).append(
            BatchRef(e.first_offset, e.last_offset, e.max_timestamp, e.position, e.size, object_id)
        )
    return out


@dataclass(frozen=True, slots=True)
class PendingBatch:
    base_offset: int
    last_offset: int
    max_timestamp: int
    data: bytes | bytearray | memoryview


class ObjectBuilder:
    """Collects partitions' batches into one object body, block by block."""

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        self.chunks: list[bytes | bytearray | memoryview] = []
        self.entries: list[BlockEntry] = []
        self.size = 0

    def add_partition(self, topic_id: bytes, partition: int, batches: list[PendingBatch]) -> None:
        """Append one partition's batches (in offset order) as one or more blocks."""
        i = 0
        while i < len(batches):
            start, size, max_ts = self.size, 0, -1
            j = i
            while j < len(batches) and (j == i or size + len(batches[j].data) <= self.block_bytes):
                b = batches[j]
                self.chunks.append(b.data)
                size += len(b.data)
                max_ts = max(max_ts, b.max_timestamp)
                j += 1
            self.size += size
            self.entries.append(
                BlockEntry(
                    topic_id,
                    partition,
                    batches[i].base_offset,
                    batches[j - 1].last_offset,
                    max_ts,
                    start,
                    size,
                    j - i,
                )
            )
            i = j

    def finish(self, created_ms: int | None = None) -> bytes:
        """The whole object: blocks, index and footer in one buffer (CPU work: run it on
        a thread when the object is large)."""
        index = b"".join(
            ENTRY.pack(
                e.topic_id,
                e.partition,
                e.first_offset,
                e.last_offset,
                e.max_timestamp,
                e.position,
                e.size,
                e.batch_count,
            )
            for e in self.entries
        )
        created = int(time.time() * 1000) if created_ms is None else created_ms
        footer = FOOTER.pack(self.size, len(index), crc32c.crc32c(index), created, VERSION, MAGIC)
        return b"".join([*self.chunks, index, footer])


@dataclass(frozen=True, slots=True)
class Footer:
    index_position: int
    index_size: int
    index_crc: int
    created_ms: int


def parse_footer(tail: bytes | memoryview) -> Footer:
    """The footer from the last bytes of an object (at least FOOTER.size of them)."""
    if len(tail) < FOOTER.size:
        raise CorruptObject("object shorter than its footer")
    pos, size, crc, created, version, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    if magic != MAGIC or version != VERSION:
        raise CorruptObject(f"bad footer magic {magic!r} / version {version}")
    return Footer(pos, size, crc, created)


def parse_index(footer: Footer, index: bytes | memoryview) -> list[BlockEntry]:
    if len(index) != footer.index_size or crc32c.crc32c(index) != footer.index_crc:
        raise CorruptObject("index does not match its footer")
    if footer.index_size % ENTRY.size:
        raise CorruptObject(f"index size {footer.index_size} is not a whole number of entries")
    return [BlockEntry(*ENTRY.unpack_from(index, i)) for i in range(0, len(index), ENTRY.size)]


def split_block(block: bytes | memoryview) -> Iterator[tuple[int, int, int, memoryview]]:
    """(base offset, last offset, max timestamp, bytes) of each batch in a block."""
    view = memoryview(block)
    for pos, h in iter_headers(view):
        last = h.base_offset + h.last_offset_delta
        yield h.base_offset, last, h.max_timestamp, view[pos : pos + h.size]
