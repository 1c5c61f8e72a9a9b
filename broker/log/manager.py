"""The broker's storage: topics and partitions over the WAL, the object store and caches.

Every append is framed into the WAL; the partition indexes where it went and the
tail cache keeps a copy for tailing readers. The uploader moves synced WAL data into
objects and the index follows it there; reads past the tail cache go to the WAL for
what is not uploaded yet and to the block cache (in front of the objects) for the rest.

LogManager builds the pieces, each with one job (topics.py, loader.py, appends.py,
reads.py, watch.py, retention.py, handoff.py), wires them, and is what the rest of
the broker calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from broker.log.appends import AppendPath, AppendResult
from broker.log.cleaner import CleanerPool, LogCleaner
from broker.log.handoff import HandOff
from broker.log.loader import LogLoader, Orphan
from broker.log.partition import Partition
from broker.log.producer_ids import ProducerIds
from broker.log.reads import ReadPath
from broker.log.retention import Retention
from broker.log.topics import TopicRegistry, TopicState
from broker.log.upload_source import UploadSource
from broker.log.watch import Watchers
from broker.metadata_store import MetadataStore
from protocol.records import BatchHeader
from s3stream.api import BatchRef
from s3stream.block_cache import BlockCache
from s3stream.catalog import Catalog
from s3stream.compaction import Compactor
from s3stream.log_cleaner import CleanerSettings
from s3stream.settings import ObjectTierSettings
from s3stream.store import ObjectStore, ObjectStoreError, PreconditionFailed
from s3stream.tail_cache import TailCache
from s3stream.uploader import Uploader
from wal import WriteAheadLog

log = logging.getLogger(__name__)


def wal_directory(data_dir: Path) -> Path:
    return Path(data_dir) / "wal"


class StorageObserver(Protocol):
    def on_wal_sync(self, seconds: float, synced_bytes: int) -> None:
        """After each WAL sync, on the event loop."""
        ...


@dataclass(frozen=True)
class ClusterLink:
    """What a cluster member's log is given by the cluster: whether uploads may go out
    (the lease is confirmed, so the partitions are surely still this broker's), and
    where batches that other brokers' logs lack are kept (broker.cluster.orphans).
    In cluster mode partitions are held only once this broker leads them, and objects
    are deleted by the controller's sweep over every broker's catalog."""

    may_upload: Callable[[], bool]
    keep_orphans: Callable[[list[Orphan]], Awaitable[None]]


class LogManager:
    def __init__(
        self,
        data_dir: Path,
        store: ObjectStore,
        meta: MetadataStore,
        *,
        tail_cache_bytes: int,
        wal_segment_bytes: int,
        objects: ObjectTierSettings | None = None,
        topic_defaults: Mapping[str, str] | None = None,
        broker_id: int = 0,
        cluster: ClusterLink | None = None,
        on_partition_dropped: Callable[[TopicState, Partition], None] | None = None,
        observer: StorageObserver | None = None,
        internal_replayers: Mapping[str, Callable[[bytes], None]] | None = None,
        cleaner: CleanerSettings | None = None,
        cleaned_internal_topics: frozenset[str] = frozenset(),
    ) -> None:
        """`topic_defaults`: broker settings standing in for topic configs, read live;
        `on_partition_dropped(topic, p)` when a partition stops being this broker's
        (cluster mode); `internal_replayers[topic]` is fed each batch of that internal
        topic replayed from the log; `cleaned_internal_topics`: the internal topics the
        log cleaner cleans as any compacted topic (the others compact themselves)."""
        self.data_dir = Path(data_dir)
        self.settings = s = objects or ObjectTierSettings()
        self.store = store
        self.meta = meta
        self.cluster = cluster is not None
        self.broker_id = broker_id
        sync_observer = observer.on_wal_sync if observer is not None else None
        self.wal = WriteAheadLog(wal_directory(self.data_dir), wal_segment_bytes, sync_observer)
        self.tail = TailCache(tail_cache_bytes)
        self.catalog = Catalog(store, broker_id)
        self.block_cache = BlockCache(
            store, s.block_cache_bytes, s.readahead_bytes, s.read_inflight_bytes
        )
        self.watchers = Watchers()
        self.registry = TopicRegistry(
            meta,
            {} if topic_defaults is None else topic_defaults,  # a live Mapping, maybe empty now
            held=not self.cluster,
            on_forget=self._deleted,
        )
        self.topics = self.registry.topics
        self.topics_by_id = self.registry.topics_by_id
        self.uploader = Uploader(
            UploadSource(self.wal, self.registry.live_partitions),
            self.catalog,
            s.upload,
            backlog_limit=s.max_backlog_bytes,
            on_uploaded=self._uploaded,
            on_snapshot_due=self.snapshot_soon,
            may_upload=cluster.may_upload if cluster is not None else lambda: True,
        )
        self.compactor = Compactor(
            self.registry.live_partitions,
            self.catalog,
            self.block_cache,
            s.compaction,
            deletes_objects=not self.cluster,
        )
        self.max_backlog_bytes = s.max_backlog_bytes
        self.appends = AppendPath(
            self.wal,
            self.tail,
            self.uploader,
            self.watchers,
            self.registry.topic_config,
            object_mode=s.object_mode,
            max_backlog_bytes=s.max_backlog_bytes,
        )
        self.reads = ReadPath(
            self.tail, self.wal, self.catalog, self.block_cache, s.readahead_bytes
        )
        self.internal_replayers = dict(internal_replayers or {})
        self.loader = LogLoader(
            self.data_dir,
            self.registry,
            self.catalog,
            self.wal,
            self.appends,
            self.internal_replayers,
            cluster=self.cluster,
            keep_orphans=cluster.keep_orphans if cluster is not None else None,
        )
        self.cleaner_pool = CleanerPool()
        self.cleaner = LogCleaner(
            self.registry,
            self.catalog,
            self.tail,
            cleaner or CleanerSettings(block_bytes=s.upload.block_bytes),
            self.cleaner_pool.get,
            lambda: self.catalog.write_snapshot(self.live_partitions()),
            internal_topics=cleaned_internal_topics,
        )
        self.retention = Retention(self.registry, self.wal, self.compactor, self.cleaner)
        self.handoff = HandOff(
            self.registry,
            self.catalog,
            self.uploader,
            self.appends,
            self.watchers,
            self.loader,
            self.reads,
            on_partition_dropped,
        )
        self.producer_ids = ProducerIds(meta, self.registry.lock)
        self._tasks: set[asyncio.Task[None]] = set()
        if not s.object_mode:  # else appends are durable once uploaded (_uploaded)
            self.wal.add_durable_listener(self.appends.on_durable)
        self.wal.add_durable_listener(self.uploader.on_durable)

    def _deleted(self, p: Partition) -> None:
        self.appends.forget(p)

    def _uploaded(self, position: int) -> None:
        if self.settings.object_mode:
            self.appends.on_durable(position)
        self.retention.trim_wal()

    # --- lifecycle --------------------------------------------------------------------

    async def open(
        self,
        leads: Callable[[bytes, int], int | None] | None = None,
        awaited: Callable[[bytes, int], bool] | None = None,
    ) -> None:
        """Metadata and object indexes from the bucket, then the WAL's tail on top (see
        LogLoader.load for `leads` and `awaited`, cluster mode); then uploads start."""
        garbage = await self.loader.load(leads, awaited)
        firsts = [p.first_position for p in self.live_partitions()]
        self.uploader.uploaded_position = min(
            (f for f in firsts if f is not None), default=self.wal.end_position
        )
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
        self.cleaner_pool.close()
        await self.block_cache.close()
        await self.wal.close()

    def snapshot_soon(self) -> None:
        """Write the catalog snapshot in the background (the uploader's periodic one)."""
        self._background(self.catalog.write_snapshot(self.live_partitions()), "catalog snapshot")

    def _background(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as e:
                log.warning("%s failed: %r", what, e)

        task = asyncio.create_task(run(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- topics (TopicRegistry) -------------------------------------------------------

    def live_partitions(self) -> list[Partition]:
        return self.registry.live_partitions()

    def sync_topics(self) -> None:
        self.registry.sync()

    def topic_config(self, topic: TopicState, key: str) -> str:
        return self.registry.topic_config(topic, key)

    async def create_topic(
        self, name: str, partitions: int, configs: dict[str, str], internal: bool = False
    ) -> TopicState:
        return await self.registry.create_topic(name, partitions, configs, internal)

    async def delete_topic(self, name: str) -> None:
        await self.registry.delete_topic(name)

    async def set_topic_configs(self, topic: TopicState, configs: dict[str, str]) -> None:
        await self.registry.set_topic_configs(topic, configs)

    async def add_partitions(self, topic: TopicState, count: int) -> None:
        await self.registry.add_partitions(topic, count)

    async def allocate_producer_id(self) -> int:
        return await self.producer_ids.allocate()

    # --- appends and reads (AppendPath, ReadPath, Watchers) ---------------------------

    @property
    def backlog_full(self) -> bool:
        return self.appends.backlog_full

    def wait_acked(self, wal_end: int) -> asyncio.Future[None]:
        return self.appends.wait_acked(wal_end)

    def append(self, topic: TopicState, p: Partition, batch: bytes, h: BatchHeader) -> AppendResult:
        return self.appends.append(topic, p, batch, h)

    def append_at(self, p: Partition, batch: bytes | memoryview, h: BatchHeader) -> AppendResult:
        return self.appends.append_at(p, batch, h)

    async def read(
        self,
        p: Partition,
        offset: int,
        max_bytes: int,
        limit_offset: int,
        first_may_exceed: bool = True,
    ) -> list[bytes | memoryview]:
        return await self.reads.read(p, offset, max_bytes, limit_offset, first_may_exceed)

    async def read_entry(self, ref: BatchRef, p: Partition) -> list[bytes | memoryview]:
        return await self.reads.read_entry(ref, p)

    def watch(self, partitions: Iterable[Partition]) -> asyncio.Future[None]:
        return self.watchers.watch(partitions)

    def unwatch(self, fut: asyncio.Future[None], partitions: Iterable[Partition]) -> None:
        self.watchers.unwatch(fut, partitions)

    # --- retention and upkeep (Retention) ---------------------------------------------

    async def delete_records(self, topic: TopicState, p: Partition, offset: int) -> None:
        await self.retention.delete_records(topic, p, offset)

    async def move_log_starts(self, moves: list[tuple[TopicState, Partition, int]]) -> None:
        await self.retention.move_log_starts(moves)

    def trim_wal(self) -> None:
        self.retention.trim_wal()

    async def maintain_objects(self) -> None:
        await self.retention.maintain_objects()

    async def enforce_retention(self, now_ms: int | None = None) -> None:
        await self.retention.enforce_retention(now_ms)

    # --- leadership, cluster mode (HandOff) -------------------------------------------

    @property
    def handoff_upload_bytes(self) -> int:
        return self.handoff.upload_bytes

    async def adopt(self, wanted: list[tuple[Partition, int, int]]) -> list[Partition]:
        return await self.handoff.adopt(wanted)

    def lead(self, p: Partition) -> None:
        self.handoff.lead(p)

    async def write_handoff(self, p: Partition, producers: bool = True) -> None:
        await self.handoff.write_handoff(p, producers)

    async def delete_handoffs(self, parts: list[Partition]) -> None:
        await self.handoff.delete_handoffs(parts)

    async def release(self, parts: list[Partition]) -> None:
        await self.handoff.release(parts)

    def drop(self, p: Partition, lost: bool = False) -> None:
        self.handoff.drop(p, lost)

    async def unuploaded(self, p: Partition) -> list[Orphan]:
        return await self.handoff.unuploaded(p)
