"""A partition's batch index and offsets (broker/partition.py): appends, the high watermark
that moves only on sync, uploads swapping WAL entries for object blocks, retention and
bounded reads; no WAL, no store."""

from __future__ import annotations

import pytest

from broker.log.batch_index import BatchIndex
from broker.log.partition import Partition
from protocol.records import parse_header, with_base_offset
from s3stream.api import WAL, BatchRef
from tests.wire import make_batch

pytestmark = pytest.mark.unit


def header(records: int, size: int = 10):
    return parse_header(with_base_offset(make_batch([b"x" * size] * records), 0, 0))


def filled(batches: int = 5, records: int = 10) -> tuple[Partition, int]:
    """A partition with `batches` WAL batches of `records` records, positions laid end to end;
    returns it and the WAL end."""
    p = Partition(b"T" * 16, "t", 0)
    pos = 0
    for _ in range(batches):
        h = header(records)
        p.record_append(h, p.log_end_offset, pos, pos + h.size)
        pos += h.size
    return p, pos


def test_find_locates_the_batch_holding_an_offset_or_the_next() -> None:
    idx = BatchIndex()
    idx.add(0, 9, 1, 0, 100)
    idx.add(10, 19, 2, 100, 100)
    idx.add(30, 39, 3, 200, 100)  # a gap: 20-29 were compacted away
    assert [idx.find(o) for o in (0, 5, 9, 10, 19)] == [0, 0, 0, 1, 1]
    assert idx.find(25) == 2 and idx.find(-1) == 0 and idx.find(40) == 3
    assert idx.ref(2) == BatchRef(30, 39, 3, 200, 100, WAL)


def test_replace_and_drop_first_keep_the_columns_aligned() -> None:
    idx = BatchIndex()
    for i in range(4):
        idx.add(i * 10, i * 10 + 9, i, i * 100, 100)
    idx.replace(1, 3, [BatchRef(10, 29, 2, 0, 150, object_id=7)])
    assert len(idx) == 3
    assert idx.ref(1) == BatchRef(10, 29, 2, 0, 150, 7)
    idx.drop_first(1)
    assert [idx.ref(i).base_offset for i in range(len(idx))] == [10, 30]


def test_high_watermark_moves_only_when_the_wal_is_synced_past_an_append() -> None:
    p, end = filled(3)
    assert p.log_end_offset == 30 and p.high_watermark == 0 and p.has_unsynced
    first_end = p.batches.positions[1]
    assert p.on_durable(first_end)
    assert p.high_watermark == 10
    assert not p.on_durable(first_end)  # nothing new
    assert p.on_durable(end) and p.high_watermark == 30 and not p.has_unsynced


def test_recovered_appends_are_durable_at_once() -> None:
    p = Partition(b"T" * 16, "t", 0)
    p.record_append(header(4), 0, 0, None)
    assert p.high_watermark == p.log_end_offset == 4 and not p.has_unsynced


def test_wal_slice_stops_at_the_durable_end_and_upload_swaps_in_blocks() -> None:
    p, end = filled(4)
    assert p.wal_slice(0) is None
    half = p.batches.positions[2] + 1  # the third batch is not wholly durable yet
    s = p.wal_slice(half)
    assert s is not None and len(s) == 2 and s.last_offset == 19
    assert p.first_position == 0
    p.uploaded(19, [BatchRef(0, 19, 5, 0, 300, object_id=1)])
    assert p.object_entries == 1 and len(p.batches) == 3
    assert p.batches.ref(0) == BatchRef(0, 19, 5, 0, 300, 1)
    assert p.first_position == p.batches.positions[1]  # the oldest batch still in the WAL
    assert p.size_bytes == 300 + sum(p.batches.sizes[1:])  # the block's size, not the batches'
    s = p.wal_slice(end)
    assert s is not None and len(s) == 2 and s.last_offset == 39


def test_start_at_drops_whole_batches_before_the_log_start() -> None:
    p, end = filled(4)
    p.on_durable(end)
    p.start_at(15)  # inside the second batch: it stays
    assert p.log_start_offset == 15 and len(p.batches) == 3
    assert p.batches.ref(0).base_offset == 10
    p.start_at(100)  # past the end: offsets continue from there, never reused
    assert len(p.batches) == 0 and p.log_end_offset == p.high_watermark == 100
    assert p.size_bytes == 0


def test_refs_from_is_bounded_by_bytes_but_always_returns_a_first_batch() -> None:
    p, end = filled(5)
    p.on_durable(end)
    size = p.batches.sizes[0]
    assert [r.base_offset for r in p.refs_from(12, 50, 2 * size)] == [10, 20]
    assert [r.base_offset for r in p.refs_from(0, 50, 1)] == [0]  # KIP-74
    assert p.refs_from(0, 50, 1, first_may_exceed=False) == []
    assert [r.base_offset for r in p.refs_from(0, 20, 10 * size)] == [0, 10]  # the limit


def test_record_block_indexes_objects_before_the_wal() -> None:
    p = Partition(b"T" * 16, "t", 0)
    p.record_block(BatchRef(0, 99, 7, 0, 1000, object_id=3))
    assert p.log_end_offset == p.high_watermark == 100 and p.object_entries == 1
    assert p.max_timestamp == 7 and p.max_timestamp_offset == 0
    p.record_append(header(5), 100, 0, 50)
    assert p.log_end_offset == 105 and p.high_watermark == 100


def test_reset_forgets_the_log() -> None:
    p, end = filled(2)
    p.reset()
    assert (p.held, p.leading, p.log_end_offset, len(p.batches), p.size_bytes) == (
        False,
        False,
        0,
        0,
        0,
    )
