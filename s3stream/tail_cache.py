"""The tail cache: recently appended batches kept in memory for tailing consumers.

One byte budget across all partitions, evicted oldest-first, so its memory is
bounded whatever the partition count. A miss falls through to the log's cold store.
"""

from __future__ import annotations

from collections import deque


class TailCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._fifo: deque[tuple[dict[int, bytes], int]] = deque()
        self.hits = 0
        self.misses = 0

    def put(self, shelf: dict[int, bytes], base_offset: int, batch: bytes) -> None:
        """Cache `batch` on `shelf` (one partition's dict, keyed by base offset)."""
        if len(batch) > self.max_bytes:
            return
        shelf[base_offset] = batch
        self._fifo.append((shelf, base_offset))
        self.bytes += len(batch)
        while self.bytes > self.max_bytes:
            old_shelf, old_offset = self._fifo.popleft()
            evicted = old_shelf.pop(old_offset, None)
            if evicted is not None:
                self.bytes -= len(evicted)

    def get(self, shelf: dict[int, bytes], base_offset: int) -> bytes | None:
        batch = shelf.get(base_offset)
        if batch is None:
            self.misses += 1
        else:
            self.hits += 1
        return batch

    def discard_below(self, shelf: dict[int, bytes], offset: int) -> None:
        """Forget a partition's batches based below `offset` (rewritten by the log
        cleaner: the cache must not serve what the cleaner removed)."""
        for base in [b for b in shelf if b < offset]:
            self.bytes -= len(shelf.pop(base))

    def drop(self, shelf: dict[int, bytes]) -> None:
        """Forget a deleted partition's batches now rather than when they age out."""
        self.bytes -= sum(len(b) for b in shelf.values())
        shelf.clear()
