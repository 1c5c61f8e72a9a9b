"""The log cleaner for compacted topics (`cleanup.policy=compact` or `compact,delete`).

The broker's side of s3stream.log_cleaner: which partitions to clean (those this
broker leads, of topics whose policy includes `compact`, with a clean due by their
settings, the dirtiest first), reading their object blocks, and putting the result in
place. The CPU work (decoding keys, filtering and recompressing batches, building the
object) runs in a worker process, so it takes neither the event loop's time nor its
interpreter lock; the offset map there is bounded by `dedupe_buffer_bytes`.

The output is one new object holding the partition's cleaned blocks. It is PUT
first; then, in one step on the event loop, the partition's index entries that were
cleaned are swapped for it, exactly as object compaction swaps a merged run (readers
already under way keep reading the old objects, which are deleted only after the
grace period); then the catalog snapshot is written, so a broker opening from the
bucket sees the cleaned log. If the partition changed under the clean (it moved to
another broker, or was reset), nothing is swapped: the new object is unreferenced and
goes the way of any garbage object, and the old ones are still whole.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

from broker.log.partition import Partition
from broker.log.topics import TopicRegistry, TopicState
from s3stream import log_cleaner as lc
from s3stream.api import BatchRef
from s3stream.catalog import Catalog
from s3stream.log_cleaner import CleanerSettings
from s3stream.object_format import refs_by_partition
from s3stream.tail_cache import TailCache

log = logging.getLogger(__name__)

_READ_BYTES = 8 * 1024 * 1024  # one ranged GET of consecutive blocks, at most
_job_ids = itertools.count(1)


@dataclass
class CleanerStats:
    runs: int = 0
    aborted: int = 0
    failed: int = 0
    bytes_read: int = 0  # dirty and clean log bytes read
    bytes_written: int = 0  # object bytes written
    dirty_bytes_cleaned: int = 0
    last_run_ms: int = 0  # wall clock at the end of the last clean, 0: none yet
    last_duration_s: float = 0.0
    seconds: float = 0.0  # time spent in cleans that completed
    records_kept: int = 0
    records_removed: int = 0


def is_compacted(policy: str) -> bool:
    return "compact" in [p.strip() for p in policy.split(",")]


def topic_clean_settings(registry: TopicRegistry, t: TopicState) -> lc.CleanSettings:
    def get(key: str) -> str:
        return registry.topic_config(t, key)

    return lc.CleanSettings(
        min_cleanable_dirty_ratio=float(get("min.cleanable.dirty.ratio")),
        min_compaction_lag_ms=int(get("min.compaction.lag.ms")),
        max_compaction_lag_ms=int(get("max.compaction.lag.ms")),
        delete_retention_ms=int(get("delete.retention.ms")),
        segment_bytes=int(get("segment.bytes")),
        segment_ms=int(get("segment.ms")),
    )


def partition_cleanable(p: Partition, s: lc.CleanSettings, now_ms: int) -> lc.Cleanable:
    idx = p.batches
    return lc.cleanable(
        idx.base_offsets,
        idx.last_offsets,
        idx.max_timestamps,
        idx.sizes,
        p.object_entries,
        p.cleaned_end,
        p.last_stable_offset,
        now_ms,
        s,
    )


WORKER_NICENESS = 10  # below the broker's own threads when the CPUs are busy


def _lower_priority(niceness: int) -> None:
    """The worker's initializer: cleaning is background work, so on a busy machine the
    scheduler runs the broker's event loop (produce, fetch) first; on an idle one the
    worker still gets a whole CPU."""
    try:
        os.nice(niceness)
    except OSError:  # not permitted here: cleaning still works, at the same priority
        log.warning("could not lower the cleaner worker's priority")


class CleanerPool:
    """The worker process the cleaner's CPU work runs in: started on first use (spawned,
    not forked from a process with threads), started again if it died; at a lower
    scheduling priority than the broker (`niceness`)."""

    def __init__(self, niceness: int = WORKER_NICENESS) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self.niceness = niceness

    def get(self) -> Executor:
        if self._pool is None or getattr(self._pool, "_broken", False):
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
                initargs=(self.niceness,),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class LogCleaner:
    def __init__(
        self,
        registry: TopicRegistry,
        catalog: Catalog,
        tail: TailCache,
        settings: CleanerSettings,
        executor: Callable[[], Executor],
        write_snapshot: Callable[[], Awaitable[None]],
        internal_topics: frozenset[str] = frozenset(),
    ) -> None:
        """`executor()` gives the worker pool (one worker: a job's steps run in order
        in one process); `write_snapshot()` persists the catalog; `internal_topics`:
        the internal topics cleaned as any other (the rest compact themselves)."""
        self.internal_topics = internal_topics
        self.registry = registry
        self.catalog = catalog
        self.tail = tail
        self.settings = settings
        self._executor = executor
        self._write_snapshot = write_snapshot
        self.stats = CleanerStats()
        # partitions whose last clean failed, and until when they are left alone
        self._failed: dict[tuple[bytes, int], float] = {}
        self.retry_after_failure_s = 300.0

    def _compacted(self) -> list[tuple[TopicState, lc.CleanSettings, list[Partition]]]:
        """Compacted topics with the partitions this broker leads."""
        out = []
        for t in list(self.registry.topics.values()):
            policy = self.registry.topic_config(t, "cleanup.policy")
            if (t.record.internal and t.name not in self.internal_topics) or not is_compacted(
                policy
            ):
                continue
            parts = [p for p in t.partitions if p.leading and p.held and not p.deleted]
            out.append((t, topic_clean_settings(self.registry, t), parts))
        return out

    def dirty_ratios(self, now_ms: int | None = None) -> list[tuple[str, int, float]]:
        """(topic, partition, dirty ratio) of the compacted partitions led here."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return [
            (t.name, p.index, partition_cleanable(p, s, now_ms).dirty_ratio)
            for t, s, parts in self._compacted()
            for p in parts
        ]

    def candidates(self, now_ms: int) -> list[tuple[float, TopicState, Partition, lc.CleanPlan]]:
        """Partitions with a clean due, dirtiest first."""
        out = []
        now = time.monotonic()
        for t, s, parts in self._compacted():
            for p in parts:
                if self._failed.get((p.topic_id, p.index), 0.0) > now:
                    continue
                c = partition_cleanable(p, s, now_ms)
                plan = lc.plan_clean(c, p.batches.last_offsets, now_ms, s)
                if plan is not None:
                    out.append((plan.dirty_ratio, t, p, plan))
        out.sort(key=lambda c: -c[0])
        return out

    async def clean_once(self, now_ms: int | None = None) -> bool:
        """Clean the dirtiest partition that is due; False if none was."""
        if not self.settings.enabled:
            return False
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        found = self.candidates(now_ms)
        if not found:
            return False
        _, t, p, plan = found[0]
        try:
            await self.clean(t, p, plan, now_ms)
        except Exception:
            # a store error, or a batch the cleaner cannot read: the partition waits, the
            # rest of housekeeping (and the other partitions) go on
            log.exception("%s: clean failed; retrying in %.0fs", p, self.retry_after_failure_s)
            self._failed[(p.topic_id, p.index)] = time.monotonic() + self.retry_after_failure_s
            self.stats.failed += 1
        return True

    async def clean(self, t: TopicState, p: Partition, plan: lc.CleanPlan, now_ms: int) -> bool:
        started = time.monotonic()
        epoch = p.leader_epoch
        s = topic_clean_settings(self.registry, t)
        idx = p.batches
        refs = [idx.ref(i) for i in range(plan.entries)]
        params = lc.JobParams(
            log_start=p.log_start_offset,
            dirty_start=max(p.cleaned_end, p.log_start_offset),
            end_offset=plan.end_offset,
            now_ms=now_ms,
            delete_retention_ms=s.delete_retention_ms,
            aborted=tuple(p.txns.aborted_ranges()),
            map_budget_bytes=self.settings.dedupe_buffer_bytes,
        )
        job = next(_job_ids)
        pool = self._executor()
        loop = asyncio.get_running_loop()

        def run(fn, *args):
            return loop.run_in_executor(pool, fn, job, *args)

        await run(lc.job_open, params)
        read = 0
        try:
            # the offset map over the dirty blocks; a full map ends the clean early.
            # Each group goes to the worker through a shared staging buffer (no pickling
            # through a pipe); the next group is read from the store meanwhile.
            end_offset, entries = plan.end_offset, plan.entries
            dirty = refs[plan.dirty_from :]
            done = plan.dirty_from
            mapped: list[tuple[int, int, int]] = []  # the groups the map took
            groups = list(
                lc.block_groups(
                    [(r.object_id, r.position, r.size, r.last_offset) for r in dirty],
                    _READ_BYTES,
                )
            )
            staging = SharedMemory(create=True, size=_READ_BYTES)
            ahead: asyncio.Task | None = None
            try:
                if groups:
                    ahead = asyncio.ensure_future(self._get(*groups[0][:3]))
                for i, (oid, start, stop, last, n) in enumerate(groups):
                    assert ahead is not None
                    data = await ahead
                    ahead = None
                    if i + 1 < len(groups):
                        ahead = asyncio.ensure_future(self._get(*groups[i + 1][:3]))
                    read += len(data)
                    await self._within_budget(read, started)
                    if len(data) <= staging.size:
                        staging.buf[: len(data)] = data
                        fit, _, _ = await run(lc.job_map_shared, staging.name, len(data), last + 1)
                    else:  # a group of one block larger than the buffer
                        fit, _, _ = await run(lc.job_map, data, last + 1)
                    del data
                    if not fit:
                        end_offset, entries = refs[done - 1].last_offset + 1, done
                        break
                    mapped.append((oid, start, stop))
                    done += n
            finally:
                if ahead is not None:
                    ahead.cancel()
                staging.close()
                staging.unlink()
            # the rewrite of everything up to there: the clean part, then the dirty
            # groups that keep something (most of an often-updated log keeps nothing)
            needed = await run(lc.job_needed)
            clean_part = [
                (oid, start, stop)
                for oid, start, stop, _, _ in lc.block_groups(
                    [
                        (r.object_id, r.position, r.size, r.last_offset)
                        for r in refs[: plan.dirty_from]
                    ],
                    _READ_BYTES,
                )
            ]
            dirty_part = [g for g, need in zip(mapped, needed, strict=True) if need]
            for oid, start, stop in clean_part + dirty_part:
                data = await self._get(oid, start, stop)
                read += len(data)
                await self._within_budget(read, started)
                await run(lc.job_rewrite, data, end_offset)
            created_ms = int(time.time() * 1000)
            body, block_entries, stats = await loop.run_in_executor(
                pool,
                lc.job_finish,
                job,
                p.topic_id,
                p.index,
                self.settings.block_bytes,
                created_ms,
            )
        except BaseException:
            await asyncio.shield(run(lc.job_close))
            raise
        if not p.holds_at(epoch) or not p.leading:
            log.info("%s: moved during its clean; the clean is dropped", p)
            self.stats.aborted += 1
            return False
        blocks: list[BatchRef] = []
        if block_entries:
            seq = self.catalog.allocate_seq()
            try:
                await self.catalog.store.put(self.catalog.data_key(seq), body, if_none_match=True)
            except BaseException:
                self.catalog.abandon(seq)
                raise
            obj = self.catalog.add(seq, len(body), created_ms)
            blocks = refs_by_partition(block_entries, obj.id)[(p.topic_id, p.index)]
        # the swap: one step on the event loop, nothing awaited in between
        if not p.holds_at(epoch) or not p.leading or not p.replace_prefix(refs[:entries], blocks):
            log.info("%s: changed during its clean; the clean is dropped", p)
            self.stats.aborted += 1
            return False
        p.cleaned_end = max(p.cleaned_end, end_offset)
        self.tail.discard_below(p.tail, end_offset)
        await self._write_snapshot()
        st = self.stats
        st.runs += 1
        st.bytes_read += read
        st.bytes_written += len(body) if block_entries else 0
        st.dirty_bytes_cleaned += sum(r.size for r in refs[plan.dirty_from : entries])
        st.records_kept += stats.records_kept
        st.records_removed += stats.records_read - stats.records_kept
        st.last_run_ms = int(time.time() * 1000)
        st.last_duration_s = time.monotonic() - started
        st.seconds += st.last_duration_s
        log.info(
            "%s: cleaned offsets %d-%d (%d bytes, %d dirty) into %d bytes in %.2fs: "
            "%d of %d records kept, %d tombstones, %d markers, %d aborted records removed",
            p,
            p.log_start_offset,
            end_offset - 1,
            sum(r.size for r in refs[:entries]),
            sum(r.size for r in refs[plan.dirty_from : entries]),
            len(body) if block_entries else 0,
            st.last_duration_s,
            stats.records_kept,
            stats.records_read,
            stats.tombstones_dropped,
            stats.markers_dropped,
            stats.aborted_dropped,
        )
        return True

    async def _within_budget(self, read: int, started: float) -> None:
        """Pause while the bytes read so far exceed the cleaner's byte budget."""
        wait = lc.budget_wait_s(
            read, time.monotonic() - started, self.settings.io_max_bytes_per_second
        )
        if wait > 0:
            await asyncio.sleep(wait)

    async def _get(self, object_id: int, start: int, stop: int) -> bytes:
        obj = self.catalog.get(object_id)
        return await self.catalog.store.get(obj.key, start, stop)
