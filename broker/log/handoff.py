"""Leadership changes (cluster mode): adopting partitions from what another broker
stored, leading them, and letting them go, with a hand-off or without one.

Nothing is copied on a move: the broker letting go uploads its WAL's tail and writes
a hand-off record naming the partition's objects; the next leader's catalog just
names those objects too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from broker.log.appends import AppendPath
from broker.log.loader import LogLoader, Orphan, stored_cleaned_end, stored_txns
from broker.log.partition import Partition
from broker.log.reads import ReadPath
from broker.log.topics import TopicRegistry, TopicState
from broker.log.watch import Watchers
from s3stream.api import BatchRef
from s3stream.catalog import Catalog, PartitionView
from s3stream.uploader import Uploader

log = logging.getLogger(__name__)


class PartitionUnavailable(Exception):
    """A partition's stored log cannot be found where the cluster says it is."""


class HandOff:
    def __init__(
        self,
        registry: TopicRegistry,
        catalog: Catalog,
        uploader: Uploader,
        appends: AppendPath,
        watchers: Watchers,
        loader: LogLoader,
        reads: ReadPath,
        on_dropped: Callable[[TopicState, Partition], None] | None,
    ) -> None:
        """`on_dropped(topic, p)` when a partition stops being this broker's."""
        self.registry = registry
        self.catalog = catalog
        self.store = catalog.store
        self.uploader = uploader
        self.appends = appends
        self.wal = appends.wal
        self.watchers = watchers
        self.loader = loader
        self.reads = reads
        self._on_dropped = on_dropped
        self.upload_bytes = 0  # uploaded early, to hand partitions over
        self._unavailable: set[tuple[Partition, int]] = set()  # adoptions refused, logged

    # --- taking partitions ------------------------------------------------------------

    async def adopt(self, wanted: list[tuple[Partition, int, int]]) -> list[Partition]:
        """Open partitions to lead them: (partition, leader epoch, source broker id, or -1
        for a partition nobody has stored anything of yet).

        The partition's object entries come from what the source stored: the hand-off
        record it wrote when letting go, or its catalog (snapshot and newer objects,
        after a failover), whichever describes more. Nothing is copied: this broker's
        catalog just names those objects. The opened partitions are held and
        snapshotted here, but do not lead yet: the caller records in the cluster that
        this broker now stores them, then lets them lead. A partition whose source
        describes nothing is not opened (logged, and retried with the next change),
        rather than opened empty with its offsets reused.
        """
        views: dict[int, dict] = {}
        opened = []
        unknown_producers = []
        for p, epoch, source in wanted:
            if p.deleted:
                continue
            try:
                view = await self.stored_view(p, source, views)
            except PartitionUnavailable as e:
                if (p, epoch) not in self._unavailable:  # retried often: said once
                    self._unavailable.add((p, epoch))
                    log.error("%s", e)
                continue
            self.drop(p)
            p.leader_epoch = epoch
            for key, seq, osize, created, base, last, ts, pos, size in view.rows if view else ():
                obj = self.catalog.ensure(key, seq, osize, created)
                p.record_block(BatchRef(base, last, ts, pos, size, obj.id))
            p.txns = stored_txns(view, p)
            p.cleaned_end = stored_cleaned_end(view)
            if view is not None and view.producers is not None and not view.discovered:
                p.producers.restore(view.producers)  # a hand-off: the record is current
            else:
                unknown_producers.append((p, view))  # stored state, then newer objects
            p.held = True
            opened.append(p)
        self.registry.apply_log_starts()
        for p in opened:
            p.epoch_start_offset = p.log_end_offset
        try:
            await self.loader.restore_producers(unknown_producers)
            await self.loader.restore_transactions(opened)
            await self.loader.replay_internal(opened)
            await self.catalog.write_snapshot(self.registry.live_partitions())
        except BaseException:
            for p in opened:
                self.drop(p)
            raise
        return opened

    def lead(self, p: Partition) -> None:
        """Let an adopted partition take writes and serve reads."""
        if p.held:
            p.leading = True
            self.watchers.wake(p)

    async def stored_view(
        self, p: Partition, source: int, views: dict[int, dict]
    ) -> PartitionView | None:
        """What `source` stored of `p` (None: nothing yet, source -1); `views` caches the
        catalogs read, by broker id."""
        if source < 0:
            return None
        record = await self.catalog.read_handoff(p.topic_id, p.index)
        if record is not None and record.writer != source:
            record = None  # another broker's, from an earlier hand-off
        if source not in views:
            views[source] = await self.catalog.read_other(source)
        view = views[source].get((p.topic_id, p.index))
        candidates = [v for v in (view, record) if v is not None]
        if not candidates:
            raise PartitionUnavailable(
                f"{p}: broker {source} stored it last, but neither its catalog nor a "
                "hand-off record describes it; not opened"
            )
        # a record is the newest word unless its writer went on writing (an aborted
        # hand-off whose record could not be deleted): then its catalog says more
        return max(candidates, key=lambda v: (v.end, v is record))

    # --- letting go -------------------------------------------------------------------

    async def write_handoff(self, p: Partition, producers: bool = True) -> None:
        """Describe a partition's stored log for its next leader; `producers` False when
        the producer state also covers batches that are not uploaded (they would look
        like duplicates to the next leader when they come back as orphans)."""
        key = self.catalog.handoff_key(p.topic_id, p.index)
        state = p.producers.snapshot() if producers else None
        await self.store.put(key, self.catalog.handoff_record(p, state))

    async def delete_handoffs(self, parts: list[Partition]) -> None:
        await self.store.delete([self.catalog.handoff_key(p.topic_id, p.index) for p in parts])

    async def release(self, parts: list[Partition]) -> None:
        """A hand-off's first half: stop taking writes, upload everything appended so
        far and write each partition's hand-off record. On failure the partitions lead
        again (the hand-off is retried later)."""
        for p in parts:
            p.leading = False
            self.watchers.wake(p)
        try:
            # partitions whose every batch is in objects already (quiet ones, internal
            # ones) need no upload: their hand-off record names it all
            if any(p.first_position is not None for p in parts):
                await self._upload_all()
            await asyncio.gather(*(self.write_handoff(p) for p in parts))
        except BaseException:
            for p in parts:
                p.leading = p.held
            with contextlib.suppress(Exception):
                await self.delete_handoffs(parts)
            raise

    async def _upload_all(self) -> None:
        """Upload everything appended so far: every partition's tail goes up with the
        moving ones', one object rather than many."""
        end = self.wal.end_position
        if end > self.wal.durable_position:
            await self.wal.wait_durable(end)
        uploaded = self.uploader.bytes_uploaded
        while self.uploader.uploaded_position < end:
            if not await self.uploader.upload():
                await asyncio.sleep(0.01)
        self.upload_bytes += self.uploader.bytes_uploaded - uploaded

    def drop(self, p: Partition, lost: bool = False) -> None:
        """Forget a partition's log here: another broker leads it now. `lost`: it was
        taken without a hand-off, so appends not yet acknowledged must never be."""
        was_held = p.held
        p.reset()
        if lost:
            p.fenced += 1
        self.appends.forget(p)
        state = self.registry.topics_by_id.get(p.topic_id)
        if was_held and state is not None and self._on_dropped is not None:
            self._on_dropped(state, p)

    async def unuploaded(self, p: Partition) -> list[Orphan]:
        """The partition's acknowledged batches that are only in the WAL, as orphans."""
        idx = p.batches
        out = []
        for i in range(p.object_entries, len(idx)):
            if idx.last_offsets[i] >= p.high_watermark:
                break  # never acknowledged
            for batch in await self.reads.read_entry(idx.ref(i), p):
                out.append((p.topic_id, p.index, idx.base_offsets[i], bytes(batch)))
        return out
