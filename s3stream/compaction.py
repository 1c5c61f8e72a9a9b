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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s3stream.block_cache import BlockCache
from s3stream.catalog import Catalog, StoredObject
from s3stream.object_format import ObjectBuilder, PendingBatch, refs_by_partition, split_block
from s3stream.store import ObjectStoreError

if TYPE_CHECKING:
    from broker.log.manager import LogManager
    from broker.log.partition import BatchRef, Partition

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
        logs: LogManager,
        catalog: Catalog,
        cache: BlockCache,
        settings: CompactionSettings,
        make_ref: Callable[..., BatchRef],
    ) -> None:
        self.logs = logs
        self.catalog = catalog
        self.cache = cache
        self.settings = settings
        self._make_ref = make_ref
        self._doomed: list[tuple[float, list[StoredObject]]] = []
        self._to_retire: list[StoredObject] = []
        self.compactions = 0
        self.objects_deleted = 0
        # False in cluster mode: another broker may have taken over a partition with
        # these objects, so only the controller's sweep over every catalog deletes
        self.deletes_objects = True

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
        partitions = self.logs.live_partitions()
        used: set[int] = set()
        for p in partitions:
            used.update(p.batches.objects[: p.object_entries])
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
        new_refs = refs_by_partition(builder.entries, merged.id, self._make_ref)
        for p, _ in plan:
            if p.deleted:
                continue
            idx = p.batches
            hits = [i for i in range(p.object_entries) if idx.objects[i] in ids]
            if not hits:
                continue  # retention took them meanwhile
            if hits[-1] + 1 - hits[0] != len(hits):
                log.error("%s: compacted objects not contiguous in its index; left as is", p)
                continue
            blocks = [
                b for b in new_refs[(p.topic_id, p.index)] if b.last_offset >= p.log_start_offset
            ]
            p.size_bytes += sum(b.size for b in blocks) - sum(idx.sizes[hits[0] : hits[-1] + 1])
            idx.replace(hits[0], hits[-1] + 1, blocks)
            p.object_entries += len(blocks) - (hits[-1] + 1 - hits[0])
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
        partitions: list[Partition], ids: set[int]
    ) -> list[tuple[Partition, list[BatchRef]]] | None:
        """Each partition's entries in the run; None if they are not contiguous in some
        partition's index (a merge could not replace them in one piece)."""
        plan = []
        for p in partitions:
            idx = p.batches
            hits = [i for i in range(p.object_entries) if idx.objects[i] in ids]
            if not hits:
                continue
            if hits[-1] + 1 - hits[0] != len(hits):
                return None
            plan.append((p, [idx.ref(i) for i in hits]))
        return plan

    def _build(
        self,
        plan: list[tuple[Partition, list[BatchRef]]],
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
        dead = self.catalog.unreferenced(self.logs.live_partitions())
        if dead:
            self.catalog.retire(dead)
            self._to_retire.extend(dead)
        if self._to_retire:
            await self.catalog.write_snapshot(self.logs.live_partitions())
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
