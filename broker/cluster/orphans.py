"""Orphans: acknowledged batches a failover left behind, appended again when found.

In `wal` durability mode a broker acknowledges after its local fsync, and uploads
later. If its lease expires first (it died, hung, or lost etcd), another broker takes
its partitions over from what was uploaded, and the rest is only in the first broker's
WAL. When that broker (or its volume) comes back, those batches are orphans: it puts
them in the bucket (`orphans/b<id>/...`, one object in the usual format) and lists the
object in etcd with the partitions it holds. Whichever broker leads such a partition
appends the batches again, at the end of the log (new offsets, after what the new
leader took meanwhile), skipping any its producer had already retried there, then
ticks the partition off; the last one deletes the object.

Recovered records therefore come back later than, and out of order with, records
written after the failover, and a crash between the append and the tick-off appends
them twice. `object` mode has no orphans: nothing is acknowledged before the upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aetcd

from aio.events import wait_event
from broker.cluster.etcd import KeySpace, PrefixMirror, cancel_within, describe, pack, unpack
from protocol import records
from s3stream.object_format import (
    FOOTER,
    ObjectBuilder,
    PendingBatch,
    parse_footer,
    parse_index,
    split_block,
)
from s3stream.store import ObjectNotFound

if TYPE_CHECKING:
    from broker.log.partition import Partition
    from s3stream.store import ObjectStore

log = logging.getLogger(__name__)

Orphan = tuple[bytes, int, int, bytes]  # topic id, partition, base offset, batch


# the partition `(topic id, index)` of this broker's log, if the topic has it
FindPartition = Callable[[bytes, int], "Partition | None"]
# append a batch to a partition this broker leads; returns its WAL end (0: none)
AppendBatch = Callable[["Partition", bytes, records.BatchHeader], int]


class OrphanKeeper:
    """Stores this broker's orphans and lists them in etcd; needs no log, so the log
    is built with it (it hands over what a failover left out)."""

    def __init__(
        self, client: aetcd.Client, keys: KeySpace, store: ObjectStore, *, broker_id: int
    ) -> None:
        self.client = client
        self.store = store
        self.broker_id = broker_id
        self.prefix = keys.key("orphans", "")
        self.kept = 0  # batches this broker found orphaned and stored

    async def keep(self, orphans: list[Orphan]) -> None:
        """Store orphaned batches in the bucket and list them for their partitions'
        leaders. Raises if either fails: the caller keeps them in its WAL meanwhile."""
        if not orphans:
            return
        by_partition: dict[tuple[bytes, int], list[PendingBatch]] = {}
        for topic_id, partition, base, batch in orphans:
            h = records.parse_header(batch)
            by_partition.setdefault((topic_id, partition), []).append(
                PendingBatch(base, base + h.last_offset_delta, h.max_timestamp, batch)
            )
        builder = ObjectBuilder()
        for (topic_id, partition), batches in sorted(by_partition.items()):
            builder.add_partition(topic_id, partition, sorted(batches, key=lambda b: b.base_offset))
        body = await asyncio.to_thread(builder.finish)
        key = f"orphans/b{self.broker_id}/{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.obj"
        await self.store.put(key, body)
        await self.client.put(self.prefix + key.encode(), pack(sorted(by_partition)))
        self.kept += len(orphans)
        log.warning(
            "%d acknowledged batches (%d bytes) of %d partitions were never uploaded before "
            "other brokers took the partitions over; kept in %s, to be appended again by "
            "their leaders",
            len(orphans),
            len(body),
            len(by_partition),
            key,
        )


class OrphanRecovery:
    """Appends again the orphans of partitions this broker serves.

    Given what it acts on rather than the node: the etcd client and key space, the
    object store, and callables into this broker's log (find a partition, whether this
    broker serves it, append a batch, wait until appended batches are acknowledged).
    """

    def __init__(
        self,
        client: aetcd.Client,
        keys: KeySpace,
        store: ObjectStore,
        *,
        wake: asyncio.Event,
        find: FindPartition,
        serves: Callable[[Partition], bool],
        append: AppendBatch,
        wait_acked: Callable[[int], Awaitable[None]],
    ) -> None:
        self.client = client
        self.store = store
        self._find = find
        self._serves = serves
        self._append_batch = append
        self._wait_acked = wait_acked
        self.prefix = keys.key("orphans", "")
        self._wake = wake  # set when the cluster changes, and by the watch of the list
        self._mirror = PrefixMirror(client, self.prefix, lambda _: self._wake.set())
        self._task: asyncio.Task[None] | None = None
        self.recovered = 0  # orphaned batches this broker appended again
        self.duplicates = 0  # ... and found already there (retried by their producer)

    async def start(self) -> None:
        await self._mirror.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="orphans")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_within(task)
        await self._mirror.stop()

    def poke(self) -> None:
        self._wake.set()

    # --- recovering -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, 2.0)
            self._wake.clear()
            for ekey, kv in list(self._mirror.items.items()):
                try:
                    await self._recover(ekey, kv)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("recovering orphans of %r failed (%s); retrying", ekey, describe(e))

    async def _recover(self, ekey: bytes, kv: aetcd.KeyValue) -> None:
        pending = [tuple(x) for x in unpack(kv.value)]
        mine = []
        for topic_id, partition in pending:
            p = self._find(topic_id, partition)
            if p is None or self._serves(p):  # (p is None: gone with its topic, nothing to do)
                mine.append((topic_id, partition))
        if not mine:
            return
        key = ekey[len(self.prefix) :].decode()
        try:
            body = await self.store.get(key)
        except ObjectNotFound:
            body = None
        if body is not None:
            footer = parse_footer(memoryview(body)[-FOOTER.size :])
            index = memoryview(body)[
                footer.index_position : footer.index_position + footer.index_size
            ]
            entries = parse_index(footer, index)
            done = []
            for topic_id, partition in mine:
                if await self._append(topic_id, partition, body, entries):
                    done.append((topic_id, partition))
            mine = done
        left = [tp for tp in pending if tp not in mine]
        t = self.client.transactions
        ops = [t.put(ekey, pack(left))] if left else [t.delete(ekey)]
        ok, _ = await self.client.transaction(
            compare=[t.mod(ekey) == kv.mod_revision], success=ops, failure=[]
        )
        if ok and not left:
            with contextlib.suppress(Exception):
                await self.store.delete([key])

    async def _append(self, topic_id: bytes, partition: int, body: bytes, entries) -> bool:
        """Append a partition's orphans; False if this broker no longer serves it (a
        hand-off began while the object was fetched: appended now, they would miss
        the hand-off's upload and be lost; they stay pending for the next leader)."""
        p = self._find(topic_id, partition)
        if p is None:
            return True
        if not self._serves(p):
            return False
        wal_end = 0
        appended = duplicates = 0
        for e in entries:
            if (e.topic_id, e.partition) != (topic_id, partition):
                continue
            block = memoryview(body)[e.position : e.position + e.size]
            for _, _, _, batch in split_block(block):
                h = records.parse_header(batch)
                if p.producers.check(h).duplicate_of is not None:
                    duplicates += 1  # its producer retried it here after the failover
                    continue
                data = records.without_producer(batch) if h.is_idempotent else bytes(batch)
                wal_end = max(wal_end, self._append_batch(p, data, records.parse_header(data)))
                appended += 1
        if wal_end:
            await self._wait_acked(wal_end)
        self.recovered += appended
        self.duplicates += duplicates
        log.warning(
            "%s: appended %d orphaned batches again (%d were already here)",
            p,
            appended,
            duplicates,
        )
        return True
