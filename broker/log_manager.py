"""The broker's storage: topics and partitions over the WAL, the tail cache and reads.

Every append is framed into the WAL; the partition indexes where it went and the
tail cache keeps a copy for tailing readers. Reads past the cache go to the cold
store, which today is the WAL itself and later the object store.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.metadata_store import PRODUCER_ID_BLOCK, MetadataStore, TopicRecord
from broker.partition import BatchRef, Partition
from broker.tail_cache import TailCache
from broker.topic_config import effective
from protocol import records
from protocol.records import BatchHeader
from wal import WalEntry, WriteAheadLog

log = logging.getLogger(__name__)


class ColdReader(Protocol):
    """Where batches that left the tail cache are read from."""

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
        topic_defaults: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.topic_defaults = dict(topic_defaults or {})
        self.producer_id_expiration_ms = 86_400_000  # Kafka's producer.id.expiration.ms
        self.meta = MetadataStore(self.data_dir / "metadata.msgpack")
        self.wal = WriteAheadLog(self.data_dir / "wal", wal_segment_bytes)
        self.cold: ColdReader = self.wal
        self.tail = TailCache(tail_cache_bytes)
        self.topics: dict[str, TopicState] = {}
        self.topics_by_id: dict[bytes, TopicState] = {}
        self._unsynced: set[Partition] = set()
        self._waiters: dict[Partition, set[asyncio.Future[None]]] = {}
        self._next_producer_id = 0
        self._meta_lock = asyncio.Lock()
        # topic name -> called with each batch of that topic replayed from the WAL
        self.internal_replayers: dict[str, Callable[[bytes], None]] = {}

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.meta.load)
        for rec in self.meta.topics.values():
            self._add_topic_state(rec)
        self._next_producer_id = self.meta.producer_id_limit
        started = time.monotonic()
        counts = {"entries": 0, "skipped": 0}
        await asyncio.to_thread(self.wal.recover, lambda e: self._replay(e, counts))
        log.info(
            "recovered %d batches from the WAL in %.2fs (%d of deleted topics skipped); log end %d",
            counts["entries"],
            time.monotonic() - started,
            counts["skipped"],
            self.wal.end_position,
        )
        for state in self.topics.values():
            for index, offset in state.record.log_start.items():
                if index < len(state.partitions):
                    state.partitions[index].start_at(offset)
        self.wal.add_durable_listener(self._on_durable)
        self.wal.start()

    def _replay(self, entry: WalEntry, counts: dict[str, int]) -> None:
        topic = self.topics_by_id.get(entry.topic_id)
        if topic is None or entry.partition >= len(topic.partitions):
            counts["skipped"] += 1
            return
        p = topic.partitions[entry.partition]
        h = records.parse_header(entry.batch)
        if entry.base_offset < p.log_end_offset:
            log.warning(
                "WAL entry for %s at offset %d repeats offsets; skipped", p, entry.base_offset
            )
            counts["skipped"] += 1
            return
        p.leader_epoch = max(p.leader_epoch, entry.leader_epoch)
        p.record_append(h, entry.base_offset, entry.batch_position, None)
        replayer = self.internal_replayers.get(topic.name)
        deleted_before = topic.record.log_start.get(entry.partition, 0)
        if replayer is not None and entry.base_offset >= deleted_before:
            replayer(bytes(entry.batch))
        counts["entries"] += 1

    async def close(self) -> None:
        await self.wal.close()

    # --- topics -----------------------------------------------------------------------

    def _add_topic_state(self, rec: TopicRecord) -> TopicState:
        state = TopicState(
            rec, [Partition(rec.topic_id, rec.name, i) for i in range(rec.partitions)]
        )
        self.topics[rec.name] = state
        self.topics_by_id[rec.topic_id] = state
        return state

    async def create_topic(
        self, name: str, partitions: int, configs: dict[str, str], internal: bool = False
    ) -> TopicState:
        async with self._meta_lock:
            if name in self.topics:
                raise FileExistsError(name)
            rec = TopicRecord(name, uuid.uuid4().bytes, partitions, dict(configs), internal)
            self.meta.topics[name] = rec
            try:
                await asyncio.to_thread(self.meta.save)
            except BaseException:
                del self.meta.topics[name]
                raise
            log.info("created topic %s with %d partitions, configs %s", name, partitions, configs)
            return self._add_topic_state(rec)

    async def delete_topic(self, name: str) -> None:
        async with self._meta_lock:
            state = self.topics.get(name)
            if state is None:
                raise KeyError(name)
            rec = self.meta.topics.pop(name)
            try:
                await asyncio.to_thread(self.meta.save)
            except BaseException:
                self.meta.topics[name] = rec
                raise
            del self.topics[name]
            del self.topics_by_id[rec.topic_id]
            for p in state.partitions:
                p.deleted = True
                self.tail.drop(p.tail)
                self._unsynced.discard(p)
                self._wake(p)
            log.info("deleted topic %s", name)

    async def _save_change(self, undo) -> None:
        """Persist the metadata after a change; on failure, undo it and re-raise."""
        try:
            await asyncio.to_thread(self.meta.save)
        except BaseException:
            undo()
            raise

    async def set_topic_configs(self, topic: TopicState, configs: dict[str, str]) -> None:
        """Replace a topic's explicit configs; readers see them at once, no restart."""
        async with self._meta_lock:
            old, topic.record.configs = topic.record.configs, dict(configs)
            await self._save_change(lambda: setattr(topic.record, "configs", old))
            log.info("topic %s configs now %s", topic.name, configs)

    async def add_partitions(self, topic: TopicState, count: int) -> None:
        async with self._meta_lock:
            old = topic.record.partitions
            topic.record.partitions = count
            await self._save_change(lambda: setattr(topic.record, "partitions", old))
            for i in range(old, count):
                topic.partitions.append(Partition(topic.record.topic_id, topic.name, i))
            log.info("topic %s grew from %d to %d partitions", topic.name, old, count)

    async def delete_records(self, topic: TopicState, p: Partition, offset: int) -> None:
        """Move the log start offset forward (DeleteRecords)."""
        await self.move_log_starts([(topic, p, offset)])

    async def move_log_starts(self, moves: list[tuple[TopicState, Partition, int]]) -> None:
        """Persist new log start offsets in one metadata write, then apply them and trim
        the WAL segments that no partition needs any more."""
        async with self._meta_lock:
            # filtered under the lock: a concurrent move may have gone further meanwhile,
            # and the persisted start must never go back (offsets would be reused)
            moves = [(t, p, o) for t, p, o in moves if o > p.log_start_offset]
            if not moves:
                return
            previous = [(t, p.index, t.record.log_start.get(p.index)) for t, p, _ in moves]
            for t, p, offset in moves:
                t.record.log_start[p.index] = offset

            def undo() -> None:
                for t, index, old in previous:
                    if old is None:
                        t.record.log_start.pop(index, None)
                    else:
                        t.record.log_start[index] = old

            await self._save_change(undo)
            for _, p, offset in moves:
                p.start_at(offset)
                log.info("%s: log start offset moved to %d", p, offset)
        self.trim_wal()

    def trim_wal(self) -> None:
        """Delete WAL segments holding only batches before their partitions' log start
        (or of deleted topics)."""
        floor = self.wal.durable_position
        for state in self.topics.values():
            for p in state.partitions:
                first = p.first_position
                if first is not None:
                    floor = min(floor, first)
        self.wal.trim(floor)

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
        """A producer id never handed out before, even across crashes: blocks persist first."""
        async with self._meta_lock:
            if self._next_producer_id >= self.meta.producer_id_limit:
                self.meta.producer_id_limit = self._next_producer_id + PRODUCER_ID_BLOCK
                await asyncio.to_thread(self.meta.save)
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid

    # --- appends ----------------------------------------------------------------------

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
    ) -> list[bytes]:
        refs = p.refs_from(offset, limit_offset, max_bytes, first_may_exceed)
        out: list[bytes | None] = [self.tail.get(p.tail, r.base_offset) for r in refs]
        missing = [i for i, b in enumerate(out) if b is None]
        if missing:
            cold = await self.cold.read([(refs[i].position, refs[i].size) for i in missing])
            for i, data in zip(missing, cold, strict=True):
                out[i] = data
        return out  # type: ignore[return-value]

    async def read_batch(self, ref: BatchRef, p: Partition) -> bytes:
        cached = self.tail.get(p.tail, ref.base_offset)
        if cached is not None:
            return cached
        return (await self.cold.read([(ref.position, ref.size)]))[0]

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
