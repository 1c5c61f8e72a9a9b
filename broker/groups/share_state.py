"""The share-partitions this broker serves and the share sessions of the members fetching
them (KIP-932): the I/O around broker.groups.share_partition.

A share-partition is created the first time a share group fetches a partition, at the
log start or end as the group's `share.auto.offset.reset` says, and persisted (start
offset, in-flight states, delivery counts) to `__consumer_offsets` under the group: an
acknowledgement is answered once durable, so an acknowledged record is never delivered
again after a restart; acquired records are persisted as available, so they come back.
A sweeper returns expired locks' records to available.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field

from broker.groups.share_partition import Counts, SharePartition, ShareSettings
from broker.groups.share_persister import SharePersister
from broker.groups.sweeper import Sweeper
from protocol.errors import ErrorCode

log = logging.getLogger(__name__)

Key = tuple[bytes, int]  # topic id bytes, partition
# group id, share-partition states (None: deleted) -> durable
PersistStates = Callable[[str, dict[Key, dict | None]], Awaitable[None]]

FINAL_EPOCH = -1
MAX_EPOCH = 2**31 - 1


@dataclass(frozen=True)
class ShareDefaults:
    """The broker's group.share.* settings, which group configs override per group."""

    record_lock_duration_ms: int = 30_000
    delivery_count_limit: int = 5
    max_record_locks: int = 2000
    auto_offset_reset: str = "latest"


@dataclass
class ShareSession:
    epoch: int = 1  # the epoch the next request must carry
    partitions: set[tuple[uuid.UUID, int]] = field(default_factory=set)


class _Pending:
    """A group's share-partitions waiting to be written, and the writer's future."""

    def __init__(self) -> None:
        self.keys: set[tuple[uuid.UUID, int]] = set()
        self.next: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Future[None] | None = None


