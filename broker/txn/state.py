"""A transactional id's state and the coordinator's rules for changing it (KIP-98).

Pure: each rule takes the current metadata and a request and returns Kafka's error
code, or the metadata to write to `__transaction_state` before answering. The
coordinator (broker.txn.coordinator) does the writing and the markers.

    Empty/Complete* --AddPartitions--> Ongoing --EndTxn--> Prepare* --markers--> Complete*
    Ongoing --timeout, or InitProducerId of a new instance--> PrepareAbort (epoch bumped)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from protocol.errors import ErrorCode

MAX_EPOCH = 32767  # i16; an id whose epoch would reach it gets a new producer id


class TxnState(StrEnum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"

    @property
    def preparing(self) -> bool:
        return self in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)


TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TxnMeta:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: frozenset[TopicPartition] = field(default_factory=frozenset)
    start_ms: int = -1  # when the ongoing transaction began
    update_ms: int = -1

    def expired(self, now_ms: int) -> bool:
        return self.state == TxnState.ONGOING and now_ms > self.start_ms + self.timeout_ms

    def as_record(self) -> list:
        return [
            self.producer_id,
            self.producer_epoch,
            self.timeout_ms,
            str(self.state),
            sorted([t, p] for t, p in self.partitions),
            self.start_ms,
            self.update_ms,
        ]

    @classmethod
    def from_record(cls, transactional_id: str, value: list) -> TxnMeta:
        pid, epoch, timeout, state, parts, start, update = value
        return cls(
            transactional_id,
            pid,
            epoch,
            timeout,
            TxnState(state),
            frozenset((t, p) for t, p in parts),
            start,
            update,
        )


Verdict = tuple[ErrorCode, TxnMeta | None]


def check_producer(meta: TxnMeta | None, producer_id: int, epoch: int) -> ErrorCode:
    """Whether a request comes from the id's current producer instance."""
    if meta is None or meta.producer_id != producer_id:
        return ErrorCode.invalid_producer_id_mapping
    if epoch != meta.producer_epoch:
        return ErrorCode.producer_fenced
    return ErrorCode.none


def init_producer(
    meta: TxnMeta | None,
    timeout_ms: int,
    max_timeout_ms: int,
    producer_id: int,
    epoch: int,
    now_ms: int,
) -> ErrorCode:
    """The error InitProducerId answers before any state change, or NONE.

    A producer that passes its current id and epoch (KIP-360) is recovering from an
    abortable error and keeps its id; one passing an id and epoch that are not the
    current ones is a zombie.
    """
    if not 0 < timeout_ms <= max_timeout_ms:
        return ErrorCode.invalid_transaction_timeout
    if meta is not None and meta.state.preparing:
        return ErrorCode.concurrent_transactions
    if producer_id >= 0:
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if epoch != meta.producer_epoch:
            return ErrorCode.producer_fenced
    return ErrorCode.none


def bumped(meta: TxnMeta, new_producer_id: int | None, timeout_ms: int, now_ms: int) -> TxnMeta:
    """The next producer instance of an id with no transaction open: epoch + 1, or a
    new producer id at epoch 0 when the epoch is exhausted (`new_producer_id`)."""
    if new_producer_id is not None:
        pid, epoch = new_producer_id, 0
    else:
        pid, epoch = meta.producer_id, meta.producer_epoch + 1
    return replace(
        meta,
        producer_id=pid,
        producer_epoch=epoch,
        timeout_ms=timeout_ms,
        state=TxnState.EMPTY,
        partitions=frozenset(),
        start_ms=-1,
        update_ms=now_ms,
    )


def needs_new_id(meta: TxnMeta) -> bool:
    return meta.producer_epoch + 1 >= MAX_EPOCH - 1


def fence_abort(meta: TxnMeta, now_ms: int) -> TxnMeta:
    """Abort an open transaction for good: the epoch is bumped first, so the producer
    that opened it is fenced and its late writes cannot join the markers."""
    return replace(
        meta, producer_epoch=meta.producer_epoch + 1, state=TxnState.PREPARE_ABORT, update_ms=now_ms
    )


def add_partitions(
    meta: TxnMeta | None, producer_id: int, epoch: int, partitions: set[TopicPartition], now_ms: int
) -> Verdict:
    error = check_producer(meta, producer_id, epoch)
    if error != ErrorCode.none:
        return error, None
    assert meta is not None
    if meta.state.preparing:
        return ErrorCode.concurrent_transactions, None
    if meta.state == TxnState.ONGOING and partitions <= meta.partitions:
        return ErrorCode.none, meta  # nothing new: no write
    if meta.state == TxnState.ONGOING:
        return ErrorCode.none, replace(
            meta, partitions=meta.partitions | partitions, update_ms=now_ms
        )
    return ErrorCode.none, replace(
        meta,
        state=TxnState.ONGOING,
        partitions=frozenset(partitions),
        start_ms=now_ms,
        update_ms=now_ms,
    )


def end_transaction(
    meta: TxnMeta | None, producer_id: int, epoch: int, commit: bool, now_ms: int
) -> Verdict:
    """PrepareCommit or PrepareAbort for an ongoing transaction. A retried EndTxn whose
    outcome is already complete answers NONE with no change (meta returned as is)."""
    error = check_producer(meta, producer_id, epoch)
    if error != ErrorCode.none:
        return error, None
    assert meta is not None
    done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
    preparing = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
    if meta.state == done:
        return ErrorCode.none, meta
    if meta.state == preparing:
        return ErrorCode.concurrent_transactions, None
    if meta.state != TxnState.ONGOING:
        return ErrorCode.invalid_txn_state, None
    return ErrorCode.none, replace(meta, state=preparing, update_ms=now_ms)


def completed(meta: TxnMeta, now_ms: int) -> TxnMeta:
    """After every marker is written."""
    commit = meta.state == TxnState.PREPARE_COMMIT
    state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
    return replace(meta, state=state, partitions=frozenset(), start_ms=-1, update_ms=now_ms)
