"""Zone-aware reads (KIP-392's preferred read replica, without replicas): any broker can
serve a partition's uploaded data from the bucket, so a client with `client.rack` is sent
to a live broker in its own rack, and that broker reads the partition's object blocks
from the bucket (through a small block cache) although it does not lead it.

Choice for the tail (offsets above what is uploaded): the serving broker answers with the
leader as preferred read replica, so the client goes back to the leader, which serves the
tail from its WAL and tail cache, and sends the client to its rack again once the data is
uploaded. No proxying: the tail crosses zones once per client either way, and sending the
client back costs nothing on the serving broker.

`choose_replica` is pure (the leader's decision); `BucketReplicas` holds the I/O (an index
of each non-led partition's uploaded blocks, refreshed when older than `refresh_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from broker.replay.core import StoredBlock
from broker.replay.sources import BucketSource
from s3stream.object_format import split_block
from s3stream.store import ObjectStore

log = logging.getLogger(__name__)

FRESH_S = 0.2  # an index younger than this is not read again for an offset beyond it


@dataclass(frozen=True)
class Zones:
    """What Fetch needs for zone-aware reads: this broker's rack, and (cluster mode) the
    reader of partitions it does not lead."""

    rack: str
    replicas: BucketReplicas | None = None


def choose_replica(
    topic: str,
    partition: int,
    client_rack: str | None,
    leader_rack: str | None,
    brokers: Sequence[tuple[int, str | None]],
) -> int | None:
    """The broker (id) in the client's rack that should serve it, or None: the leader
    itself (no rack given, the leader is in it, or no live broker is). The same broker
    for a partition every time, spread over the rack's brokers by partition."""
    if not client_rack or client_rack == leader_rack:
        return None
    in_rack = sorted(b for b, rack in brokers if rack == client_rack)
    if not in_rack:
        return None
    return in_rack[zlib.crc32(f"{topic}-{partition}".encode()) % len(in_rack)]


@dataclass(frozen=True)
class ReplicaRead:
    batches: list[bytes]
    uploaded_end: int  # offsets below this are in the bucket (as this broker knows)
    log_start: int


class BucketReplicas:
    """Reads of partitions this broker does not lead, from the bucket."""

    def __init__(self, store: ObjectStore, refresh_s: float, cache_bytes: int) -> None:
        self.source = BucketSource(store)
        self.store = store
        self.refresh_s = refresh_s
        self.cache_bytes = cache_bytes
        # (topic id) -> (when read, partition -> (blocks, log start))
        self._index: dict[bytes, tuple[float, dict[int, tuple[list[StoredBlock], int]]]] = {}
        self._refreshing: dict[bytes, asyncio.Task] = {}
        self._blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cached = 0

    async def _partition(
        self,
        topic_id: bytes,
        partitions: int,
        log_start: dict[int, int],
        index: int,
        max_age: float | None = None,
    ) -> tuple[list[StoredBlock], int]:
        entry = self._index.get(topic_id)
        age = self.refresh_s if max_age is None else max_age
        if entry is None or time.monotonic() - entry[0] > age:
            task = self._refreshing.get(topic_id)
            if task is None:  # one refresh at a time per topic; others wait for it
                task = asyncio.ensure_future(self._refresh(topic_id, partitions, log_start))
                self._refreshing[topic_id] = task
                task.add_done_callback(lambda _t: self._refreshing.pop(topic_id, None))
            await asyncio.shield(task)
            entry = self._index[topic_id]
        return entry[1].get(index, ([], log_start.get(index, 0)))

    async def _refresh(self, topic_id: bytes, partitions: int, log_start: dict[int, int]) -> None:
        stored = await self.source.stored(topic_id, log_start, list(range(partitions)))
        self._index[topic_id] = (
            time.monotonic(),
            {i: (d.blocks, d.log_start) for i, d in stored.items()},
        )

    async def read(
        self,
        topic_id: bytes,
        partitions: int,
        log_start: dict[int, int],
        index: int,
        offset: int,
        max_bytes: int,
    ) -> ReplicaRead:
        """Uploaded batches from `offset` on, up to about `max_bytes` (at least one)."""
        blocks, start = await self._partition(topic_id, partitions, log_start, index)
        end = blocks[-1].last_offset + 1 if blocks else start
        if offset >= end:  # the leader says it is uploaded: look again, once, if not fresh
            blocks, start = await self._partition(
                topic_id, partitions, log_start, index, max_age=FRESH_S
            )
            end = blocks[-1].last_offset + 1 if blocks else start
        out: list[bytes] = []
        size = 0
        for b in blocks:
            if b.last_offset < offset:
                continue
            if size >= max_bytes and out:
                break
            for _base, last, _ts, data in split_block(await self._block(b)):
                if last < offset:
                    continue
                if size + len(data) > max_bytes and out:
                    break
                out.append(bytes(data))
                size += len(data)
        return ReplicaRead(out, end, start)

    async def _block(self, b: StoredBlock) -> bytes:
        key = (b.key, b.position)
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
            return data
        data = bytes(await self.store.get(b.key, b.position, b.position + b.size))
        self._blocks[key] = data
        self._cached += len(data)
        while self._cached > self.cache_bytes and len(self._blocks) > 1:
            _, old = self._blocks.popitem(last=False)
            self._cached -= len(old)
        return data
