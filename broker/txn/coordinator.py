"""The transaction coordinator: one per `__transaction_state` partition this broker leads.

Every change of a transactional id's state is a record in its state partition, durable
before the client hears of it. Ending a transaction is two-phase: PrepareCommit (or
PrepareAbort) is written first, then the markers, then CompleteCommit; a coordinator
that starts (or takes over the partition) with a prepared transaction finishes it.
Open transactions older than their timeout are aborted with the epoch bumped, so the
producer that let them lapse is fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.log.topics import TopicState
from broker.txn import state as rules
from broker.txn.state import TopicPartition, TxnMeta, TxnState
from broker.txn.table import TRANSACTION_TOPIC, TxnTable, record, tombstone
from protocol import records
from protocol.errors import ErrorCode
from protocol.record_codec import encode_batch
from wal import WalFailure

if TYPE_CHECKING:
    from broker.leadership import Leadership
    from broker.log.manager import LogManager
    from broker.log.partition import Partition
    from broker.txn.markers import MarkerWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TxnSettings:
    partitions: int = 16  # transaction.state.log.num.partitions
    segment_bytes: int = 104_857_600  # transaction.state.log.segment.bytes
    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    id_expiration_ms: int = 604_800_000  # transactional.id.expiration.ms
    abort_interval_ms: int = 10_000  # ...abort.timed.out.transaction.cleanup.interval.ms
    crash_point: str = ""  # fault tests: "txn-after-prepare" exits between the two phases
    one_log: bool = True  # embedded: every partition is in this broker's one WAL, unfenced


class StateWriteFailed(Exception):
    """The state record was not durable here (WAL failure, or the partition moved)."""


def _now() -> int:
    return int(time.time() * 1000)


class TransactionCoordinator:
    def __init__(
        self,
        logs: LogManager,
        table: TxnTable,
        markers: MarkerWriter,
        leadership: Leadership,
        allocate_producer_id: Callable[[], Awaitable[int]],
        settings: TxnSettings,
    ) -> None:
        """`table` is what the log replays `__transaction_state` into."""
        self.logs = logs
        self.table = table
        self.markers = markers
        self.leadership = leadership
        self.allocate_producer_id = allocate_producer_id
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._finishing: set[str] = set()
        self._task: asyncio.Task | None = None
        self.commits = 0
        self.aborts = 0
        self.timeouts = 0

    # --- placement ------------------------------------------------------------------

    async def ensure_topic(self) -> TopicState:
        topic = self.logs.topics.get(TRANSACTION_TOPIC)
        if topic is None:
            try:
                topic = await self.logs.create_topic(
                    TRANSACTION_TOPIC,
                    self.settings.partitions,
                    # as in Kafka: compacted by the log cleaner like any compacted topic
                    {
                        "cleanup.policy": "compact",
                        "segment.bytes": str(self.settings.segment_bytes),
                    },
                    internal=True,
                )
            except FileExistsError:  # another broker of the cluster was first
                topic = self.logs.topics[TRANSACTION_TOPIC]
        return topic

    def partition_for(self, transactional_id: str) -> int:
        count = len(self.logs.topics[TRANSACTION_TOPIC].partitions)
        return zlib.crc32(transactional_id.encode()) % count

    def state_partition(self, transactional_id: str) -> Partition | None:
        topic = self.logs.topics.get(TRANSACTION_TOPIC)
        if topic is None:
            return None
        return topic.partitions[self.partition_for(transactional_id)]

    def coordinates(self, transactional_id: str) -> bool:
        p = self.state_partition(transactional_id)
        return p is not None and self.leadership.serves(p)

    def ids_of(self, index: int) -> set[str]:
        return {t for t in self.table.metas if self.partition_for(t) == index}

    # --- the state log --------------------------------------------------------------

    async def _write(self, meta: TxnMeta | None, transactional_id: str) -> None:
        """Make `meta` (None: forget the id) durable in its state partition, then apply."""
        p, fenced, wal_end = await self._append(meta, transactional_id)
        try:
            await self.logs.wait_acked(wal_end)
        except WalFailure as e:
            raise StateWriteFailed(str(e)) from e
        self._applied(meta, transactional_id, p, fenced)

    async def _append(
        self, meta: TxnMeta | None, transactional_id: str
    ) -> tuple[Partition, int, int]:
        """Append the state record: (its partition, the partition's fence count, WAL end)."""
        topic = await self.ensure_topic()
        p = topic.partitions[self.partition_for(transactional_id)]
        key, value = record(meta) if meta is not None else tombstone(transactional_id)
        batch = encode_batch([value], keys=[key])
        try:
            appended = self.logs.append(topic, p, batch, records.validate(batch))
        except WalFailure as e:
            raise StateWriteFailed(str(e)) from e
        assert appended.wal_end is not None
        return p, p.fenced, appended.wal_end

    def _applied(
        self, meta: TxnMeta | None, transactional_id: str, p: Partition, fenced: int
    ) -> None:
        """A state record is durable: apply it, unless its partition moved meanwhile."""
        if p.fenced != fenced or not self.leadership.may_ack():
            raise StateWriteFailed(f"{p} moved before the transaction state was durable")
        if meta is None:
            self.table.forget({transactional_id})
        else:
            self.table.put(meta)

    def _lock(self, transactional_id: str) -> asyncio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = asyncio.Lock()
        return lock

    # --- the requests ---------------------------------------------------------------

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, producer_id: int, epoch: int
    ) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch) for a transactional producer starting (or, with
        its current id and epoch, recovering: KIP-360)."""
        if not self.coordinates(transactional_id):
            return ErrorCode.not_coordinator, -1, -1
        async with self._lock(transactional_id):
            now = _now()
            meta = self.table.metas.get(transactional_id)
            error = rules.init_producer(
                meta, timeout_ms, self.settings.max_timeout_ms, producer_id, epoch, now
            )
            if error != ErrorCode.none:
                return error, -1, -1
            try:
                if meta is None:
                    pid = await self.allocate_producer_id()
                    meta = TxnMeta(transactional_id, pid, -1, timeout_ms, update_ms=now)
                elif meta.state == TxnState.ONGOING:
                    # a new instance (or a restart): abort what the old one left open
                    meta = rules.fence_abort(meta, now)
                    await self._write(meta, transactional_id)
                    meta = await self._finish(meta)
                new_pid = await self.allocate_producer_id() if rules.needs_new_id(meta) else None
                meta = rules.bumped(meta, new_pid, timeout_ms, now)
                await self._write(meta, transactional_id)
            except StateWriteFailed as e:
                log.warning("InitProducerId %r: %s", transactional_id, e)
                return ErrorCode.not_coordinator, -1, -1
            return ErrorCode.none, meta.producer_id, meta.producer_epoch

    async def add_partitions(
        self, transactional_id: str, producer_id: int, epoch: int, partitions: set[TopicPartition]
    ) -> ErrorCode:
        if not self.coordinates(transactional_id):
            return ErrorCode.not_coordinator
        async with self._lock(transactional_id):
            meta = self.table.metas.get(transactional_id)
            error, new = rules.add_partitions(meta, producer_id, epoch, partitions, _now())
            if error != ErrorCode.none or new is meta:
                return error
            try:
                await self._write(new, transactional_id)
            except StateWriteFailed as e:
                log.warning("AddPartitionsToTxn %r: %s", transactional_id, e)
                return ErrorCode.not_coordinator
            return ErrorCode.none

    async def end_transaction(
        self, transactional_id: str, producer_id: int, epoch: int, commit: bool
    ) -> ErrorCode:
        if not self.coordinates(transactional_id):
            return ErrorCode.not_coordinator
        async with self._lock(transactional_id):
            meta = self.table.metas.get(transactional_id)
            error, prepared = rules.end_transaction(meta, producer_id, epoch, commit, _now())
            if error != ErrorCode.none or prepared is meta:
                return error
            assert prepared is not None
            try:
                if await self._end_in_one_sync(prepared):
                    return ErrorCode.none
                await self._write(prepared, transactional_id)
                if self.settings.crash_point == "txn-after-prepare":
                    log.error("crash point txn-after-prepare: exiting")
                    os._exit(137)
                await self._finish(prepared)
            except StateWriteFailed as e:
                log.warning("EndTxn %r: %s", transactional_id, e)
                return ErrorCode.not_coordinator
            return ErrorCode.none

    def verify(self, producer_id: int, epoch: int, topic: str, partition: int) -> ErrorCode:
        """A transactional produce: its producer must have added the partition to its
        open transaction (the check KIP-890 moved to the broker). A producer this
        broker does not coordinate is let through, as before KIP-890."""
        meta = self.table.of_producer(producer_id)
        if meta is None:
            return ErrorCode.none
        if epoch < meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if meta.state != TxnState.ONGOING or (topic, partition) not in meta.partitions:
            return ErrorCode.invalid_txn_state
        return ErrorCode.none

    # --- finishing --------------------------------------------------------------------

    async def _end_in_one_sync(self, prepared: TxnMeta) -> bool:
        """Embedded mode (one WAL, nothing fenced): PrepareCommit, the markers and the
        completion are appended back to back and share one sync. The WAL is one ordered
        log, so a durable marker implies a durable PrepareCommit and a durable completion
        durable markers: whatever a crash leaves is a prefix that recovery finishes.
        False, with nothing appended, when this does not apply."""
        if not self.settings.one_log or self.settings.crash_point:
            return False
        _, remote = self.markers.by_leader(set(prepared.partitions))
        if remote:
            return False
        txn_id = prepared.transactional_id
        p, fenced, wal_end = await self._append(prepared, txn_id)
        commit = prepared.state == TxnState.PREPARE_COMMIT
        errors, appended = self.markers.append_local(
            prepared.producer_id,
            prepared.producer_epoch,
            commit,
            p.leader_epoch,
            sorted(prepared.partitions),
        )
        done = rules.completed(prepared, _now())
        failed = any(e != ErrorCode.unknown_topic_or_partition for e in errors.values())
        if appended:
            wal_end = max(wal_end, *(a[3] for a in appended))
        if not failed:
            _, _, wal_end = await self._append(done, txn_id)
        try:
            await self.logs.wait_acked(wal_end)
        except WalFailure as e:
            raise StateWriteFailed(str(e)) from e
        self.markers.settle(prepared.producer_id, commit, appended)
        if failed:  # the prepared state stands: markers are retried the usual way
            self._applied(prepared, txn_id, p, fenced)
            await self._finish(prepared)
            return True
        self._applied(done, txn_id, p, fenced)
        self._count(commit)
        return True

    def _count(self, commit: bool) -> None:
        if commit:
            self.commits += 1
        else:
            self.aborts += 1

    async def _finish(self, prepared: TxnMeta) -> TxnMeta:
        """Markers for a prepared transaction, then its completion (under its lock)."""
        p = self.state_partition(prepared.transactional_id)
        coordinator_epoch = p.leader_epoch if p is not None else 0
        commit = prepared.state == TxnState.PREPARE_COMMIT
        await self.markers.write(
            prepared.producer_id,
            prepared.producer_epoch,
            commit,
            coordinator_epoch,
            prepared.partitions,
        )
        done = rules.completed(prepared, _now())
        await self._write(done, prepared.transactional_id)
        self._count(commit)
        return done

    async def recover(self, index: int | None = None) -> None:
        """Finish the prepared transactions of the state partitions now led here (all,
        or partition `index`): a coordinator may have stopped between phases."""
        for txn_id, meta in list(self.table.metas.items()):
            if meta.state.preparing and (index is None or self.partition_for(txn_id) == index):
                self._spawn_finish(txn_id)

    def _spawn_finish(self, transactional_id: str) -> None:
        if transactional_id in self._finishing:
            return
        self._finishing.add(transactional_id)

        async def finish() -> None:
            try:
                async with self._lock(transactional_id):
                    meta = self.table.metas.get(transactional_id)
                    if (
                        meta is not None
                        and meta.state.preparing
                        and self.coordinates(transactional_id)
                    ):
                        log.info("finishing %s of %r", meta.state, transactional_id)
                        await self._finish(meta)
            except StateWriteFailed as e:
                log.warning("transaction %r not finished here: %s", transactional_id, e)
            except Exception:
                log.exception("finishing transaction %r failed", transactional_id)
            finally:
                self._finishing.discard(transactional_id)

        asyncio.get_running_loop().create_task(finish(), name=f"txn-finish-{transactional_id}")

    def unload(self, index: int) -> set[str]:
        """A state partition another broker leads now: forget its ids."""
        ids = self.ids_of(index)
        self.table.forget(ids)
        return ids

    # --- housekeeping -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop(), name="txn-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _expire_loop(self) -> None:
        while True:
            try:
                # also picks up prepared transactions of state partitions moved here
                await self.recover()
                await self.expire()
            except Exception:
                log.exception("transaction expiry failed")
            await asyncio.sleep(self.settings.abort_interval_ms / 1000)

    async def expire(self) -> None:
        """Abort open transactions past their timeout; forget ids idle past
        transactional.id.expiration.ms."""
        now = _now()
        for txn_id, meta in list(self.table.metas.items()):
            if not self.coordinates(txn_id):
                continue
            if meta.expired(now):
                async with self._lock(txn_id):
                    meta = self.table.metas.get(txn_id)
                    if meta is None or not meta.expired(_now()):
                        continue
                    log.info(
                        "aborting transaction of %r (producer %d): open longer than %d ms",
                        txn_id,
                        meta.producer_id,
                        meta.timeout_ms,
                    )
                    try:
                        fenced = rules.fence_abort(meta, _now())
                        await self._write(fenced, txn_id)
                        await self._finish(fenced)
                        self.timeouts += 1
                    except StateWriteFailed as e:
                        log.warning("timed-out transaction %r not aborted here: %s", txn_id, e)
            elif (
                meta.state in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)
                and now - meta.update_ms > self.settings.id_expiration_ms
            ):
                async with self._lock(txn_id):
                    if self.table.metas.get(txn_id) == meta:
                        with contextlib.suppress(StateWriteFailed):
                            await self._write(None, txn_id)
                            log.info("transactional id %r expired", txn_id)

    # --- descriptions ------------------------------------------------------------------

    def describe(self, transactional_id: str) -> tuple[ErrorCode, TxnMeta | None]:
        if not self.coordinates(transactional_id):
            return ErrorCode.not_coordinator, None
        meta = self.table.metas.get(transactional_id)
        if meta is None:
            return ErrorCode.transactional_id_not_found, None
        return ErrorCode.none, meta

    def listing(self) -> list[TxnMeta]:
        return [m for t, m in self.table.metas.items() if self.coordinates(t)]

    def ongoing(self) -> int:
        return sum(1 for m in self.table.metas.values() if m.state == TxnState.ONGOING)
