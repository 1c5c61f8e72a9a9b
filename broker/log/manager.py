"""The broker's storage: topics and partitions over the WAL, the object store and caches.

Every append is framed into the WAL; the partition indexes where it went and the
tail cache keeps a copy for tailing readers. The uploader moves synced WAL data into
objects and the index follows it there; reads past the tail cache go to the WAL for
what is not uploaded yet and to the block cache (in front of the objects) for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.log.partition import BatchRef, Partition, WalSlice
from broker.metadata_store import PRODUCER_ID_BLOCK, MetadataStore, TopicRecord
from broker.topic_config import effective
from protocol import records
from protocol.records import BatchHeader
from s3stream.block_cache import BlockCache, BlockRef
from s3stream.catalog import Catalog, PartitionView
from s3stream.compaction import Compactor
from s3stream.object_format import split_block
from s3stream.settings import ObjectTierSettings
from s3stream.store import ObjectNotFound, ObjectStore, ObjectStoreError, PreconditionFailed
from s3stream.tail_cache import TailCache
from s3stream.uploader import Uploader
from wal import TrimmedRead, WalEntry, WriteAheadLog

log = logging.getLogger(__name__)


class PartitionUnavailable(Exception):
    """A partition's stored log cannot be found where the cluster says it is."""


class ColdReader(Protocol):
    """Where WAL batches that left the tail cache are read from."""

    async def read(self, ranges: list[tuple[int, int]]) -> list[bytes]: ...


@dataclass
class TopicState:
    record: TopicRecord
    partitions: list[Partition]

    @property
    def name(self) -> str:
        return self.record.name


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    wal_end: int | None  # None: nothing was written (a duplicate)
    log_append_time: int = -1


