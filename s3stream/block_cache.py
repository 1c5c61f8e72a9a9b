"""The block cache: object blocks for catch-up readers, with readahead, in bounded memory.

A miss fetches the wanted block and the blocks that follow it in the same object in
one ranged GET (up to `readahead_bytes`); a hit on a block starts the next such GET in
the background, so a reader going forward finds its blocks already here. Blocks are
views of their GET's buffer and are evicted least recently used. GETs in flight are
bounded in bytes, so catch-up readers queue for the store instead of filling memory
or crowding out the uploader that produce depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

from s3stream.store import ObjectStore, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BlockRef:
    object_id: int
    key: str
    position: int
    size: int

    @property
    def end(self) -> int:
        return self.position + self.size


class ByteBudget:
    """An asyncio semaphore counted in bytes; a request larger than the whole budget
    waits until nothing else is in flight, then goes alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, n: int):
        n = min(n, self.limit)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            async with self._cond:
                self.used -= n
                self._cond.notify_all()


class BlockCache:
    def __init__(
        self,
        store: ObjectStore,
        max_bytes: int,
        readahead_bytes: int,
        inflight_bytes: int,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.readahead_bytes = readahead_bytes
        self.budget = ByteBudget(inflight_bytes)
        self.bytes = 0
        self._blocks: OrderedDict[tuple[int, int], memoryview] = OrderedDict()
        self._inflight: dict[tuple[int, int], asyncio.Future[memoryview]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0
        self.gets = 0
        self.get_bytes = 0

    async def read(self, want: BlockRef, ahead: list[BlockRef]) -> memoryview:
        """The bytes of block `want`; `ahead` are the blocks a forward reader needs next
        (in order), candidates for readahead."""
        key = (want.object_id, want.position)
        block = self._blocks.get(key)
        if block is not None:
            self.hits += 1
            self._blocks.move_to_end(key)
            self._read_ahead(ahead)
            return block
        fut = self._inflight.get(key)
        if fut is not None:
            self.hits += 1
            self._read_ahead(ahead)
            return await asyncio.shield(fut)
        self.misses += 1
        span = self._span([want, *ahead])
        fut = self._start_fetch(span)[key]
        self._read_ahead(ahead[len(span) - 1 :])
        return await asyncio.shield(fut)

    def _span(self, blocks: list[BlockRef]) -> list[BlockRef]:
        """The longest run from blocks[0] that one GET can bring: same object,
        contiguous, not cached or in flight, within the readahead size."""
        span = [blocks[0]]
        total = blocks[0].size
        for b in blocks[1:]:
            last = span[-1]
            if b.object_id != last.object_id or b.position != last.end:
                break
            if total + b.size > self.readahead_bytes:
                break
            k = (b.object_id, b.position)
            if k in self._blocks or k in self._inflight:
                break
            span.append(b)
            total += b.size
        return span

    def _read_ahead(self, ahead: list[BlockRef]) -> None:
        """Start fetching the first run of `ahead` not cached or in flight (one GET)."""
        seen = 0
        for i, b in enumerate(ahead):
            seen += b.size
            if seen > 2 * self.readahead_bytes:
                return
            k = (b.object_id, b.position)
            if k in self._blocks or k in self._inflight:
                continue
            self._start_fetch(self._span(ahead[i:]))
            return

    def _start_fetch(self, span: list[BlockRef]) -> dict[tuple[int, int], asyncio.Future]:
        """Register the span's blocks as in flight and start the GET in the background."""
        loop = asyncio.get_running_loop()
        futs = {}
        for b in span:
            fut = loop.create_future()
            fut.add_done_callback(_quiet)
            futs[(b.object_id, b.position)] = self._inflight[(b.object_id, b.position)] = fut
        task = asyncio.ensure_future(self._fetch(span, futs))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return futs

    async def _fetch(self, span: list[BlockRef], futs: dict[tuple[int, int], asyncio.Future]):
        start, end = span[0].position, span[-1].end
        try:
            async with self.budget.hold(end - start):
                data = await self.store.get(span[0].key, start, end)
            if len(data) != end - start:
                raise StoreUnavailable(
                    f"{span[0].key}: short read of {len(data)} bytes, not {end - start}"
                )
            self.gets += 1
            self.get_bytes += len(data)
            view = memoryview(data)
            for b in span:
                k = (b.object_id, b.position)
                block = view[b.position - start : b.end - start]
                if len(span) > 1:  # a view would pin the whole GET's buffer past eviction
                    block = memoryview(bytes(block))
                self._insert(k, block)
                futs[k].set_result(block)
        except BaseException as e:
            for fut in futs.values():
                if not fut.done():
                    if isinstance(e, Exception):
                        fut.set_exception(e)
                    else:
                        fut.cancel()
            if not isinstance(e, Exception):
                raise
        finally:
            for k in futs:
                self._inflight.pop(k, None)

    def _insert(self, k: tuple[int, int], block: memoryview) -> None:
        old = self._blocks.pop(k, None)
        if old is not None:
            self.bytes -= len(old)
        if len(block) > self.max_bytes:
            return
        self._blocks[k] = block
        self.bytes += len(block)
        while self.bytes > self.max_bytes:
            _, evicted = self._blocks.popitem(last=False)
            self.bytes -= len(evicted)

    def drop_object(self, object_id: int) -> None:
        """Forget a deleted object's blocks."""
        for k in [k for k in self._blocks if k[0] == object_id]:
            self.bytes -= len(self._blocks.pop(k))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task


def _quiet(fut: asyncio.Future) -> None:
    """Mark a readahead's failure as seen: a reader that wants the block retries it."""
    if not fut.cancelled():
        fut.exception()
