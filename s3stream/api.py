"""What the object tier works on, and what it needs from the log above it.

After AutoMQ's s3stream api: the tier uploads, compacts and catalogs *streams*, each
named by (topic id, index), without knowing what a Kafka partition is. The broker's
partitions implement `Stream`, and its log hands the uploader a `WalSource`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

WAL = -1  # object id of an entry that is a single batch in the WAL

# one object block of a stream: (base offset, last offset, max timestamp, position in
# the object, size, object id)
BlockRow = tuple[int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class BatchRef:
    """Where one index entry lives: a batch in the WAL (object_id WAL, position in the
    WAL) or a block of batches in an object (position inside that object)."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    position: int
    size: int
    object_id: int = WAL

    @property
    def in_wal(self) -> bool:
        return self.object_id == WAL


@dataclass(frozen=True, slots=True)
class WalSlice:
    """A run of a stream's synced WAL batches, column by column (for the uploader).
    `cached`: the stream's batches still in memory, by base offset; only ever read,
    from the uploader's worker thread."""

    base_offsets: array
    last_offsets: array
    max_timestamps: array
    positions: array
    sizes: array
    cached: Mapping[int, bytes]

    def __len__(self) -> int:
        return len(self.base_offsets)

    @property
    def last_offset(self) -> int:
        return self.last_offsets[-1]


class Stream(Protocol):
    """One stream's log as the tier sees it: object blocks first, then WAL batches."""

    topic_id: bytes
    index: int
    leader_epoch: int  # the snapshot and hand-off records name the leadership
    deleted: bool

    def holds_at(self, epoch: int) -> bool:
        """Whether this broker still holds the stream as it did at leader `epoch` (not
        deleted, not dropped and opened again meanwhile)."""
        ...

    def record_block(self, ref: BatchRef) -> None:
        """Index an object block (opening from the bucket, before the WAL replay)."""
        ...

    def stream_state(self) -> Any:
        """The owner's own state as of the end of the object blocks, stored beside
        them (msgpack-able, opaque to the tier), or None."""
        ...

    def wal_slice(self, durable_end: int) -> WalSlice | None:
        """The WAL batches not yet uploaded whose entries end by `durable_end`."""
        ...

    def uploaded(self, last_offset: int, blocks: list[BatchRef]) -> None:
        """The WAL batches up to `last_offset` now live in `blocks`."""
        ...

    def object_ids(self) -> Sequence[int]:
        """The object of each object block, in offset order."""
        ...

    def object_rows(self) -> Iterable[BlockRow]:
        """The object blocks, in offset order."""
        ...

    def object_run(self, ids: set[int]) -> list[BatchRef] | None:
        """The blocks that lie in objects `ids`; None if they are not contiguous."""
        ...

    def replace_run(self, ids: set[int], blocks: list[BatchRef]) -> None:
        """Put `blocks` in place of the (contiguous) blocks in objects `ids`."""
        ...


class WalSource(Protocol):
    """The log whose synced WAL data the uploader moves out."""

    @property
    def end_position(self) -> int: ...

    @property
    def durable_position(self) -> int: ...

    def streams(self) -> Sequence[Stream]:
        """The streams whose data this broker holds."""
        ...

    def read_batches(self, run: WalSlice) -> list[bytes]:
        """The bytes of a run's batches (on the uploader's worker thread)."""
        ...
