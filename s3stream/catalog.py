"""Which objects hold which offsets, and how that survives a restart from the bucket alone.

Data objects describe themselves (their index is in their footer), so an upload is a
single PUT. Every so often, and before any object is deleted, the catalog writes a
snapshot of every partition's object entries (`manifests/b<id>.msgpack`, replaced
with If-Match so a second writer with the same broker id is refused). Opening reads
the snapshot, then lists the broker's data objects and reads the footers of those
newer than the snapshot. An object newer than the snapshot whose every entry is
already covered is the output of a compaction that never committed: garbage. An
object older than the snapshot that the snapshot does not name was being deleted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from s3stream.api import BatchRef, Stream
from s3stream.object_format import FOOTER, BlockEntry, CorruptObject, parse_footer, parse_index
from s3stream.store import ObjectNotFound, ObjectStore
from s3stream.versioned import VersionedObject

log = logging.getLogger(__name__)

_FOOTER_READ = 64 * 1024  # one GET usually brings the footer and the whole index


@dataclass(slots=True)
class StoredObject:
    id: int  # this process's handle for it; not persisted
    key: str
    seq: int
    size: int
    created_ms: int


@dataclass(slots=True)
class PartitionView:
    """What another broker's catalog holds for one partition (see Catalog.read_other)."""

    epoch: int | None  # the leader epoch its snapshot was written at; None: not in it
    # (object key, seq, object size, created ms, base, last, max timestamp, position, size)
    rows: list[tuple]
    producers: list | None = None  # hand-off records: the idempotent producers' state
    discovered: bool = False  # rows from objects newer than the snapshot were added
    writer: int | None = None  # hand-off records: the broker that wrote it
    state: Any = None  # the stream's own state as of these rows (Stream.stream_state)

    @property
    def end(self) -> int:
        """The offset after the last one described."""
        return self.rows[-1][5] + 1 if self.rows else 0


@dataclass(slots=True)
class _Stored:
    """A broker's catalog as stored: snapshot, and the data objects listed."""

    raw: bytes | None = None  # the snapshot document
    etag: str | None = None
    last_seq: int = -1
    snapshot_objects: list = field(default_factory=list)  # [key, seq, size, created ms]
    views: dict[tuple[bytes, int], PartitionView] = field(default_factory=dict)
    listed: dict[str, int] = field(default_factory=dict)  # data object key -> seq


@dataclass(slots=True)
class LoadReport:
    objects: int = 0
    discovered: int = 0
    garbage: int = 0


