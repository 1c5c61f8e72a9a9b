"""Background compaction of small objects, and deletion of objects nothing needs.

Many small flushes (a quiet broker, or `object` mode acking every few milliseconds)
leave many small objects, and a catch-up reader pays one GET per object. Compaction
merges a run of consecutive small objects into one, partition by partition, then
points the partitions' indexes at it. The sources, like objects whose every entry
fell below its partition's log start (retention, DeleteRecords) or whose topic was
deleted, are then unreferenced: the collector writes a catalog snapshot without
them and deletes them after a grace period, so reads already under way finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from s3stream.api import BatchRef, Stream
from s3stream.block_cache import BlockCache
from s3stream.catalog import Catalog, StoredObject
from s3stream.object_format import ObjectBuilder, PendingBatch, refs_by_partition, split_block
from s3stream.store import ObjectStoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactionSettings:
    small_object_bytes: int = 8 * 1024 * 1024
    min_objects: int = 4  # a run shorter than this is left alone
    max_bytes: int = 64 * 1024 * 1024  # size of one merged object, at most
    block_bytes: int = 1024 * 1024
    delete_delay_s: float = 30.0


class Compactor:
    def __init__(
        self,
        streams: Callable[[], Sequence[Stream]],
        catalog: Catalog,
        cache: BlockCache,
        settings: CompactionSettings,
        deletes_objects: bool = True,
    ) -> None:
        """`streams()`: those whose data this broker holds. `deletes_objects` False in
        cluster mode: another broker may have taken over a stream with these objects,
        so only the controller's sweep over every catalog deletes them."""
        self._streams = streams
        self.catalog = catalog
        self.cache = cache
        self.settings = settings
        self._doomed: list[tuple[float, list[StoredObject]]] = []
        self._to_retire: list[StoredObject] = []
        self.compactions = 0
        self.objects_deleted = 0
        self.deletes_objects = deletes_objects

    # --- compaction -------------------------------------------------------------------

    def _pick_run(self, used: set[int], skip: set[int]) -> list[StoredObject]:
        """The first run of consecutive small objects of this broker's, all still in use
        (objects no partition needs are the collector's, not worth merging; other
        brokers' objects, named here for partitions taken over, are left as they are)."""
        s = self.settings
        run: list[StoredObject] = []
        total = 0
        own = [
            o for o in self.catalog.objects.values() if o.key.startswith(self.catalog.data_prefix)
        ]
        for obj in sorted(own, key=lambda o: o.seq):
            if obj.id not in used or obj.id in skip:
                continue
            if obj.size < s.small_object_bytes and total + obj.size <= s.max_bytes:
                run.append(obj)
                total += obj.size
                continue
            if len(run) >= s.min_objects:
                return run
            run, total = [], 0
            if obj.size < s.small_object_bytes:
                run, total = [obj], obj.size
        return run if len(run) >= s.min_objects else []

    async def compact_once(self) -> bool:
        """Merge one run of small objects; False if there was none."""
        partitions = self._streams()
        used: set[int] = set()
        for p in partitions:
            used.update(p.object_ids())
        skip: set[int] = set()
        for _ in range(4):
            run = self._pick_run(used, skip)
            if not run:
                return False
            ids = {o.id for o in run}
            plan = self._plan(partitions, ids)
            if plan is not None:
                break
            skip |= ids  # another broker's objects sit between them in some partition
        else:
            return False
        started = time.monotonic()
        bodies = {o.id: b for o, b in zip(run, await self._get_all(run), strict=True)}
        created_ms = int(time.time() * 1000)
        builder, body = await asyncio.to_thread(self._build, plan, bodies, created_ms)
        seq = self.catalog.allocate_seq()
        try:
            await self.catalog.store.put(self.catalog.data_key(seq), body, if_none_match=True)
        except BaseException:
            self.catalog.abandon(seq)
            raise
        merged = self.catalog.add(seq, len(body), created_ms)
        new_refs = refs_by_partition(builder.entries, merged.id)
        for p, _ in plan:
            if p.deleted:
                continue
            now_in = p.object_run(ids)
            if now_in is None:
                log.error("%s: compacted objects not contiguous in its index; left as is", p)
                continue
            if now_in:  # else retention took them meanwhile
                p.replace_run(ids, new_refs[(p.topic_id, p.index)])
        self.compactions += 1
        log.info(
            "compacted %d objects (%d bytes) into %s (%d bytes) in %.2fs",
            len(run),
            sum(o.size for o in run),
            merged.key,
            len(body),
            time.monotonic() - started,
        )
        return True

    @staticmethod
    def _plan(
        streams: Sequence[Stream], ids: set[int]
    ) -> list[tuple[Stream, list[BatchRef]]] | None:
        """Each stream's entries in the run; None if they are not contiguous in some
        stream's index (a merge could not replace them in one piece)."""
        plan = []
        for p in streams:
            refs = p.object_run(ids)
            if refs is None:
                return None
            if refs:
                plan.append((p, refs))
        return plan

    def _build(
        self,
        plan: list[tuple[Stream, list[BatchRef]]],
        bodies: dict[int, bytes],
        created_ms: int,
    ) -> tuple[ObjectBuilder, bytes]:
        """Re-block the partitions' batches into one object (on a thread: CPU work)."""
        builder = ObjectBuilder(self.settings.block_bytes)
        for p, refs in plan:
            batches = []
            for r in refs:
                block = memoryview(bodies[r.object_id])[r.position : r.position + r.size]
                batches.extend(PendingBatch(*b) for b in split_block(block))
            builder.add_partition(p.topic_id, p.index, batches)
        return builder, builder.finish(created_ms)

    async def _get_all(self, run: list[StoredObject]) -> list[bytes]:
        return list(await asyncio.gather(*(self.catalog.store.get(o.key) for o in run)))

    # --- deletion ---------------------------------------------------------------------

    async def collect(self, now: float | None = None) -> None:
        """Snapshot without unreferenced objects, then delete those whose grace ended."""
        now = time.monotonic() if now is None else now
        dead = self.catalog.unreferenced(self._streams())
        if dead:
            self.catalog.retire(dead)
            self._to_retire.extend(dead)
        if self._to_retire:
            await self.catalog.write_snapshot(self._streams())
            self._doomed.append((now + self.settings.delete_delay_s, self._to_retire))
            self._to_retire = []
        due = [objs for deadline, objs in self._doomed if deadline <= now]
        self._doomed = [(d, objs) for d, objs in self._doomed if d > now]
        for objs in due:
            if not self.deletes_objects:
                self.catalog.forget(objs)
                continue
            try:
                await self.catalog.store.delete([o.key for o in objs])
            except ObjectStoreError:
                self._doomed.append((now, objs))  # again next time
                raise
            for o in objs:
                self.cache.drop_object(o.id)
            self.catalog.forget(objs)
            self.objects_deleted += len(objs)
            log.info("deleted %d objects no partition needs", len(objs))

    async def delete_garbage(self, keys: list[str]) -> None:
        """Objects found dead when opening (see Catalog.load)."""
        if keys:
            await self.catalog.store.delete(keys)
            log.info("deleted %d leftover objects: %s", len(keys), keys[:5])
