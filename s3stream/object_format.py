"""The layout of one data object: raw batches in blocks, an index, a fixed footer.

    block* | key index | key index locator | index entry* | footer

(version 1 objects, written before the key index, are `block* | index entry* | footer`
and stay readable: their footer says version 1 and they simply have no key index.)

One object holds the batches of many partitions from one upload (or one compaction):
each partition's batches are contiguous, cut into blocks of about `block_bytes`, so a
catch-up reader fetches only the blocks it needs, and a run of them in one ranged GET.
Batches stay exactly as the WAL held them (offsets already assigned). A reader that
knows nothing of the object fetches the footer (fixed size, at the end), then the
index it points to, then only the byte ranges it wants. The key index (see
s3stream.key_index) sits just before the block index, its locator right before
the index, so a reader of the block index never needs to know it is there.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from protocol.records import iter_headers
from s3stream import key_index
from s3stream.api import BatchRef
from s3stream.key_index import BlockKeys

MAGIC = b"STRATAO1"
VERSION = 2
READABLE_VERSIONS = (1, 2)
# index position, index size, index crc32c, created (ms), version, magic
FOOTER = struct.Struct(">QIIqH8s")
# topic id, partition, first offset, last offset, max timestamp, position, size, batches
ENTRY = struct.Struct(">16siqqqQII")
# key index position, key index size, key index crc32c (version 2: just before the index)
LOCATOR = struct.Struct(">QII")
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

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES, version: int = VERSION) -> None:
        """`version` 1 writes the old layout, without a key index (tests of old objects)."""
        self.block_bytes = block_bytes
        self.version = version
        self.chunks: list[bytes | bytearray | memoryview] = []
        self.entries: list[BlockEntry] = []
        self.block_keys: list[BlockKeys] = []
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
            if self.version >= 2:  # decodes the records' keys: the caller is on a thread
                self.block_keys.append(key_index.index_block(b.data for b in batches[i:j]))
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
        tail: list[bytes] = []
        index_position = self.size
        if self.version >= 2:
            keys = key_index.encode(self.block_keys)
            tail = [keys, LOCATOR.pack(self.size, len(keys), crc32c.crc32c(keys))]
            index_position += len(keys) + LOCATOR.size
        footer = FOOTER.pack(
            index_position, len(index), crc32c.crc32c(index), created, self.version, MAGIC
        )
        return b"".join([*self.chunks, *tail, index, footer])

    @property
    def key_index_bytes(self) -> int:
        """Size of the key index section the object carries (0 in version 1)."""
        if self.version < 2:
            return 0
        return len(key_index.encode(self.block_keys)) + LOCATOR.size


@dataclass(frozen=True, slots=True)
class Footer:
    index_position: int
    index_size: int
    index_crc: int
    created_ms: int
    version: int = VERSION

    @property
    def locator_range(self) -> tuple[int, int] | None:
        """Where the key index locator lies; None: the object predates key indexes."""
        if self.version < 2:
            return None
        return self.index_position - LOCATOR.size, self.index_position


@dataclass(frozen=True, slots=True)
class KeyIndexLocator:
    position: int
    size: int
    crc: int

    @property
    def end(self) -> int:
        return self.position + self.size


def parse_locator(footer: Footer, raw: bytes | memoryview) -> KeyIndexLocator:
    """The locator (the bytes at footer.locator_range)."""
    if len(raw) != LOCATOR.size:
        raise CorruptObject("key index locator of the wrong size")
    loc = KeyIndexLocator(*LOCATOR.unpack(raw))
    if loc.end + LOCATOR.size != footer.index_position:
        raise CorruptObject("key index locator does not point before the index")
    return loc


def parse_key_index(loc: KeyIndexLocator, raw: bytes | memoryview) -> list[BlockKeys]:
    """The key index section's block entries, in the order of the block index."""
    if len(raw) != loc.size or crc32c.crc32c(raw) != loc.crc:
        raise CorruptObject("key index does not match its locator")
    try:
        return key_index.decode(raw)
    except ValueError as e:
        raise CorruptObject(f"key index: {e}") from None


def parse_footer(tail: bytes | memoryview) -> Footer:
    """The footer from the last bytes of an object (at least FOOTER.size of them)."""
    if len(tail) < FOOTER.size:
        raise CorruptObject("object shorter than its footer")
    pos, size, crc, created, version, magic = FOOTER.unpack_from(tail, len(tail) - FOOTER.size)
    if magic != MAGIC or version not in READABLE_VERSIONS:
        raise CorruptObject(f"bad footer magic {magic!r} / version {version}")
    return Footer(pos, size, crc, created, version)


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