class Catalog:
    def __init__(self, store: ObjectStore, broker_id: int) -> None:
        self.store = store
        self.broker_id = broker_id
        self.objects: dict[int, StoredObject] = {}
        self._retired: dict[int, StoredObject] = {}  # unlisted, kept for reads in flight
        self._next_id = 0
        self._by_key: dict[str, StoredObject] = {}
        self.next_seq = 0
        self._inflight_seqs: set[int] = set()
        self._manifest = VersionedObject(store, self.manifest_key)
        self._snapshot_lock = asyncio.Lock()
        self.uploads_since_snapshot = 0
        self.snapshots_written = 0

    # --- keys -------------------------------------------------------------------------

    @property
    def data_prefix(self) -> str:
        return f"data/b{self.broker_id}/"

    @property
    def manifest_key(self) -> str:
        return f"manifests/b{self.broker_id}.msgpack"

    def data_key(self, seq: int) -> str:
        return f"{self.data_prefix}{seq:016d}.obj"

    def _seq_of(self, key: str) -> int | None:
        m = re.fullmatch(re.escape(self.data_prefix) + r"(\d{16})\.obj", key)
        return int(m.group(1)) if m else None

    # --- objects ----------------------------------------------------------------------

    def allocate_seq(self) -> int:
        """A sequence number for a new object; released by add() or abandon()."""
        seq = self.next_seq
        self.next_seq += 1
        self._inflight_seqs.add(seq)
        return seq

    def abandon(self, seq: int) -> None:
        self._inflight_seqs.discard(seq)

    def add(self, seq: int, size: int, created_ms: int, key: str | None = None) -> StoredObject:
        self._inflight_seqs.discard(seq)
        obj = StoredObject(self._next_id, key or self.data_key(seq), seq, size, created_ms)
        self._next_id += 1
        self.objects[obj.id] = obj
        self._by_key[obj.key] = obj
        return obj

    def ensure(self, key: str, seq: int, size: int, created_ms: int) -> StoredObject:
        """The catalog's entry for `key`, which may be another broker's object (taken
        over with a partition), adding it if new."""
        obj = self._by_key.get(key)
        if obj is None or obj.id not in self.objects:
            obj = StoredObject(self._next_id, key, seq, size, created_ms)
            self._next_id += 1
            self.objects[obj.id] = obj
            self._by_key[key] = obj
        return obj

    def get(self, object_id: int) -> StoredObject:
        obj = self.objects.get(object_id) or self._retired.get(object_id)
        if obj is None:
            raise ObjectNotFound(f"object #{object_id}")
        return obj

    def unreferenced(self, streams: Iterable[Stream]) -> list[StoredObject]:
        """Objects no stream's index points into any more."""
        used: set[int] = set()
        for p in streams:
            used.update(p.object_ids())
        return [o for o in self.objects.values() if o.id not in used]

    def retire(self, objs: list[StoredObject]) -> None:
        """Drop from the catalog (the next snapshot leaves them out); reads in flight may
        still resolve them until forget()."""
        for o in objs:
            self.objects.pop(o.id, None)
            self._retired[o.id] = o

    def forget(self, objs: list[StoredObject]) -> None:
        for o in objs:
            self._retired.pop(o.id, None)
            if self._by_key.get(o.key) is o:
                del self._by_key[o.key]

    # --- snapshot ---------------------------------------------------------------------

    async def write_snapshot(self, streams: Iterable[Stream]) -> None:
        """Persist every stream's object entries; the objects they name stay listed."""
        async with self._snapshot_lock:
            # every object below last_seq is in this snapshot or is garbage: in-flight
            # uploads and compactions may still commit objects above it
            last_seq = min(self._inflight_seqs, default=self.next_seq) - 1
            index: dict[int, int] = {}
            objects = []
            parts = []
            for p in streams:
                if p.deleted:
                    continue
                rows = []
                for base, last, ts, pos, size, oid in p.object_rows():
                    if oid not in index:
                        o = self.get(oid)
                        index[oid] = len(objects)
                        objects.append([o.key, o.seq, o.size, o.created_ms])
                    rows.append([base, last, ts, pos, size, index[oid]])
                parts.append([p.topic_id, p.index, rows, p.leader_epoch, p.stream_state()])
            doc = {
                "version": 1,
                "broker_id": self.broker_id,
                "last_seq": last_seq,
                "objects": objects,
                "partitions": parts,
            }
            data = msgpack.packb(doc)
            await self._manifest.write(data)  # cancellation-safe; keeps the ETag right
            self.uploads_since_snapshot = 0
            self.snapshots_written += 1
            log.debug("snapshot of %d partitions over %d objects written", len(parts), len(objects))

    # --- opening ----------------------------------------------------------------------

    async def load(
        self,
        resolve: Callable[[bytes, int, int | None], Stream | None],
    ) -> tuple[LoadReport, list[str], dict[tuple[bytes, int], PartitionView]]:
        """Rebuild streams' object entries from the bucket; returns garbage keys, and
        what this broker's catalog holds for every stream (see read_other).

        `resolve(topic_id, index, epoch)` finds a stream this broker holds (None: the
        topic is gone, or in cluster mode another broker leads it or this snapshot is
        from an older leadership); `epoch` is None for a stream only objects newer than
        the snapshot hold. Call before the WAL is replayed.
        """
        stored = await self._read(self.broker_id)
        self._manifest.seen(stored.raw, stored.etag)
        for key, seq, size, created in stored.snapshot_objects:
            self.add(seq, size, created, key)
        used: set[str] = set()
        for (topic_id, index), view in stored.views.items():
            p = resolve(topic_id, index, view.epoch)
            if p is None:
                continue
            for key, seq, osize, created, base, last, ts, pos, size in view.rows:
                p.record_block(
                    BatchRef(base, last, ts, pos, size, self.ensure(key, seq, osize, created).id)
                )
                used.add(key)
        known = {key for key, *_ in stored.snapshot_objects}
        garbage = [
            key
            for key, seq in stored.listed.items()
            # older than the snapshot yet not in it: being deleted; newer, and every entry
            # already covered or of a deleted topic: a compaction that never committed
            if key not in known and (seq <= stored.last_seq or key not in used)
        ]
        self.next_seq = max([stored.last_seq, *stored.listed.values()]) + 1
        report = LoadReport(
            len(self.objects),
            sum(1 for key, seq in stored.listed.items() if seq > stored.last_seq and key in used),
            len(garbage),
        )
        return report, garbage, stored.views

    # --- hand-off records (cluster mode) ----------------------------------------------

    @staticmethod
    def handoff_key(topic_id: bytes, index: int) -> str:
        return f"handoffs/{topic_id.hex()}-{index}.msgpack"

    def handoff_record(self, p: Stream, producers: list | None) -> bytes:
        """A stream's stored log, for the broker that leads it next: its object entries
        and the idempotent producers' state (opaque here; None: not known). Written by
        the broker letting go, before the assignment changes, so the next leader never
        depends on that broker's catalog snapshot (which moves on without the stream)."""
        rows = []
        for base, last, ts, pos, size, oid in p.object_rows():
            o = self.get(oid)
            rows.append([o.key, o.seq, o.size, o.created_ms, base, last, ts, pos, size])
        return self.encode_handoff(p.leader_epoch, rows, producers, p.stream_state())

    def encode_handoff(
        self, epoch: int, rows: list, producers: list | None, state: Any = None
    ) -> bytes:
        doc = {
            "writer": self.broker_id,
            "epoch": epoch,
            "rows": rows,
            "producers": producers,
            "state": state,
        }
        return msgpack.packb(doc)

    async def read_handoff(self, topic_id: bytes, index: int) -> PartitionView | None:
        try:
            raw = await self.store.get(self.handoff_key(topic_id, index))
        except ObjectNotFound:
            return None
        doc = msgpack.unpackb(raw, strict_map_key=False)
        rows = [tuple(r) for r in doc["rows"]]
        return PartitionView(
            doc["epoch"], rows, doc["producers"], writer=doc["writer"], state=doc.get("state")
        )

    async def read_other(self, broker_id: int) -> dict[tuple[bytes, int], PartitionView]:
        """Another broker's (or this one's) stored catalog, read-only: its snapshot, and
        the objects it uploaded after it, partition by partition. This is how a new
        leader finds a partition's data: after a hand-off the old leader's snapshot has
        it all; after a failover its newer objects hold the rest."""
        return (await self._read(broker_id)).views

    async def _read(self, broker_id: int) -> _Stored:
        """A broker's snapshot, then the footers of its objects newer than it."""
        owner = self if broker_id == self.broker_id else Catalog(self.store, broker_id)
        stored = _Stored()
        try:
            raw, stored.etag = await self.store.get_with_etag(owner.manifest_key)
        except ObjectNotFound:
            raw = None
        stored.raw = raw
        if raw is not None:
            doc = msgpack.unpackb(raw, strict_map_key=False)
            stored.last_seq = doc["last_seq"]
            stored.snapshot_objects = objs = doc["objects"]
            for entry in doc["partitions"]:
                topic_id, index, rows = entry[:3]
                stored.views[(topic_id, index)] = PartitionView(
                    entry[3] if len(entry) > 3 else 0,
                    [
                        (*objs[k], base, last, ts, pos, size)
                        for base, last, ts, pos, size, k in rows
                    ],
                    state=entry[4] if len(entry) > 4 else None,
                )
        for info in sorted(await self.store.list(owner.data_prefix), key=lambda i: i.key):
            seq = owner._seq_of(info.key)
            if seq is None:
                continue
            stored.listed[info.key] = seq
            if seq <= stored.last_seq:
                continue
            for e in await self.read_index(info.key, info.size):
                view = stored.views.setdefault((e.topic_id, e.partition), PartitionView(None, []))
                if e.first_offset < view.end:
                    continue  # offsets an earlier object holds (a compaction's output)
                view.discovered = True
                view.rows.append(
                    (
                        info.key,
                        seq,
                        info.size,
                        0,
                        e.first_offset,
                        e.last_offset,
                        e.max_timestamp,
                        e.position,
                        e.size,
                    )
                )
        return stored

    async def read_index(self, key: str, size: int) -> list[BlockEntry]:
        """An object's index: the footer and usually the index in one ranged GET."""
        start = max(0, size - _FOOTER_READ)
        tail = await self.store.get(key, start, size)
        footer = parse_footer(tail)
        index_end = footer.index_position + footer.index_size
        if index_end + FOOTER.size != size:
            raise CorruptObject(f"{key}: footer does not match the object size {size}")
        if footer.index_position >= start:
            lo = footer.index_position - start
            index = memoryview(tail)[lo : lo + footer.index_size]
        else:
            index = await self.store.get(key, footer.index_position, index_end)
        return parse_index(footer, index)
