"""Opening the log: metadata and object indexes from the bucket, the WAL's tail on top.

After the catalog has put each partition's object blocks in its index, idempotent
producers' state and internal topics (committed offsets) are read back from the
newest uploaded batches, then the WAL is replayed over it all. In cluster mode only
partitions this broker leads at the epoch of its snapshot are opened here; WAL
batches of an earlier leadership that never reached an object are orphans, handed
to the cluster to append again.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from broker.log.appends import AppendPath
from broker.log.partition import Partition
from broker.log.topics import TopicRegistry
from broker.log.txn_index import TxnIndex
from protocol import records
from protocol.record_codec import control_type
from protocol.records import BatchHeader
from s3stream.api import BatchRef
from s3stream.catalog import Catalog, PartitionView
from s3stream.object_format import split_block
from s3stream.store import ObjectStore
from wal import WalEntry, WriteAheadLog

log = logging.getLogger(__name__)

Orphan = tuple[bytes, int, int, bytes]  # topic id, partition, base offset, batch
Views = dict[tuple[bytes, int], PartitionView]


def stored_txns(view: PartitionView | None, p: Partition) -> TxnIndex:
    """A partition's transaction index as its catalog stored it. Without a stored one
    (a snapshot from before transactions, or none), objects uploaded after the snapshot
    may still hold transactions: the index starts where the snapshot's rows end, and
    restore_transactions reads the rest."""
    if view is None:
        return TxnIndex(p.objects_end)
    default = view.snapshot_end if view.discovered and view.snapshot_end is not None else None
    return TxnIndex.restore(view.state, p.objects_end if default is None else default)


def stored_producers(view: PartitionView | None) -> tuple[int, list] | None:
    """(end, table): the idempotent producers' state as the log stood when it ended at
    `end` (Partition.stream_state; None: not stored, a catalog from before it was)."""
    state = view.state if view is not None else None
    return (state[0], state[4]) if state and len(state) > 4 else None


def stored_cleaned_end(view: PartitionView | None) -> int:
    """Where the log cleaner had got to in a partition, as its catalog stored it."""
    state = view.state if view is not None else None
    return state[3] if state and len(state) > 3 else 0


class LogLoader:
    def __init__(
        self,
        data_dir: Path,
        registry: TopicRegistry,
        catalog: Catalog,
        wal: WriteAheadLog,
        appends: AppendPath,
        internal_replayers: Mapping[str, Callable[[bytes], None]],
        *,
        cluster: bool,
        keep_orphans: Callable[[list[Orphan]], Awaitable[None]] | None,
    ) -> None:
        """`internal_replayers[topic]` is fed each batch of that internal topic;
        `keep_orphans` stores batches that other brokers' logs lack (cluster mode)."""
        self.data_dir = data_dir
        self.registry = registry
        self.meta = registry.meta
        self.catalog = catalog
        self.store: ObjectStore = catalog.store
        self.wal = wal
        self.appends = appends
        self.internal_replayers = internal_replayers
        self.cluster = cluster
        self._keep_orphans = keep_orphans

    async def load(
        self,
        leads: Callable[[bytes, int], int | None] | None = None,
        awaited: Callable[[bytes, int], bool] | None = None,
    ) -> list[str]:
        """Everything the bucket and the WAL hold; returns the keys of leftover objects.

        Cluster mode passes `leads(topic_id, partition)`: the leader epoch at which this
        broker leads the partition, or None. Only partitions whose latest snapshot here is
        of that same leadership are opened now; the others are adopted afterwards, from
        the broker the cluster names as their source. `awaited(topic_id, partition)`:
        another broker is to open it from what this one stored.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        await self.meta.load(legacy=self.data_dir / "metadata.msgpack")
        wal_dir = self.wal.directory
        if self.meta.created and any(f.stat().st_size for f in wal_dir.glob("*")):
            raise RuntimeError(
                f"{self.store.describe()} holds no Strata metadata, but the WAL in {wal_dir} "
                "holds data: is --object-store pointing at the wrong bucket or prefix? "
                "(Delete the WAL directory to start an empty broker.)"
            )
        self.registry.load()

        def resolve(topic_id: bytes, index: int, epoch: int | None) -> Partition | None:
            p = self.registry.partition_by_id(topic_id, index)
            if p is None or leads is None:
                return p
            if epoch is not None and leads(topic_id, index) == epoch:
                p.held, p.leader_epoch = True, epoch
            return p if p.held else None

        report, garbage, own = await self.catalog.load(resolve)
        if self.cluster:
            garbage = []  # perhaps another broker's now: the controller's sweep decides
            await self._keep_awaited(own, awaited)
        self.registry.apply_log_starts()
        for (tid, index), view in own.items():
            p = self.registry.partition_by_id(tid, index)
            if p is not None and p.held:
                p.txns = stored_txns(view, p)
                p.cleaned_end = stored_cleaned_end(view)
        await self.replay_internal(self.registry.live_partitions())
        await self.restore_producers(
            [(p, own.get((p.topic_id, p.index))) for p in self.registry.live_partitions()]
        )
        await self.restore_transactions(self.registry.live_partitions())
        log.info(
            "opened %d objects from %s (%d newer than the snapshot, %d leftovers) in %.2fs",
            report.objects,
            self.store.describe(),
            report.discovered,
            report.garbage,
            time.monotonic() - started,
        )
        await self._recover_wal(own)
        return garbage

    async def _recover_wal(self, own: Views) -> None:
        started = time.monotonic()
        counts = {"entries": 0, "skipped": 0, "uploaded": 0}
        orphans: list[Orphan] = []
        await asyncio.to_thread(self.wal.recover, lambda e: self._replay(e, counts, own, orphans))
        log.info(
            "recovered %d batches from the WAL in %.2fs (%d already uploaded, %d of deleted "
            "topics skipped); log end %d",
            counts["entries"],
            time.monotonic() - started,
            counts["uploaded"],
            counts["skipped"],
            self.wal.end_position,
        )
        self.registry.apply_log_starts()
        for p in self.registry.live_partitions():
            p.epoch_start_offset = p.log_end_offset  # at most: no truncation is reported
        if orphans and self._keep_orphans is not None:
            await self._keep_orphans(orphans)  # before the WAL may be trimmed

    async def restore_producers(self, parts: list[tuple[Partition, PartitionView | None]]) -> None:
        """Idempotent producers' state as the stored catalog (`view`, None: nothing
        stored) had it, brought up to the end of the objects from the batches of the
        objects uploaded after it, so a retry of any batch acknowledged before a crash
        or a failover is still seen as a duplicate when the WAL no longer holds it
        (trimmed, or the partition moved). A catalog written before producer state was
        stored with it: from the newest uploaded batches only."""
        limit = asyncio.Semaphore(16)

        def first_entry(p: Partition, view: PartitionView | None) -> int:
            """The first object entry whose batches must be read."""
            stored = stored_producers(view)
            if stored is not None:
                end, table = stored
                p.producers.restore(table)
                return bisect.bisect_right(p.batches.last_offsets, end - 1, 0, p.object_entries)
            if view is None or view.epoch is None:
                return 0  # only objects newer than any snapshot describe it: all of them
            idx, i, total = p.batches, p.object_entries, 0
            while i > 0 and total < 1024 * 1024 and p.object_entries - i < 4:
                i -= 1
                total += idx.sizes[i]
            return i

        async def read(p: Partition, start: int) -> list[tuple[BatchHeader, int]]:
            out = []
            async with limit:
                for j in range(start, p.object_entries):
                    for base, batch in await self._stored_batches(p.batches.ref(j)):
                        out.append((records.parse_header(batch), base))
            return out

        todo = []
        for p, view in parts:
            start = first_entry(p, view)
            if start < p.object_entries:
                todo.append((p, start))
        found = await asyncio.gather(*(read(p, start) for p, start in todo))
        for (p, _), batches in zip(todo, found, strict=True):
            for h, base in batches:
                p.producers.update(h, base)

    async def restore_transactions(self, partitions: list[Partition]) -> None:
        """Bring each partition's transaction index from its stored horizon to the end
        of its objects: only objects uploaded after the last snapshot are read (the
        snapshot stores the index as of its own end)."""
        for p in partitions:
            idx, end = p.batches, p.objects_end
            if p.txns.horizon >= end:
                continue
            for i in range(p.object_entries):
                if idx.last_offsets[i] < p.txns.horizon:
                    continue
                for base, batch in await self._stored_batches(idx.ref(i)):
                    h = records.parse_header(batch)
                    if h.is_transactional:
                        control = control_type(batch) if h.is_control else None
                        p.record_producer(h, base, control)
            p.txns.horizon = end

    async def replay_internal(self, partitions: list[Partition]) -> None:
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

    async def _keep_awaited(self, own: Views, awaited: Callable[[bytes, int], bool] | None) -> None:
        """Hand-off records for partitions another broker is to open from this one's
        catalog, which the snapshot written next would no longer describe."""
        for (tid, index), view in own.items():
            p = self.registry.partition_by_id(tid, index)
            if p is None or p.held or awaited is None or not awaited(tid, index):
                continue
            record = await self.catalog.read_handoff(tid, index)
            if record is not None and record.writer == self.catalog.broker_id:
                continue
            producers = None if view.discovered else view.producers
            data = self.catalog.encode_handoff(
                view.epoch or 0, [list(r) for r in view.rows], producers, view.state
            )
            await self.store.put(self.catalog.handoff_key(tid, index), data)

    def _replay(
        self, entry: WalEntry, counts: dict[str, int], own: Views, orphans: list[Orphan]
    ) -> None:
        topic = self.registry.topics_by_id.get(entry.topic_id)
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
            # In object mode a batch that never reached an object was never
            # acknowledged: its producer retries it, and appending it again as well
            # would write it twice.
            view = own.get((entry.topic_id, entry.partition))
            if (
                not self.appends.object_mode
                and view is not None
                and view.epoch == entry.leader_epoch
                and entry.base_offset >= view.end
            ):
                orphans.append(
                    (entry.topic_id, entry.partition, entry.base_offset, bytes(entry.batch))
                )
            counts["skipped"] += 1
            return
        h = records.parse_header(entry.batch)
        control = control_type(entry.batch) if h.is_control else None
        if entry.base_offset < p.log_end_offset:
            # already in an object (or below the log start): only its producer state counts
            p.record_producer(h, entry.base_offset, control)
            counts["uploaded"] += 1
            return
        p.leader_epoch = max(p.leader_epoch, entry.leader_epoch)
        # in object mode the high watermark waits for the upload, even after a restart
        wal_end = entry.end_position if self.appends.object_mode else None
        p.record_append(h, entry.base_offset, entry.batch_position, wal_end, control)
        if wal_end is not None:
            self.appends.awaits_durability(p)
        replayer = self.internal_replayers.get(topic.name)
        deleted_before = topic.record.log_start.get(entry.partition, 0)
        if replayer is not None and entry.base_offset >= deleted_before:
            replayer(bytes(entry.batch))
        counts["entries"] += 1
