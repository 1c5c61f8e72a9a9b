"""Producer ids for InitProducerId: unique across crashes and brokers."""

from __future__ import annotations

import asyncio

from broker.metadata_store import PRODUCER_ID_BLOCK, MetadataStore


class ProducerIds:
    def __init__(self, meta: MetadataStore, meta_lock: asyncio.Lock) -> None:
        """`meta_lock`: held for each change of the metadata document."""
        self.meta = meta
        self._meta_lock = meta_lock
        self._lock = asyncio.Lock()
        self._next = self._end = 0

    async def allocate(self) -> int:
        """A producer id never handed out before, even across crashes and brokers: each
        broker takes blocks of ids from the metadata, persisted before use."""
        async with self._lock:
            if self._next >= self._end:

                def change() -> int:
                    start = self.meta.producer_id_limit
                    self.meta.producer_id_limit = start + PRODUCER_ID_BLOCK
                    return start

                async with self._meta_lock:
                    start = await self.meta.update(change)
                self._next, self._end = start, start + PRODUCER_ID_BLOCK
            pid = self._next
            self._next += 1
            return pid
