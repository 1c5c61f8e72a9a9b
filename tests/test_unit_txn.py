"""Unit tests of the pure transaction cores: a partition's transaction index (LSO,
aborted ranges, state as of an offset) and the coordinator's state rules."""

from __future__ import annotations

import pytest

from broker.log.txn_index import TxnIndex
from broker.txn import state as rules
from broker.txn.state import TxnMeta, TxnState
from protocol.errors import ErrorCode
from protocol.record_codec import ABORT, COMMIT, control_batch, control_type, decode_records
from protocol.records import parse_header, validate

pytestmark = pytest.mark.unit


def test_an_open_transaction_holds_the_last_stable_offset_at_its_first_offset() -> None:
    idx = TxnIndex()
    idx.data(7, 10)
    idx.data(7, 12)  # the same transaction: its first offset stays
    assert idx.last_stable_offset(20) == 10
    idx.data(8, 5)
    assert idx.last_stable_offset(20) == 5


def test_a_marker_frees_the_lso_only_once_the_high_watermark_passes_it() -> None:
    idx = TxnIndex()
    idx.data(7, 10)
    idx.marker(7, 15, commit=True)
    assert idx.last_stable_offset(15) == 10  # the marker is not durable yet
    assert idx.last_stable_offset(16) == 16


def test_aborted_ranges_are_listed_for_the_fetched_range_only() -> None:
    idx = TxnIndex()
    idx.data(1, 0)
    idx.marker(1, 4, commit=False)
    idx.data(2, 5)
    idx.marker(2, 9, commit=True)
    idx.data(3, 10)
    idx.marker(3, 14, commit=False)
    assert idx.aborted_between(0, 20) == [(1, 0), (3, 10)]
    assert idx.aborted_between(5, 10) == []
    assert idx.aborted_between(12, 20) == [(3, 10)]
    idx.trim(5)  # retention moved the log start past the first one
    assert idx.aborted_between(0, 20) == [(3, 10)]


def test_a_marker_without_a_transaction_changes_nothing() -> None:
    idx = TxnIndex()
    idx.marker(9, 3, commit=False)
    assert idx.aborted_between(0, 10) == []
    assert idx.last_stable_offset(10) == 10


def test_state_at_an_offset_restores_to_the_same_answers_and_ignores_replays_below() -> None:
    idx = TxnIndex()
    idx.data(1, 0)
    idx.marker(1, 4, commit=False)
    idx.data(2, 5)  # open at offset 8, closed later at 12
    idx.data(3, 9)
    idx.marker(2, 12, commit=True)
    stored = idx.state_at(8)
    restored = TxnIndex.restore(stored, 0)
    assert restored.horizon == 8
    assert restored.ongoing == {2: 5}  # 3 began after 8; 2 was still open at 8
    assert restored.aborted_between(0, 8) == [(1, 0)]
    # the WAL replays everything; only what lies at or past the horizon applies
    for pid, offset in [(1, 0), (2, 5)]:
        restored.data(pid, offset)
    restored.marker(1, 4, commit=False)
    restored.data(3, 9)
    restored.marker(2, 12, commit=True)
    assert restored.aborted_between(0, 20) == idx.aborted_between(0, 20)
    assert restored.last_stable_offset(13) == idx.last_stable_offset(13) == 9


def test_an_index_stored_before_transactions_starts_empty_at_the_given_offset() -> None:
    idx = TxnIndex.restore(None, 42)
    assert (idx.horizon, idx.ongoing) == (42, {})


def test_control_batches_carry_their_type_and_producer() -> None:
    batch = control_batch(5, 3, commit=True, coordinator_epoch=2, now_ms=1000)
    h = validate(batch)
    assert h.is_control and h.is_transactional and (h.producer_id, h.producer_epoch) == (5, 3)
    assert control_type(batch) == COMMIT
    assert control_type(control_batch(5, 3, False, 2, 1000)) == ABORT
    assert len(decode_records(batch)) == 1 and parse_header(batch).record_count == 1


def _meta(**kw) -> TxnMeta:
    return TxnMeta(
        **{"transactional_id": "t", "producer_id": 1, "producer_epoch": 0, "timeout_ms": 1000, **kw}
    )


def test_init_refuses_a_timeout_above_the_maximum_and_a_zombie_epoch() -> None:
    assert rules.init_producer(None, 2000, 1000, -1, -1, 0) == ErrorCode.invalid_transaction_timeout
    assert (
        rules.init_producer(_meta(producer_epoch=4), 500, 1000, 1, 3, 0)
        == ErrorCode.producer_fenced
    )
    assert (
        rules.init_producer(_meta(producer_epoch=4), 500, 1000, 1, 4, 0) == ErrorCode.none
    )  # KIP-360
    preparing = _meta(state=TxnState.PREPARE_COMMIT)
    assert rules.init_producer(preparing, 500, 1000, -1, -1, 0) == ErrorCode.concurrent_transactions


def test_a_transaction_goes_ongoing_prepare_complete() -> None:
    error, meta = rules.add_partitions(_meta(), 1, 0, {("a", 0)}, 10)
    assert error == ErrorCode.none and meta is not None
    assert (meta.state, meta.partitions, meta.start_ms) == (TxnState.ONGOING, {("a", 0)}, 10)
    error, more = rules.add_partitions(meta, 1, 0, {("a", 0)}, 11)
    assert more is meta  # nothing new: no state write
    error, prepared = rules.end_transaction(meta, 1, 0, True, 12)
    assert prepared is not None and prepared.state == TxnState.PREPARE_COMMIT
    assert (
        rules.add_partitions(prepared, 1, 0, {("b", 0)}, 13)[0] == ErrorCode.concurrent_transactions
    )
    done = rules.completed(prepared, 14)
    assert (done.state, done.partitions) == (TxnState.COMPLETE_COMMIT, frozenset())
    assert rules.end_transaction(done, 1, 0, True, 15) == (ErrorCode.none, done)  # a retry
    assert rules.end_transaction(done, 1, 0, False, 15)[0] == ErrorCode.invalid_txn_state


def test_end_without_a_transaction_and_stale_epochs_get_kafka_errors() -> None:
    assert rules.end_transaction(_meta(), 1, 0, True, 0)[0] == ErrorCode.invalid_txn_state
    assert (
        rules.add_partitions(_meta(producer_epoch=2), 1, 1, {("a", 0)}, 0)[0]
        == ErrorCode.producer_fenced
    )
    assert (
        rules.add_partitions(_meta(), 2, 0, {("a", 0)}, 0)[0]
        == ErrorCode.invalid_producer_id_mapping
    )


def test_a_timed_out_transaction_is_aborted_with_the_epoch_bumped() -> None:
    meta = _meta(state=TxnState.ONGOING, start_ms=0, partitions=frozenset({("a", 0)}))
    assert not meta.expired(1000) and meta.expired(1001)
    fenced = rules.fence_abort(meta, 1001)
    assert (fenced.state, fenced.producer_epoch) == (TxnState.PREPARE_ABORT, 1)


def test_an_exhausted_epoch_gets_a_new_producer_id() -> None:
    meta = _meta(producer_epoch=rules.MAX_EPOCH - 2)
    assert rules.needs_new_id(meta)
    bumped = rules.bumped(meta, 99, 1000, 0)
    assert (bumped.producer_id, bumped.producer_epoch, bumped.state) == (99, 0, TxnState.EMPTY)


def test_metadata_round_trips_through_its_record() -> None:
    meta = _meta(state=TxnState.ONGOING, partitions=frozenset({("a", 0), ("b", 3)}), start_ms=5)
    assert TxnMeta.from_record("t", meta.as_record()) == meta