class LogManager:
    def __init__(
        self,
        data_dir: Path,
        tail_cache_bytes: int,
        wal_segment_bytes: int,
        store: ObjectStore,
        objects: ObjectTierSettings | None = None,
        topic_defaults: dict[str, str] | None = None,
        broker_id: int = 0,
        meta: MetadataStore | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.topic_defaults = dict(topic_defaults or {})
        self.producer_id_expiration_ms = 86_400_000  # Kafka's producer.id.expiration.ms
        self.settings = objects or ObjectTierSettings()
        self.store = store
        self.meta = meta or MetadataStore(store)
        # cluster mode: partitions are held only once this broker leads them, and
        # objects are deleted by the controller's sweep over every broker's catalog
        self.cluster = meta is not None
        self.broker_id = broker_id
        self.wal = WriteAheadLog(self.data_dir / "wal", wal_segment_bytes)
        self.cold: ColdReader = self.wal
        self.tail = TailCache(tail_cache_bytes)
        self.catalog = Catalog(store, broker_id)
        s = self.settings
        self.block_cache = BlockCache(
            store, s.block_cache_bytes, s.readahead_bytes, s.read_inflight_bytes
        )
        self.uploader = Uploader(self, self.catalog, s.upload, BatchRef)
        self.compactor = Compactor(self, self.catalog, self.block_cache, s.compaction, BatchRef)
        self.compactor.deletes_objects = not self.cluster
        self.max_backlog_bytes = s.max_backlog_bytes
        self.topics: dict[str, TopicState] = {}
        self.topics_by_id: dict[bytes, TopicState] = {}
        self._unsynced: set[Partition] = set()
        self._waiters: dict[Partition, set[asyncio.Future[None]]] = {}
        self._next_producer_id = self._producer_id_end = 0
        self._producer_id_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._meta_lock = asyncio.Lock()
        # topic name -> called with each batch of that topic replayed from the WAL
        self.internal_replayers: dict[str, Callable[[bytes], None]] = {}
        # called when a partition stops being this broker's (cluster mode)
        self.on_partition_dropped: list[Callable[[TopicState, Partition], None]] = []
        # cluster mode: stores batches that other brokers' logs lack (broker.cluster.orphans)
        self.orphan_sink: (
            Callable[[list[tuple[bytes, int, int, bytes]]], Awaitable[None]] | None
        ) = None
        self._orphans: list[tuple[bytes, int, int, bytes]] = []
        self.handoff_upload_bytes = 0  # uploaded early, to hand partitions over
        self._unavailable: set[tuple[Partition, int]] = set()  # adoptions refused, logged

    # --- lifecycle --------------------------------------------------------------------

    async def open(
        self,
        leads: Callable[[bytes, int], int | None] | None = None,
        awaited: Callable[[bytes, int], bool] | None = None,
    ) -> None:
        """Metadata and object indexes from the bucket, then the WAL's tail on top.

        Cluster mode passes `leads(topic_id, partition)`: the leader epoch at which this
        broker leads the partition, or None. Only partitions whose latest snapshot here is
        of that same leadership are opened now; the others are adopted afterwards, from
        the broker the cluster names as their source. `awaited(topic_id, partition)`:
        another broker is to open it from what this one stored.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        await self.meta.load(legacy=self.data_dir / "metadata.msgpack")
        wal_dir = self.data_dir / "wal"
        if self.meta.created and any(f.stat().st_size for f in wal_dir.glob("*")):
            raise RuntimeError(
                f"{self.store.describe()} holds no Strata metadata, but the WAL in {wal_dir} "
                "holds data: is --object-store pointing at the wrong bucket or prefix? "
                "(Delete the WAL directory to start an empty broker.)"
            )
        for rec in self.meta.topics.values():
            self._add_topic_state(rec)

        def resolve(topic_id: bytes, index: int, epoch: int | None) -> Partition | None:
            p = self._partition_by_id(topic_id, index)
            if p is None or leads is None:
                return p
            if epoch is not None and leads(topic_id, index) == epoch:
                p.held, p.leader_epoch = True, epoch
            return p if p.held else None

        report, garbage, own = await self.catalog.load(resolve, BatchRef)
        if self.cluster:
            garbage = []  # perhaps another broker's now: the controller's sweep decides
            await self._keep_awaited(own, awaited)
        self._apply_log_starts()
        await self._replay_internal(self.live_partitions())
        await self._restore_producers(self.live_partitions())
        log.info(
            "opened %d objects from %s (%d newer than the snapshot, %d leftovers) in %.2fs",
            report.objects,
            self.store.describe(),
            report.discovered,
            report.garbage,
            time.monotonic() - started,
        )
        started = time.monotonic()
        counts = {"entries": 0, "skipped": 0, "uploaded": 0}
        await asyncio.to_thread(self.wal.recover, lambda e: self._replay(e, counts, own))
        log.info(
            "recovered %d batches from the WAL in %.2fs (%d already uploaded, %d of deleted "
            "topics skipped); log end %d",
            counts["entries"],
            time.monotonic() - started,
            counts["uploaded"],
            counts["skipped"],
            self.wal.end_position,
        )
        self._apply_log_starts()
        for p in self.live_partitions():
            p.epoch_start_offset = p.log_end_offset  # at most: no truncation is reported
        if self._orphans and self.orphan_sink is not None:
            await self.orphan_sink(self._orphans)  # before the WAL may be trimmed
        self._orphans = []
        firsts = [p.first_position for p in self.live_partitions()]
        self.uploader.uploaded_position = min(
            (f for f in firsts if f is not None), default=self.wal.end_position
        )
        if self.settings.object_mode:
            self.uploader.add_listener(self._on_durable)
        else:
            self.wal.add_durable_listener(self._on_durable)
        self.wal.add_durable_listener(self.uploader.on_durable)
        self.uploader.add_listener(lambda _: self.trim_wal())
        try:
            # claims the manifest: a second broker with this id on this bucket fails here
            await self.catalog.write_snapshot(self.live_partitions())
        except PreconditionFailed as e:
            raise RuntimeError(
                f"another broker with id {self.catalog.broker_id} is writing "
                f"{self.store.describe()}; each broker needs its own id (or bucket prefix)"
            ) from e
        self.wal.start()
        self.uploader.start()
        self.uploader.on_durable(self.wal.durable_position)  # what recovery left to upload
        if garbage:
            self._background(self.compactor.delete_garbage(garbage), "delete leftover objects")

    def _background(self, coro, what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as e:
                log.warning("%s failed: %r", what, e)

        task = asyncio.create_task(run(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _partition_by_id(self, topic_id: bytes, index: int) -> Partition | None:
        topic = self.topics_by_id.get(topic_id)
        if topic is None or index >= len(topic.partitions):
            return None
        return topic.partitions[index]

    def _apply_log_starts(self) -> None:
        for state in self.topics.values():
            for index, offset in state.record.log_start.items():
                if index < len(state.partitions):
                    state.partitions[index].start_at(offset)

    async def _restore_producers(self, partitions: list[Partition]) -> None:
        """Idempotent producers' state from each partition's newest uploaded batches, so a
        retry of a batch acknowledged just before a crash is still seen as a duplicate
        when the WAL no longer holds it (trimmed, or the data directory is gone)."""
        limit = asyncio.Semaphore(16)

        async def newest(p: Partition) -> list[tuple[BatchHeader, int]]:
            idx = p.batches
            i, total = p.object_entries, 0
            while i > 0 and total < 1024 * 1024 and p.object_entries - i < 4:
                i -= 1
                total += idx.sizes[i]
            out = []
            async with limit:
                for j in range(i, p.object_entries):
                    for base, batch in await self._stored_batches(idx.ref(j)):
                        out.append((records.parse_header(batch), base))
            return out

        parts = [p for p in partitions if p.object_entries]
        found = await asyncio.gather(*(newest(p) for p in parts))
        for p, batches in zip(parts, found, strict=True):
            for h, base in batches:
                p.producers.update(h, base)

    async def _replay_internal(self, partitions: list[Partition]) -> None:
        """Feed internal topics' uploaded batches to their replayers (the WAL's part
        follows during recovery)."""
        for p in partitions:
            replayer = self.internal_replayers.get(p.topic)
            if replayer is None:
                continue
            for i in range(p.object_entries):
                for base, batch in await self._stored_batches(p.batches.ref(i)):
                    if base >= p.log_start_offset:
                        replayer(bytes(batch))

    async def _stored_batches(self, ref: BatchRef) -> list[tuple[int, memoryview]]:
        """(base offset, batch) of an object block, fetched from the store past the block
        cache: start-up reads each block once, and should not fill the cache."""
        obj = self.catalog.get(ref.object_id)
        block = await self.store.get(obj.key, ref.position, ref.position + ref.size)
        return [(base, batch) for base, _, _, batch in split_block(block)]

    async def _keep_awaited(
        self,
        own: dict[tuple[bytes, int], PartitionView],
        awaited: Callable[[bytes, int], bool] | None,
    ) -> None:
        """Hand-off records for partitions another broker is to open from this one's
        catalog, which the snapshot written next would no longer describe."""
        for (tid, index), view in own.items():
            p = self._partition_by_id(tid, index)
            if p is None or p.held or awaited is None or not awaited(tid, index):
                continue
            record = await self.catalog.read_handoff(tid, index)
            if record is not None and record.writer == self.broker_id:
                continue
            producers = None if view.discovered else view.producers
            data = self.catalog.encode_handoff(
                view.epoch or 0, [list(r) for r in view.rows], producers
            )
            await self.store.put(self.catalog.handoff_key(tid, index), data)

    def _replay(
        self, entry: WalEntry, counts: dict[str, int], own: dict[tuple[bytes, int], PartitionView]
    ) -> None:
        topic = self.topics_by_id.get(entry.topic_id)
        if topic is None or entry.partition >= len(topic.partitions):
            counts["skipped"] += 1
            return
        p = topic.partitions[entry.partition]
        if self.cluster and (not p.held or entry.leader_epoch != p.leader_epoch):
            # written while this broker led the partition before. If its snapshot still
            # has that leadership and the batch was never uploaded, another broker took
            # the partition over without it (a failover in wal mode): an orphan, kept
            # aside rather than dropped. (After a hand-off the snapshot moved on, and
            # the batch went up with the hand-off.)
            view = own.get((entry.topic_id, entry.partition))
            if (
                view is not None
                and view.epoch == entry.leader_epoch
                and entry.base_offset >= view.end
            ):
                self._orphans.append(
                    (entry.topic_id, entry.partition, entry.base_offset, bytes(entry.batch))
                )
            counts["skipped"] += 1
            return
        h = records.parse_header(entry.batch)
        if entry.base_offset < p.log_end_offset:
            # already in an object (or below the log start): only its producer state counts
            p.producers.update(h, entry.base_offset)
            counts["uploaded"] += 1
            return
        p.leader_epoch = max(p.leader_epoch, entry.leader_epoch)
        # in object mode the high watermark waits for the upload, even after a restart
        wal_end = entry.end_position if self.settings.object_mode else None
        p.record_append(h, entry.base_offset, entry.batch_position, wal_end)
        if wal_end is not None:
            self._unsynced.add(p)
        replayer = self.internal_replayers.get(topic.name)
        deleted_before = topic.record.log_start.get(entry.partition, 0)
        if replayer is not None and entry.base_offset >= deleted_before:
            replayer(bytes(entry.batch))
        counts["entries"] += 1

    async def close(self) -> None:
        """Sync the WAL, upload what it holds (so the data directory may go), snapshot."""
        if self.wal.end_position > self.wal.durable_position:
            with contextlib.suppress(Exception):
                await self.wal.wait_durable(self.wal.end_position)
        await self.uploader.stop(self.settings.shutdown_upload_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        try:
            await asyncio.wait_for(
                self.catalog.write_snapshot(self.live_partitions()),
                self.settings.shutdown_upload_timeout_s,
            )
        except (ObjectStoreError, TimeoutError) as e:
            log.warning("shutdown: catalog snapshot not written (%r); objects are re-read", e)
        self.trim_wal()
        await self.block_cache.close()
        await self.wal.close()

    def snapshot_soon(self) -> None:
        """Write the catalog snapshot in the background (the uploader's periodic one)."""
        self._background(self.catalog.write_snapshot(self.live_partitions()), "catalog snapshot")

    # --- leadership (cluster mode) ----------------------------------------------------

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
                view = await self._stored_view(p, source, views)
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
            if view is not None and view.producers is not None and not view.discovered:
                p.producers.restore(view.producers)  # a hand-off: the record is current
            else:
                unknown_producers.append(p)  # a failover: read them from the newest blocks
            p.held = True
            opened.append(p)
        self._apply_log_starts()
        for p in opened:
            p.epoch_start_offset = p.log_end_offset
        try:
            await self._restore_producers(unknown_producers)
            await self._replay_internal(opened)
            await self.catalog.write_snapshot(self.live_partitions())
        except BaseException:
            for p in opened:
                self.drop(p)
            raise
        return opened

    def lead(self, p: Partition) -> None:
        """Let an adopted partition take writes and serve reads."""
        if p.held:
            p.leading = True
            self._wake(p)

    async def _stored_view(
        self, p: Partition, source: int, views: dict[int, dict]
    ) -> PartitionView | None:
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

    async def write_handoff(self, p: Partition, producers: bool = True) -> None:
        """Describe a partition's stored log for its next leader; `producers` False when
        the producer state also covers batches that are not uploaded (they would look
        like duplicates to the next leader when they come back as orphans)."""
        key = self.catalog.handoff_key(p.topic_id, p.index)
        await self.store.put(key, self.catalog.handoff_record(p, producers))

    async def delete_handoffs(self, parts: list[Partition]) -> None:
        await self.store.delete([self.catalog.handoff_key(p.topic_id, p.index) for p in parts])

    async def release(self, parts: list[Partition]) -> None:
        """A hand-off's first half: stop taking writes, upload everything appended so
        far and write each partition's hand-off record. On failure the partitions lead
        again (the hand-off is retried later)."""
        for p in parts:
            p.leading = False
            self._wake(p)
        try:
            end = self.wal.end_position
            if end > self.wal.durable_position:
                await self.wal.wait_durable(end)
            uploaded = self.uploader.bytes_uploaded
            while self.uploader.uploaded_position < end:
                if not await self.uploader.upload():
                    await asyncio.sleep(0.01)
            # every partition's tail goes up with the moving ones': one object, not many
            self.handoff_upload_bytes += self.uploader.bytes_uploaded - uploaded
            await asyncio.gather(*(self.write_handoff(p) for p in parts))
        except BaseException:
            for p in parts:
                p.leading = p.held
            with contextlib.suppress(Exception):
                await self.delete_handoffs(parts)
            raise

    def drop(self, p: Partition, lost: bool = False) -> None:
        """Forget a partition's log here: another broker leads it now. `lost`: it was
        taken without a hand-off, so appends not yet acknowledged must never be."""
        was_held = p.held
        self.tail.drop(p.tail)
        self._unsynced.discard(p)
        p.reset()
        if lost:
            p.fenced += 1
        self._wake(p)
        state = self.topics_by_id.get(p.topic_id)
        if was_held and state is not None:
            for callback in self.on_partition_dropped:
                callback(state, p)

    async def unuploaded(self, p: Partition) -> list[tuple[bytes, int, int, bytes]]:
        """The partition's acknowledged batches that are only in the WAL, as orphans."""
        idx = p.batches
        out = []
        for i in range(p.object_entries, len(idx)):
            if idx.last_offsets[i] >= p.high_watermark:
                break  # never acknowledged
            for batch in await self.read_entry(idx.ref(i), p):
                out.append((p.topic_id, p.index, idx.base_offsets[i], bytes(batch)))
        return out

    def live_partitions(self) -> list[Partition]:
        """The partitions whose data this broker holds (all of them, embedded)."""
        return [p for state in self.topics.values() for p in state.partitions if p.held]

    # --- topics -----------------------------------------------------------------------

    def _add_topic_state(self, rec: TopicRecord) -> TopicState:
        state = TopicState(rec, [])
        self._grow(state)
        self.topics[rec.name] = state
        self.topics_by_id[rec.topic_id] = state
        return state

    def _grow(self, state: TopicState) -> None:
        rec = state.record
        for i in range(len(state.partitions), rec.partitions):
            state.partitions.append(Partition(rec.topic_id, rec.name, i, held=not self.cluster))

    def sync_topics(self) -> None:
        """Make the topic states match the metadata, after a change made here or (cluster
        mode) by another broker: new topics and partitions, deletions, log starts."""
        for name, state in list(self.topics.items()):
            if self.meta.topics.get(name) is not state.record:  # deleted, maybe recreated
                self._forget_topic(state)
        for rec in self.meta.topics.values():
            state = self.topics.get(rec.name) or self._add_topic_state(rec)
            if len(state.partitions) < rec.partitions:
                log.info("topic %s has %d partitions", rec.name, rec.partitions)
                self._grow(state)
        self._apply_log_starts()

    def _forget_topic(self, state: TopicState) -> None:
        del self.topics[state.name]
        self.topics_by_id.pop(state.record.topic_id, None)
        for p in state.partitions:
            p.deleted = True
            self.tail.drop(p.tail)
            self._unsynced.discard(p)
            self._wake(p)
        log.info("deleted topic %s", state.name)

    async def create_topic(
        self, name: str, partitions: int, configs: dict[str, str], internal: bool = False
    ) -> TopicState:
        rec = TopicRecord(name, uuid.uuid4().bytes, partitions, dict(configs), internal)

        def change() -> None:
            if name in self.meta.topics:
                raise FileExistsError(name)
            self.meta.topics[name] = rec

        await self._change(change)
        log.info("created topic %s with %d partitions, configs %s", name, partitions, configs)
        return self.topics[name]

    async def delete_topic(self, name: str) -> None:
        def change() -> None:
            if name not in self.meta.topics:
                raise KeyError(name)
            del self.meta.topics[name]

        if name not in self.topics:
            raise KeyError(name)
        await self._change(change)

    async def _change(self, change: Callable[[], object]) -> None:
        """Apply a metadata change and persist it; the topic states follow either way."""
        async with self._meta_lock:
            try:
                await self.meta.update(change)
            finally:
                self.sync_topics()

    async def set_topic_configs(self, topic: TopicState, configs: dict[str, str]) -> None:
        """Replace a topic's explicit configs; readers see them at once, no restart."""

        def change() -> None:
            rec = self.meta.topics.get(topic.name)
            if rec is None:
                raise KeyError(topic.name)
            rec.configs = dict(configs)

        await self._change(change)
        log.info("topic %s configs now %s", topic.name, configs)

    async def add_partitions(self, topic: TopicState, count: int) -> None:
        old = len(topic.partitions)

        def change() -> None:
            rec = self.meta.topics.get(topic.name)
            if rec is None:
                raise KeyError(topic.name)
            rec.partitions = max(rec.partitions, count)

        await self._change(change)
        log.info("topic %s grew from %d to %d partitions", topic.name, old, count)

    async def delete_records(self, topic: TopicState, p: Partition, offset: int) -> None:
        """Move the log start offset forward (DeleteRecords)."""
        await self.move_log_starts([(topic, p, offset)])

    async def move_log_starts(self, moves: list[tuple[TopicState, Partition, int]]) -> None:
        """Persist new log start offsets in one metadata write, then apply them and trim
        the WAL segments that no partition needs any more."""

        def change() -> bool:
            # decided inside the change: a concurrent move may have gone further
            # meanwhile, and the persisted start must never go back (offsets reused)
            moved = False
            for t, p, offset in moves:
                rec = self.meta.topics.get(t.name)
                if rec is not None and offset > rec.log_start.get(p.index, 0):
                    rec.log_start[p.index] = offset
                    moved = True
            return moved

        moves = [(t, p, o) for t, p, o in moves if o > p.log_start_offset]
        if not moves:
            return
        await self._change(change)
        for _, p, offset in moves:
            if p.log_start_offset >= offset:
                log.info("%s: log start offset moved to %d", p, offset)
        self.trim_wal()

    def trim_wal(self) -> None:
        """Delete WAL segments holding only batches that are uploaded, before their
        partitions' log start, or of deleted topics."""
        floor = self.wal.durable_position
        for state in self.topics.values():
            for p in state.partitions:
                first = p.first_position
                if first is not None:
                    floor = min(floor, first)
        self.wal.trim(floor)

    async def maintain_objects(self) -> None:
        """Compaction, then deletion of objects nothing needs (housekeeping)."""
        for _ in range(4):  # a few runs per round, so a backlog shrinks steadily
            merged = await self.compactor.compact_once()
            await self.compactor.collect()  # retires the sources before the next pick
            if not merged:
                break
        self.trim_wal()

    async def enforce_retention(self, now_ms: int | None = None) -> None:
        """retention.ms and retention.bytes, batch by batch, for every non-internal topic."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        moves = []
        for state in list(self.topics.values()):
            if state.record.internal:
                continue
            retention_ms = int(self.topic_config(state, "retention.ms"))
            retention_bytes = int(self.topic_config(state, "retention.bytes"))
            for p in state.partitions:
                if not p.leading:
                    continue
                p.producers.expire(now_ms, self.producer_id_expiration_ms)
                idx, n, size = p.batches, 0, p.size_bytes
                while n < len(idx) and idx.last_offsets[n] < p.high_watermark:
                    expired = retention_ms >= 0 and idx.max_timestamps[n] < now_ms - retention_ms
                    too_big = retention_bytes >= 0 and size > retention_bytes
                    if not (expired or too_big):
                        break
                    size -= idx.sizes[n]
                    n += 1
                if n:
                    moves.append((state, p, idx.last_offsets[n - 1] + 1))
        await self.move_log_starts(moves)

    def topic_config(self, topic: TopicState, key: str) -> str:
        """A topic's setting: its own, else the broker's default, else Kafka's."""
        value = topic.record.configs.get(key)
        if value is None:
            value = self.topic_defaults.get(key)
        return value if value is not None else effective({}, key)

    # --- producer ids -----------------------------------------------------------------

    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before, even across crashes and brokers: each
        broker takes blocks of ids from the metadata, persisted before use."""
        async with self._producer_id_lock:
            if self._next_producer_id >= self._producer_id_end:

                def change() -> int:
                    start = self.meta.producer_id_limit
                    self.meta.producer_id_limit = start + PRODUCER_ID_BLOCK
                    return start

                async with self._meta_lock:
                    start = await self.meta.update(change)
                self._next_producer_id, self._producer_id_end = start, start + PRODUCER_ID_BLOCK
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid

    # --- appends ----------------------------------------------------------------------

    @property
    def backlog_full(self) -> bool:
        return self.uploader.backlog_bytes >= self.max_backlog_bytes

    def wait_acked(self, wal_end: int) -> asyncio.Future[None]:
        """Resolved when an append ending at `wal_end` is durable by the broker's
        contract: synced in the WAL, or (object mode) uploaded."""
        if self.settings.object_mode:
            return self.uploader.wait_uploaded(wal_end)
        return self.wal.wait_durable(wal_end)

    def append(self, topic: TopicState, p: Partition, batch: bytes, h: BatchHeader) -> AppendResult:
        """Assign offsets and queue the batch in the WAL; synchronous, so order is kept."""
        base_offset = p.log_end_offset
        append_time = -1
        if self.topic_config(topic, "message.timestamp.type") == "LogAppendTime":
            append_time = int(time.time() * 1000)
            batch = records.with_log_append_time(batch, append_time)
            h = records.parse_header(batch)
        batch = records.with_base_offset(batch, base_offset, p.leader_epoch)
        position, wal_end = self.wal.append(p.topic_id, p.index, p.leader_epoch, base_offset, batch)
        p.record_append(h, base_offset, position, wal_end)
        self._unsynced.add(p)
        self.tail.put(p.tail, base_offset, batch)
        return AppendResult(base_offset, wal_end, append_time)

    def _on_durable(self, position: int) -> None:
        done = []
        for p in self._unsynced:
            if p.on_durable(position):
                self._wake(p)
            if not p.has_unsynced:
                done.append(p)
        for p in done:
            self._unsynced.discard(p)

    # --- reads ------------------------------------------------------------------------

    async def read(
        self,
        p: Partition,
        offset: int,
        max_bytes: int,
        limit_offset: int,
        first_may_exceed: bool = True,
    ) -> list[bytes | memoryview]:
        """Batches from the one holding `offset`, below `limit_offset`, up to `max_bytes`
        (the first may exceed it if `first_may_exceed`, as KIP-74 wants).

        An upload (which trims the WAL) or a compaction (which retires objects) may move
        the batches while the read is under way: then the index is asked again.
        """
        for attempt in range(3):
            try:
                return await self._read(p, offset, max_bytes, limit_offset, first_may_exceed)
            except (TrimmedRead, ObjectNotFound):
                if attempt == 2 or offset < p.log_start_offset:
                    raise
        raise AssertionError("unreachable")

    async def _read(
        self,
        p: Partition,
        offset: int,
        max_bytes: int,
        limit_offset: int,
        first_may_exceed: bool,
    ) -> list[bytes | memoryview]:
        refs = p.refs_from(offset, limit_offset, max_bytes, first_may_exceed)
        parts: list[list[bytes | memoryview] | None] = []
        missing = []
        for i, r in enumerate(refs):
            if r.in_wal:
                cached = self.tail.get(p.tail, r.base_offset)
                parts.append(None if cached is None else [cached])
                if cached is None:
                    missing.append(i)
            else:
                parts.append(await self._read_block(p, r, offset))
        if missing:
            cold = await self.cold.read([(refs[i].position, refs[i].size) for i in missing])
            for i, data in zip(missing, cold, strict=True):
                parts[i] = [data]
        out: list[bytes | memoryview] = []
        total = 0
        for r, group in zip(refs, parts, strict=True):
            assert group is not None
            if r.in_wal:  # one batch, within the limits refs_from applied
                out.append(group[0])
                total += len(group[0])
                continue
            for b in group:  # a block: its batches may run past the limits
                if records.parse_header(b).base_offset >= limit_offset:
                    return out
                if total + len(b) > max_bytes and (out or not first_may_exceed):
                    return out
                out.append(b)
                total += len(b)
        return out

    async def _read_block(
        self, p: Partition, ref: BatchRef, offset: int
    ) -> list[bytes | memoryview]:
        """The batches of an object block that end at or after `offset`: from the tail
        cache when it still has them all (recently uploaded), else the block cache."""
        start = max(offset, ref.base_offset)
        walked: list[bytes | memoryview] = []
        cur = start
        while cur <= ref.last_offset:
            b = p.tail.get(cur)
            if b is None:
                break
            walked.append(b)
            h = records.parse_header(b)
            cur = h.base_offset + h.last_offset_delta + 1
        if walked and cur > ref.last_offset:
            self.tail.hits += 1
            return walked
        obj = self.catalog.get(ref.object_id)
        want = BlockRef(ref.object_id, obj.key, ref.position, ref.size)
        ahead = self._blocks_ahead(p, ref)
        data = await self.block_cache.read(want, ahead)
        return [b for _, last, _, b in split_block(data) if last >= offset]

    def _blocks_ahead(self, p: Partition, ref: BatchRef) -> list[BlockRef]:
        """The partition's object blocks after `ref`, for readahead: the window the cache
        starts GETs in (two readaheads) plus one more, so the GET started at the window's
        far edge is still a whole readahead long rather than the window's leftover."""
        idx = p.batches
        i = idx.find(ref.last_offset + 1)
        out = []
        total = 0
        limit = 3 * self.settings.readahead_bytes
        while i < p.object_entries and total < limit:
            oid = idx.objects[i]
            obj = self.catalog.objects.get(oid)
            if obj is None:
                break
            out.append(BlockRef(oid, obj.key, idx.positions[i], idx.sizes[i]))
            total += idx.sizes[i]
            i += 1
        return out

    async def read_entry(self, ref: BatchRef, p: Partition) -> list[bytes | memoryview]:
        """Every batch of one index entry (one WAL batch, or an object block)."""
        if not ref.in_wal:
            return await self._read_block(p, ref, ref.base_offset)
        cached = self.tail.get(p.tail, ref.base_offset)
        if cached is not None:
            return [cached]
        return [(await self.cold.read([(ref.position, ref.size)]))[0]]

    def wal_batches(self, shelf: dict[int, bytes], run: WalSlice) -> list[bytes]:
        """The bytes of a run of WAL batches: the tail cache, else the WAL. Runs on the
        uploader's worker thread: the shelf is only read (an entry the loop evicts
        meanwhile is read from the WAL instead), and the WAL reads are thread-safe."""
        out: list[bytes | None] = [shelf.get(base) for base in run.base_offsets]
        missing = [i for i, b in enumerate(out) if b is None]
        if missing:
            data = self.wal.read_many([(run.positions[i], run.sizes[i]) for i in missing])
            for i, d in zip(missing, data, strict=True):
                out[i] = d
        return out  # type: ignore[return-value]

    # --- waiting for data -------------------------------------------------------------

    def watch(self, partitions: Iterable[Partition]) -> asyncio.Future[None]:
        """A future set when any of `partitions` gets new readable data."""
        fut = asyncio.get_running_loop().create_future()
        for p in partitions:
            self._waiters.setdefault(p, set()).add(fut)
        return fut

    def unwatch(self, fut: asyncio.Future[None], partitions: Iterable[Partition]) -> None:
        for p in partitions:
            waiters = self._waiters.get(p)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[p]

    def _wake(self, p: Partition) -> None:
        waiters = self._waiters.pop(p, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
