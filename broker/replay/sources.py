"""Where a topic's partitions keep their records, for a replay: a live broker, or the bucket.

`LogSource` reads a running broker's log: its object blocks from the catalog, its
un-uploaded tail (tail cache, else the WAL) up to the high watermark. `BucketSource`
needs nothing but the bucket, read-only: the topic metadata (names, log starts set
by DeleteRecords and retention) and every broker's catalog (snapshot, and the
footers of objects uploaded after it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence

from broker.log.manager import LogManager
from broker.log.partition import Partition
from broker.metadata_store import MetadataStore
from broker.replay.core import PartitionData, StoredBlock
from s3stream.catalog import Catalog
from s3stream.object_format import split_block
from s3stream.store import ObjectNotFound, ObjectStore
from wal import TrimmedRead


class UnknownTopic(LookupError):
    """No such topic."""


# a partition led elsewhere, and the first offset the bucket lacks -> its leader's batches
LeaderTail = Callable[[Partition, int], Awaitable[list[bytes | memoryview]]]


class LogSource:
    """A running broker's log; partitions another broker leads (cluster mode) are read
    from the bucket (`bucket`), and their un-uploaded tail asked of their leader
    (`leader_tail`, if given)."""

    def __init__(
        self, logs: LogManager, bucket: BucketSource, leader_tail: LeaderTail | None = None
    ) -> None:
        self.logs = logs
        self.bucket = bucket
        self.leader_tail = leader_tail

    def topics(self) -> list[str]:
        return sorted(self.logs.topics)

    async def partitions(self, topic: str) -> list[PartitionData]:
        state = self.logs.topics.get(topic)
        if state is None:
            raise UnknownTopic(topic)
        # taken synchronously, on the event loop: a consistent picture of each index
        here = [self._partition(p) for p in state.partitions if p.leading]
        elsewhere = [p.index for p in state.partitions if not p.leading]
        if not elsewhere:
            return here
        rec = state.record
        stored = await self.bucket.stored(rec.topic_id, rec.log_start, elsewhere)
        if self.leader_tail is not None:
            for i in elsewhere:
                stored[i] = self._with_leader_tail(state.partitions[i], stored[i])
        return sorted(here + [stored[i] for i in elsewhere], key=lambda d: d.partition)

    def _with_leader_tail(self, p: Partition, data: PartitionData) -> PartitionData:
        assert self.leader_tail is not None
        ask = self.leader_tail
        start = max([data.log_start] + [b.last_offset + 1 for b in data.blocks])

        async def tail() -> list[bytes | memoryview]:
            return await ask(p, start)

        return dataclasses.replace(data, tail=tail)

    def _partition(self, p: Partition) -> PartitionData:
        catalog = self.logs.catalog
        blocks = []
        for base, last, ts, pos, size, oid in p.object_rows():
            obj = catalog.get(oid)
            blocks.append(StoredBlock(obj.key, obj.size, pos, size, base, last, ts))
        idx = p.batches
        refs = [
            idx.ref(i)
            for i in range(p.object_entries, len(idx))
            if idx.base_offsets[i] < p.high_watermark
        ]
        reads = self.logs.reads

        async def tail() -> list[bytes | memoryview]:
            out: list[bytes | memoryview] = []
            for r in refs:
                try:
                    out.extend(await reads.read_entry(r, p))
                except TrimmedRead:
                    # uploaded meanwhile: the upload's object holds it now
                    obj_rows = [
                        b for b in self._partition(p).blocks if b.last_offset >= r.base_offset
                    ]
                    out.extend(await _blocks_as_batches(catalog.store, obj_rows))
                    break
            return out

        lso = p.last_stable_offset
        return PartitionData(
            p.index,
            p.log_start_offset,
            blocks,
            tail,
            None if lso >= p.high_watermark else lso,
            p.txns.aborted_ranges(),
        )


async def _blocks_as_batches(
    store: ObjectStore, blocks: list[StoredBlock]
) -> list[bytes | memoryview]:
    """The batches of whole blocks, for a tail read that raced an upload (rare)."""
    out: list[bytes | memoryview] = []
    for b in blocks:
        data = await store.get(b.key, b.position, b.position + b.size)
        out.extend(d for *_, d in split_block(data))
    return out


class BucketSource:
    """A bucket with no broker running: read-only (GET and LIST only)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._meta: MetadataStore | None = None

    async def _metadata(self) -> MetadataStore:
        if self._meta is None:
            meta = MetadataStore(self.store)
            await meta.load_read_only()
            self._meta = meta
        return self._meta

    async def topics(self) -> list[str]:
        return sorted((await self._metadata()).topics)

    async def broker_ids(self) -> list[int]:
        """Every broker that wrote here: each writes its catalog snapshot when it opens."""
        ids = set()
        for info in await self.store.list("manifests/"):
            m = re.fullmatch(r"manifests/b(\d+)\.msgpack", info.key)
            if m:
                ids.add(int(m.group(1)))
        return sorted(ids)

    async def partitions(self, topic: str) -> list[PartitionData]:
        meta = await self._metadata()
        rec = meta.topics.get(topic)
        if rec is None:
            raise UnknownTopic(topic)
        stored = await self.stored(rec.topic_id, rec.log_start, list(range(rec.partitions)))
        return [stored[i] for i in range(rec.partitions)]

    async def stored(
        self, topic_id: bytes, log_start: dict[int, int], partitions: list[int]
    ) -> dict[int, PartitionData]:
        """The partitions as every broker's catalog in the bucket has them: object blocks,
        and for read_committed the transactions as of the newest catalog snapshot (records
        uploaded after it are taken as they are)."""
        rows: dict[int, list[tuple]] = {i: [] for i in partitions}
        states: dict[int, list] = {}
        for broker_id in await self.broker_ids():
            views = await Catalog(self.store, broker_id).read_other(broker_id)
            for (tid, index), view in views.items():
                if tid == topic_id and index in rows:
                    rows[index].extend(view.rows)
                    st = view.state
                    if st and (index not in states or st[0] > states[index][0]):
                        states[index] = st
        out = {}
        for i in partitions:
            _horizon, ongoing, aborted = (states.get(i) or (0, [], []))[:3]
            out[i] = PartitionData(
                i,
                log_start.get(i, 0),
                _tiling(rows[i]),
                stable_end=min((first for _, first in ongoing), default=None),
                aborted=[(pid, first, last) for last, pid, first in aborted],
            )
        return out


def _tiling(rows: Sequence[tuple]) -> list[StoredBlock]:
    """Blocks in offset order, each offset once (several catalogs may name a partition:
    a hand-off's old and new leader, a compaction's sources and output)."""
    out: list[StoredBlock] = []
    end = -1
    ordered = sorted(rows, key=lambda r: (r[4], -r[5]))
    for key, _seq, osize, _created, base, last, ts, pos, size in ordered:
        if last <= end:
            continue
        out.append(StoredBlock(key, osize, pos, size, base, last, ts))
        end = last
    return out


__all__ = ["BucketSource", "LogSource", "ObjectNotFound", "UnknownTopic"]
