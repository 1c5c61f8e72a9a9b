"""A partition's index of batches: one entry per WAL batch or object block.

Columns of 64-bit integers (about 48 bytes an entry), sorted by offset, so millions
of entries stay compact and slices of them are C-speed copies.
"""

from __future__ import annotations

import bisect
from array import array

from s3stream.api import WAL, BatchRef


class BatchIndex:
    """Compact index (about 48 bytes an entry), sorted by offset."""

    def __init__(self) -> None:
        self.base_offsets = array("q")
        self.last_offsets = array("q")
        self.max_timestamps = array("q")
        self.positions = array("q")
        self.sizes = array("q")
        self.objects = array("q")

    def _columns(self) -> tuple[array, ...]:
        return (
            self.base_offsets,
            self.last_offsets,
            self.max_timestamps,
            self.positions,
            self.sizes,
            self.objects,
        )

    def __len__(self) -> int:
        return len(self.base_offsets)

    def add(
        self,
        base_offset: int,
        last_offset: int,
        max_ts: int,
        position: int,
        size: int,
        object_id: int = WAL,
    ) -> None:
        self.base_offsets.append(base_offset)
        self.last_offsets.append(last_offset)
        self.max_timestamps.append(max_ts)
        self.positions.append(position)
        self.sizes.append(size)
        self.objects.append(object_id)

    def drop_first(self, n: int) -> None:
        """Forget the first `n` entries (deleted by retention or DeleteRecords)."""
        for arr in self._columns():
            del arr[:n]

    def replace(self, start: int, stop: int, refs: list[BatchRef]) -> None:
        """Put `refs` in place of entries [start, stop)."""
        values = [
            [r.base_offset for r in refs],
            [r.last_offset for r in refs],
            [r.max_timestamp for r in refs],
            [r.position for r in refs],
            [r.size for r in refs],
            [r.object_id for r in refs],
        ]
        for arr, new in zip(self._columns(), values, strict=True):
            arr[start:stop] = array("q", new)

    def ref(self, i: int) -> BatchRef:
        return BatchRef(
            self.base_offsets[i],
            self.last_offsets[i],
            self.max_timestamps[i],
            self.positions[i],
            self.sizes[i],
            self.objects[i],
        )

    def find(self, offset: int) -> int:
        """Index of the batch holding `offset`, or of the first batch after it."""
        i = bisect.bisect_right(self.base_offsets, offset) - 1
        if i < 0:
            return 0
        if self.last_offsets[i] < offset:
            return i + 1
        return i
