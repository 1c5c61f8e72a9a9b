"""The share-partition state machine (broker/groups/share_partition.py), without a broker."""

from __future__ import annotations

import msgpack
import pytest

from broker.groups.share_partition import AckType, RecordState, SharePartition, ShareSettings
from protocol.errors import ErrorCode

pytestmark = pytest.mark.unit

S = ShareSettings(record_lock_duration_ms=1000, delivery_count_limit=3, max_record_locks=10)


def test_records_fetched_are_acquired_once_by_one_member():
    sp = SharePartition(0, S)
    assert sp.acquire("a", 0, 4, 100, now=0.0) == [(0, 4, 1)]
    assert sp.acquire("b", 0, 4, 100, now=0.0) == []
    assert sp.end_offset == 5
    assert sp.next_fetch_offset(log_end=5) is None
    assert sp.next_fetch_offset(log_end=8) == 5


def test_accepted_records_move_the_start_offset_and_are_never_acquired_again():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 4, 100, now=0.0)
    assert sp.acknowledge("a", 0, 2, [AckType.ACCEPT]) is None
    assert sp.start_offset == 3
    assert sp.acquire("b", 0, 2, 100, now=0.0) == []
    assert sp.state_of(1) == RecordState.ACKNOWLEDGED


def test_acknowledging_records_another_member_holds_is_invalid_record_state_and_changes_nothing():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 4, 100, now=0.0)
    assert sp.acknowledge("b", 0, 1, [AckType.ACCEPT]) == ErrorCode.invalid_record_state
    assert sp.acknowledge("a", 3, 6, [AckType.ACCEPT]) == ErrorCode.invalid_record_state
    assert sp.start_offset == 0 and sp.acquired_count == 5


def test_released_records_are_delivered_again_and_rejected_ones_are_not():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 2, 100, now=0.0)
    assert sp.acknowledge("a", 0, 2, [AckType.RELEASE, AckType.REJECT, AckType.ACCEPT]) is None
    assert sp.state_of(1) == RecordState.ARCHIVED
    assert sp.next_fetch_offset(log_end=3) == 0
    assert sp.acquire("b", 0, 2, 100, now=0.0) == [(0, 0, 2)]
    assert sp.counts.redeliveries == 1


def test_an_expired_lock_returns_its_records_to_available():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 1, 100, now=0.0)
    assert sp.expire(now=0.5) == 0
    assert sp.expire(now=1.0) == 2
    assert sp.counts.lock_expiries == 2
    assert sp.acknowledge("a", 0, 1, [AckType.ACCEPT]) == ErrorCode.invalid_record_state
    assert sp.acquire("b", 0, 1, 100, now=1.0) == [(0, 1, 2)]


def test_a_record_reaching_the_delivery_count_limit_is_archived():
    sp = SharePartition(0, S)
    for n in range(3):
        assert sp.acquire("a", 0, 0, 100, now=float(n)) == [(0, 0, n + 1)]
        sp.expire(now=n + 1.0)
    assert sp.state_of(0) == RecordState.ARCHIVED or sp.start_offset == 1
    assert sp.start_offset == 1
    assert sp.counts.delivery_limit_archived == 1
    assert sp.acquire("a", 0, 0, 100, now=9.0) == []


def test_acquisition_stops_at_the_partition_lock_limit_and_max_records():
    sp = SharePartition(0, S)
    assert sp.acquire("a", 0, 99, 4, now=0.0) == [(0, 3, 1)]
    assert sp.acquire("b", 0, 99, 100, now=0.0) == [(4, 9, 1)]
    assert sp.next_fetch_offset(log_end=100) is None
    sp.acknowledge("a", 0, 3, [AckType.ACCEPT])
    assert sp.next_fetch_offset(log_end=100) == 10


def test_a_member_leaving_releases_what_it_holds():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 2, 100, now=0.0)
    sp.acquire("b", 3, 4, 100, now=0.0)
    assert sp.release_member("a") == 3
    assert sp.acquire("c", 0, 4, 100, now=0.0) == [(0, 2, 2)]


def test_the_persisted_state_keeps_acknowledged_records_and_brings_acquired_ones_back():
    sp = SharePartition(5, S)
    sp.acquire("a", 5, 9, 100, now=0.0)
    sp.acknowledge("a", 5, 5, [AckType.ACCEPT])
    sp.acknowledge("a", 7, 7, [AckType.ACCEPT])
    sp.acknowledge("a", 8, 8, [AckType.REJECT])
    v = msgpack.unpackb(msgpack.packb(sp.to_record()))
    back = SharePartition.from_record(v, S)
    assert back.start_offset == 6 and back.end_offset == 10
    assert back.acquire("b", 0, 20, 100, now=0.0) == [(6, 6, 2), (9, 9, 2), (10, 17, 1)]


def test_gaps_are_archived_and_reset_forgets_what_was_in_flight():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 3, 100, now=0.0)
    assert sp.acknowledge("a", 0, 3, [AckType.GAP]) is None
    assert sp.start_offset == 4
    sp.acquire("a", 4, 6, 100, now=0.0)
    sp.reset(2)
    assert sp.start_offset == 2 and sp.acquired_count == 0 and sp.state_epoch == 1
    assert sp.acquire("b", 0, 3, 100, now=0.0) == [(2, 3, 1)]


def test_bad_acknowledge_types_are_invalid_request():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 2, 100, now=0.0)
    assert sp.acknowledge("a", 0, 2, [1, 1]) == ErrorCode.invalid_request
    assert sp.acknowledge("a", 0, 2, [9]) == ErrorCode.invalid_request
    assert sp.acknowledge("a", 2, 0, [1]) == ErrorCode.invalid_request


def test_archived_offsets_are_never_acquired_and_delivered_ones_keep_their_state():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 1, 100, now=0.0)
    sp.archive(0, 4)  # 0-1 are acquired already: untouched
    assert sp.state_of(0) == RecordState.ACQUIRED and sp.state_of(3) == RecordState.ARCHIVED
    assert sp.acquire("b", 0, 6, 100, now=0.0) == [(5, 6, 1)]
    sp.acknowledge("a", 0, 1, [AckType.ACCEPT])
    assert sp.start_offset == 5


def test_archiving_past_the_end_leaves_the_offsets_before_it_deliverable():
    sp = SharePartition(0, S)
    sp.archive(0, 4)
    sp.archive(10, 10)  # a marker after five records not yet read
    assert sp.acquire("a", 0, 10, 100, now=0.0) == [(5, 9, 1)]


def test_a_renew_acknowledgement_extends_the_lock_and_keeps_the_record_acquired():
    sp = SharePartition(0, S)
    sp.acquire("a", 0, 0, 100, now=0.0)
    assert sp.acknowledge("a", 0, 0, [AckType.RENEW], now=0.8) is None
    assert sp.expire(now=1.5) == 0  # the first lock would have run out at 1.0
    assert sp.expire(now=1.8) == 1