class ShareStates:
    def __init__(
        self,
        defaults: ShareDefaults,
        group_configs: Callable[[str], Mapping[str, str]],
        persist: PersistStates,
        stored: MutableMapping[str, dict[Key, dict]],
        persister: SharePersister | None = None,
    ) -> None:
        """`persist` and `stored`: the group coordinator's table of share-partition states
        (used when this broker coordinates the group); `persister` reaches whichever broker
        does (broker.groups.share_persister)."""
        self.defaults = defaults
        self._configs = group_configs
        self._persist = persist
        self._stored = stored
        self.partitions: dict[tuple[str, bytes, int], SharePartition] = {}
        self.sessions: dict[tuple[str, str], ShareSession] = {}
        self._writes: set[asyncio.Future[None]] = set()
        self._pending: dict[str, _Pending] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._sweeper = Sweeper(self.sweep, "share-partition", 0.2)
        # the leader epoch of the partition each share-partition was loaded at: another
        # epoch means the partition moved meanwhile, and the state is read again
        self.epochs: dict[tuple[str, bytes, int], int] = {}
        self.persister: SharePersister | None = persister
        # group configs read from the coordinator elsewhere, at the last load
        self._remote_configs: dict[str, dict[str, str]] = {}
        self.retired = Counts()  # counts of share-partitions forgotten since

    def start(self) -> None:
        self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()

    # --- settings -----------------------------------------------------------------------

    def _group_configs(self, group_id: str) -> Mapping[str, str]:
        """The group's configs: this broker's if it coordinates the group, else those read
        from its coordinator when a share-partition was last loaded."""
        local = self._configs(group_id)
        return local or self._remote_configs.get(group_id, {})

    def settings(self, group_id: str) -> ShareSettings:
        c = self._group_configs(group_id)
        d = self.defaults
        return ShareSettings(
            record_lock_duration_ms=int(
                c.get("share.record.lock.duration.ms", d.record_lock_duration_ms)
            ),
            delivery_count_limit=int(c.get("share.delivery.count.limit", d.delivery_count_limit)),
            max_record_locks=int(c.get("share.partition.max.record.locks", d.max_record_locks)),
        )

    def auto_offset_reset(self, group_id: str) -> str:
        configs = self._group_configs(group_id)
        return configs.get("share.auto.offset.reset", self.defaults.auto_offset_reset)

    def read_committed(self, group_id: str) -> bool:
        return self._group_configs(group_id).get("share.isolation.level") == "read_committed"

    # --- waking fetches that found nothing to acquire --------------------------------

    def changed(self) -> asyncio.Future[None]:
        """Done at the next notify(): records may have become available (acknowledged,
        released or expired ones free locks; released and expired ones come back)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        return fut

    def unwait(self, fut: asyncio.Future[None]) -> None:
        self._waiters.discard(fut)

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # --- share-partitions ---------------------------------------------------------------

    async def load(self, group_id: str, topic_id: uuid.UUID, index: int, leader_epoch: int) -> None:
        """Before serving a share-partition as the partition's leader at `leader_epoch`:
        unless it was loaded at that epoch, its state is read again from where it is kept
        (the partition moved away and back, or here for the first time). Raises
        share_persister.StateUnavailable."""
        key = (group_id, topic_id.bytes, index)
        if self.epochs.get(key) == leader_epoch and key in self.partitions:
            return
        if self.persister is None:
            self.epochs[key] = leader_epoch
            return
        stored = await self.persister.read(group_id, topic_id, index)
        remote = await self.persister.configs(group_id)
        if remote is not None:
            self._remote_configs[group_id] = remote
        if self.epochs.get(key) == leader_epoch and key in self.partitions:
            return  # another request loaded it meanwhile
        old = self.partitions.pop(key, None)
        if old is not None:
            self._retire(old)
        if stored is not None:
            self.partitions[key] = SharePartition.from_record(stored, self.settings(group_id))
            log.info(
                "share group %s: %s-%d loaded at leader epoch %d, start offset %d",
                group_id,
                topic_id,
                index,
                leader_epoch,
                stored["start"],
            )
        self.epochs[key] = leader_epoch
        if stored is not None:
            # written back at the new epoch at once: from now on the coordinator refuses
            # the previous leader's writes
            self.write_later(group_id, [(topic_id, index)])

    def existing(self, group_id: str, topic_id: uuid.UUID, index: int) -> SharePartition | None:
        key = (group_id, topic_id.bytes, index)
        sp = self.partitions.get(key)
        if sp is None:
            stored = self._stored.get(group_id, {}).get((topic_id.bytes, index))
            if stored is not None:
                sp = self.partitions[key] = SharePartition.from_record(
                    stored, self.settings(group_id)
                )
                log.info(
                    "share group %s: %s-%d restored at start offset %d",
                    group_id,
                    topic_id,
                    index,
                    sp.start_offset,
                )
        if sp is not None:
            sp.settings = self.settings(group_id)
        return sp

    def partition(
        self, group_id: str, topic_id: uuid.UUID, index: int, log_start: int, log_end: int
    ) -> SharePartition:
        """The group's share-partition, restored or created (at the log start or end, as
        share.auto.offset.reset says); its start is kept within the log."""
        sp = self.existing(group_id, topic_id, index)
        if sp is None:
            earliest = self.auto_offset_reset(group_id) == "earliest"
            start = log_start if earliest else log_end
            sp = self.partitions[(group_id, topic_id.bytes, index)] = SharePartition(
                start, self.settings(group_id)
            )
            log.info(
                "share group %s: %s-%d initialized at offset %d", group_id, topic_id, index, start
            )
            self.write_later(group_id, [(topic_id, index)])
        sp.skip_to(log_start)
        return sp

    def of_group(self, group_id: str) -> dict[Key, int]:
        """(topic id bytes, partition) -> start offset, of the group's share-partitions."""
        out = {k: v["start"] for k, v in self._stored.get(group_id, {}).items()}
        for (g, t, p), sp in self.partitions.items():
            if g == group_id:
                out[(t, p)] = sp.start_offset
        return out

    async def reset(self, group_id: str, starts: dict[tuple[uuid.UUID, int], int]) -> None:
        """AlterShareGroupOffsets of an empty group: each share-partition starts again."""
        for (tid, p), start in starts.items():
            key = (group_id, tid.bytes, p)
            sp = self.existing(group_id, tid, p)
            if sp is None:
                sp = self.partitions[key] = SharePartition(start, self.settings(group_id))
            sp.reset(start)
        self.notify()
        await self.write(group_id, list(starts))

    async def delete(self, group_id: str, keys: list[tuple[uuid.UUID, int]]) -> None:
        """DeleteShareGroupOffsets: the share-partitions are forgotten."""
        for tid, p in keys:
            sp = self.partitions.pop((group_id, tid.bytes, p), None)
            if sp is not None:
                self._retire(sp)
        await self._persist(group_id, {(tid.bytes, p): None for tid, p in keys})

    def _retire(self, sp: SharePartition) -> None:
        self.retired.redeliveries += sp.counts.redeliveries
        self.retired.lock_expiries += sp.counts.lock_expiries
        self.retired.delivery_limit_archived += sp.counts.delivery_limit_archived

    # --- persistence --------------------------------------------------------------------

    def _records(self, group_id: str, keys) -> dict[Key, dict | None]:
        out: dict[Key, dict | None] = {}
        for tid, p in keys:
            sp = self.partitions.get((group_id, tid.bytes, p))
            if sp is not None:
                le = self.epochs.get((group_id, tid.bytes, p), -1)
                out[(tid.bytes, p)] = {**sp.to_record(), "le": le}
        return out

    async def write(self, group_id: str, keys) -> None:
        """Persist the share-partitions as they are now; durable when it returns."""
        keys = list(keys)
        if keys:
            await asyncio.shield(self._queue(group_id, keys))

    def write_later(self, group_id: str, keys) -> None:
        keys = list(keys)
        if not keys:
            return
        fut = self._queue(group_id, keys)
        self._writes.add(fut)
        fut.add_done_callback(self._written)

    def _queue(self, group_id: str, keys) -> asyncio.Future[None]:
        """One writer per group, each write the states as they are when it starts: writes
        of a share-partition never land out of order (a retried older state can never
        overwrite a newer one), and changes made while one is under way share the next."""
        q = self._pending.setdefault(group_id, _Pending())
        q.keys.update(keys)
        if q.task is None or q.task.done():
            q.task = asyncio.ensure_future(self._flusher(group_id, q))
        return q.next

    async def _flusher(self, group_id: str, q: _Pending) -> None:
        while q.keys:
            keys, q.keys = q.keys, set()
            fut, q.next = q.next, asyncio.get_running_loop().create_future()
            records = self._records(group_id, keys)
            try:
                if records:
                    await self._persist(group_id, records)
            except Exception as e:
                fut.set_exception(e)
            else:
                fut.set_result(None)
        if self._pending.get(group_id) is q and not q.keys:
            del self._pending[group_id]

    def _written(self, task: asyncio.Future[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("share-partition state not persisted: %s", task.exception())

    # --- sessions -----------------------------------------------------------------------

    def session(
        self, group_id: str, member_id: str, epoch: int, opening_allowed: bool = True
    ) -> ShareSession | ErrorCode:
        """The member's share session for a request at `epoch` (0 opens a new one, -1 is
        the last request of it), its epoch moved on; or the error to answer."""
        key = (group_id, member_id)
        if epoch == 0:
            if not opening_allowed:
                return ErrorCode.invalid_share_session_epoch
            if key in self.sessions:
                self.release(group_id, member_id)
            s = self.sessions[key] = ShareSession()
            return s
        s = self.sessions.get(key)
        if s is None:
            return ErrorCode.share_session_not_found
        if epoch == FINAL_EPOCH:
            return s
        if epoch != s.epoch:
            return ErrorCode.invalid_share_session_epoch
        s.epoch = 1 if epoch == MAX_EPOCH else epoch + 1
        return s

    def close(self, group_id: str, member_id: str) -> None:
        """The member's last request (epoch -1): its session goes, and so do its locks."""
        self.sessions.pop((group_id, member_id), None)
        self.release(group_id, member_id)

    def release(self, group_id: str, member_id: str) -> None:
        touched = []
        for (g, t, p), sp in self.partitions.items():
            if g == group_id and sp.release_member(member_id):
                touched.append((uuid.UUID(bytes=t), p))
        if touched:
            log.info(
                "share group %s: released the records member %s held in %d partitions",
                group_id,
                member_id,
                len(touched),
            )
            self.write_later(group_id, touched)
            self.notify()

    def forget_member(self, group_id: str, member_id: str) -> None:
        """The member left the group or was removed: its session and locks go."""
        self.close(group_id, member_id)

    # --- timers -------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        by_group: dict[str, list] = {}
        for (g, t, p), sp in self.partitions.items():
            if sp.expire(now):
                by_group.setdefault(g, []).append((uuid.UUID(bytes=t), p))
        for g, keys in by_group.items():
            self.write_later(g, keys)
        if by_group:
            self.notify()

    def now(self) -> float:
        return time.monotonic()

    # --- metrics ------------------------------------------------------------------------

    def totals(self) -> Counts:
        c = Counts(
            self.retired.redeliveries,
            self.retired.lock_expiries,
            self.retired.delivery_limit_archived,
        )
        for sp in self.partitions.values():
            c.redeliveries += sp.counts.redeliveries
            c.lock_expiries += sp.counts.lock_expiries
            c.delivery_limit_archived += sp.counts.delivery_limit_archived
        return c
