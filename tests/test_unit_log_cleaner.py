"""The log cleaner's pure core: what is cleanable, the offset map, the batch rewrite."""

from __future__ import annotations

import crc32c
import pytest

from broker.log.partition import Partition
from protocol import records
from protocol.record_codec import (
    CONTROL,
    TRANSACTIONAL,
    control_batch,
    decode_records,
    encode_batch,
)
from s3stream import log_cleaner as lc
from s3stream.api import BatchRef
from s3stream.object_format import parse_footer, parse_index, split_block

pytestmark = pytest.mark.unit

NOW = 10_000_000


def batch(
    base: int,
    keys: list[bytes | None],
    values: list[bytes | None],
    ts: int = NOW - 1000,
    codec: int = 0,
    pid: int = -1,
    seq: int = -1,
    txn: bool = False,
) -> bytes:
    raw = encode_batch(
        values,
        keys=keys,
        timestamps=[ts + i for i in range(len(values))],
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=seq,
        attributes=codec | (TRANSACTIONAL if txn else 0),
    )
    raw = bytes(records.with_base_offset(raw, base, 3))
    if codec:  # encode_batch leaves the payload as it is: compress it for real
        h = records.parse_header(raw)
        raw = lc._rebuild(h, memoryview(raw), raw[records.HEADER_SIZE :], h.record_count, ts)
    return raw


def checked(b: bytes) -> records.BatchHeader:
    """The header of a batch whose length and CRC-32C check out (a cleaned batch is
    sparse, so not what the produce path's validate accepts)."""
    h = records.parse_header(b)
    assert h.size == len(b) and crc32c.crc32c(b[records.CRC_START :]) == h.crc
    return h


def marker(base: int, pid: int, commit: bool, ts: int) -> bytes:
    return bytes(records.with_base_offset(control_batch(pid, 0, commit, 0, ts), base, 3))


def clean(batches: list[bytes], **kw) -> tuple[list[bytes], lc.CleanStats]:
    end = max(records.parse_header(b).last_offset for b in batches) + 1
    params = lc.JobParams(
        log_start=kw.pop("log_start", 0),
        dirty_start=kw.pop("dirty_start", 0),
        end_offset=end,
        now_ms=NOW,
        delete_retention_ms=kw.pop("delete_retention_ms", 5000),
        **kw,
    )
    job = lc.CleanJob(params)
    data = b"".join(batches)
    assert job.add_to_map(data, end)
    job.rewrite(data)
    return [bytes(b.data) for b in job.out], job.stats


def test_only_the_latest_record_of_each_key_is_kept_at_its_own_offset() -> None:
    out, stats = clean(
        [
            batch(0, [b"a", b"b", b"a"], [b"1", b"2", b"3"]),
            batch(3, [b"b", b"c"], [b"4", b"5"]),
        ]
    )
    recs = [r for b in out for r in decode_records(b)]
    assert [(r.offset, r.key, r.value) for r in recs] == [
        (2, b"a", b"3"),
        (3, b"b", b"4"),
        (4, b"c", b"5"),
    ]
    heads = [checked(b) for b in out]  # the CRC checks
    assert [(h.base_offset, h.last_offset_delta) for h in heads] == [(0, 2), (3, 1)]
    assert stats.records_read == 5 and stats.records_kept == 3


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_a_rebuilt_batch_keeps_its_codec_and_producer_fields(codec: int) -> None:
    out, _ = clean(
        [
            batch(
                10,
                [b"k%d" % (i % 3) for i in range(30)],
                [b"v%d" % i * 20 for i in range(30)],
                codec=codec,
                pid=7,
                seq=40,
            ),
        ],
        log_start=10,
        dirty_start=10,
    )
    (b,) = out
    h = checked(b)
    assert h.compression == codec
    assert (h.base_offset, h.last_offset_delta, h.producer_id, h.base_sequence) == (10, 29, 7, 40)
    assert h.leader_epoch == 3
    assert [(r.offset, r.key) for r in decode_records(b)] == [(37, b"k0"), (38, b"k1"), (39, b"k2")]


def test_tombstones_stay_until_delete_retention_passes() -> None:
    old, recent = NOW - 10_000, NOW - 1000
    batches = [
        batch(0, [b"a", b"b"], [b"1", b"2"], ts=old),
        batch(2, [b"a"], [None], ts=old),
        batch(3, [b"b"], [None], ts=recent),
    ]
    out, stats = clean(batches, delete_retention_ms=5000)
    recs = [r for b in out for r in decode_records(b)]
    assert [(r.offset, r.key, r.value) for r in recs] == [(3, b"b", None)]
    assert stats.tombstones_dropped == 1


def test_aborted_transactions_go_and_markers_once_nothing_of_theirs_is_left() -> None:
    old = NOW - 10_000
    batches = [
        batch(0, [b"a"], [b"aborted"], ts=old, pid=5, seq=0, txn=True),
        marker(1, 5, False, old),
        batch(2, [b"b"], [b"committed"], ts=old, pid=6, seq=0, txn=True),
        marker(3, 6, True, old),
        batch(4, [b"c"], [b"x"], ts=old, pid=6, seq=1, txn=True),
        batch(5, [b"c"], [b"y"], ts=old),
        marker(6, 6, True, old),
    ]
    out, stats = clean(batches, aborted=((5, 0, 1),))
    heads = [records.parse_header(b) for b in out]
    # the abort's data and marker go; the first commit keeps its data, so its marker
    # stays; the second commit's only record was superseded, so its marker goes too
    assert [(h.base_offset, bool(h.attributes & CONTROL)) for h in heads] == [
        (2, False),
        (3, True),
        (5, False),
    ]
    assert stats.aborted_dropped == 1 and stats.markers_dropped == 2


def test_recent_markers_stay() -> None:
    out, _ = clean(
        [
            batch(0, [b"a"], [b"1"], pid=5, seq=0, txn=True),
            batch(1, [b"a"], [b"2"]),
            marker(2, 5, True, NOW - 10),
        ]
    )
    assert [records.parse_header(b).base_offset for b in out] == [1, 2]


def test_keys_of_the_clean_part_survive_unless_the_dirty_part_has_them() -> None:
    batches = [batch(0, [b"a", b"b"], [b"1", b"2"]), batch(2, [b"a"], [b"3"])]
    out, _ = clean(batches, dirty_start=2)
    recs = [r for b in out for r in decode_records(b)]
    assert [(r.offset, r.key) for r in recs] == [(1, b"b"), (2, b"a")]


def test_the_offset_map_refuses_a_group_past_its_budget() -> None:
    m = lc.OffsetMap(budget_bytes=3 * (1 + lc.KEY_OVERHEAD))
    assert m.put_all({b"a": 1, b"b": 2})
    assert not m.put_all({b"c": 3, b"d": 4})
    assert m.put_all({b"a": 5, b"c": 6})  # one new key fits
    assert m.latest == {b"a": 5, b"b": 2, b"c": 6}


def test_the_output_object_holds_the_kept_batches_in_blocks() -> None:
    params = lc.JobParams(
        log_start=0, dirty_start=0, end_offset=4, now_ms=NOW, delete_retention_ms=0
    )
    job = lc.CleanJob(params)
    data = batch(0, [b"a", b"a"], [b"1", b"2"]) + batch(2, [b"b", b"a"], [b"3", b"4"])
    job.add_to_map(data, 4)
    job.rewrite(data)
    body, entries = job.finish(b"t" * 16, 2, 1024 * 1024, NOW)
    footer = parse_footer(body)
    index = body[footer.index_position : footer.index_position + footer.index_size]
    (e,) = parse_index(footer, index)
    assert (e.partition, e.first_offset, e.last_offset) == (2, 2, 3) and entries == [e]
    kept = [
        r
        for _, _, _, b in split_block(body[e.position : e.position + e.size])
        for r in decode_records(bytes(b))
    ]
    assert [(r.offset, r.value) for r in kept] == [(2, b"3"), (3, b"4")]


S = lc.CleanSettings(segment_bytes=200, segment_ms=1000, min_cleanable_dirty_ratio=0.5)


def test_the_active_segment_and_the_wal_are_never_cleanable() -> None:
    # six 100-byte entries: segments [0,1] [2,3] [4,5]; the last is active
    base = [0, 10, 20, 30, 40, 50]
    last = [9, 19, 29, 39, 49, 59]
    ts = [NOW - 100] * 6
    sizes = [100] * 6
    c = lc.cleanable(base, last, ts, sizes, 6, 0, 60, NOW, S)
    assert (c.entries, c.dirty_from, c.dirty_bytes) == (4, 0, 400)
    assert lc.cleanable(base, last, ts, sizes, 3, 0, 60, NOW, S).entries == 3  # objects end
    assert lc.cleanable(base, last, ts, sizes, 6, 0, 25, NOW, S).entries == 2  # below the LSO
    lagged = lc.CleanSettings(segment_bytes=200, segment_ms=1000, min_compaction_lag_ms=50)
    assert (
        lc.cleanable(
            base, last, [NOW - 100] * 3 + [NOW - 10] * 3, sizes, 6, 0, 60, NOW, lagged
        ).entries
        == 3
    )


def test_a_segment_rolls_after_segment_ms() -> None:
    c = lc.cleanable([0, 10, 20], [9, 19, 29], [0, 2000, 2100], [10, 10, 10], 3, 0, 30, NOW, S)
    assert c.entries == 1


def test_a_clean_is_due_by_the_dirty_ratio_or_the_max_lag() -> None:
    base, last, sizes = [0, 10, 20, 30, 40], [9, 19, 29, 39, 49], [100] * 5
    ts = [NOW - 100] * 5
    c = lc.cleanable(base, last, ts, sizes, 5, 30, 50, NOW, S)  # [0,30) clean, [30,40) dirty
    assert (c.clean_bytes, c.dirty_bytes) == (300, 100)
    assert not lc.clean_due(c, NOW, S)
    assert lc.clean_due(
        c, NOW, lc.CleanSettings(segment_bytes=200, segment_ms=1000, max_compaction_lag_ms=50)
    )
    plan = lc.plan_clean(lc.cleanable(base, last, ts, sizes, 5, 10, 50, NOW, S), last, NOW, S)
    assert plan is not None and (plan.entries, plan.dirty_from, plan.end_offset) == (4, 1, 40)


def test_block_groups_merge_back_to_back_blocks_of_one_object() -> None:
    refs = [(1, 0, 10, 9), (1, 10, 10, 19), (2, 0, 10, 29), (2, 10, 10, 39), (2, 20, 10, 49)]
    assert list(lc.block_groups(refs, 20)) == [
        (1, 0, 20, 19, 2),
        (2, 0, 20, 39, 2),
        (2, 20, 30, 49, 1),
    ]


def test_a_partition_takes_the_cleaned_blocks_in_place_of_the_old_even_after_retention() -> None:
    p = Partition(b"t" * 16, "t", 0)
    old = [
        BatchRef(0, 9, 1, 0, 100, 1),
        BatchRef(10, 19, 1, 100, 100, 1),
        BatchRef(20, 29, 1, 0, 100, 2),
    ]
    for r in old:
        p.record_block(r)
    new = [BatchRef(5, 19, 1, 0, 30, 3)]
    p.start_at(10)  # retention took the first block meanwhile
    assert p.replace_prefix(old[:2], new)
    assert [p.batches.ref(i) for i in range(len(p.batches))] == [new[0], old[2]]
    assert p.object_entries == 2
    assert not p.replace_prefix(old[:2], new)  # already replaced: the refs do not match


def test_the_rewrite_skips_groups_nothing_of_which_survives_and_counts_them() -> None:
    end = 9
    job = lc.CleanJob(
        lc.JobParams(
            log_start=0, dirty_start=0, end_offset=end, now_ms=NOW, delete_retention_ms=5000
        )
    )
    groups = [
        batch(0, [b"a", b"b", b"c"], [b"1", b"2", b"3"]),  # all overwritten later
        batch(3, [b"a", b"b"], [b"4", b"5"], pid=9, seq=0, txn=True),  # transactional
        batch(5, [b"c", None, b"a", b"b"], [b"6", b"7", b"8", b"9"]),
    ]
    for g in groups:
        assert job.add_to_map(g, records.parse_header(g).last_offset + 1)
    assert job.needed_groups() == [False, True, True]
    assert job.stats.records_read == 3 and job.stats.batches_dropped == 1
    for g in groups[1:]:
        job.rewrite(g)
    kept = [(r.offset, r.key) for b in job.out for r in decode_records(bytes(b.data))]
    assert kept == [(5, b"c"), (6, None), (7, b"a"), (8, b"b")]  # the last batch, as it was
    assert bytes(job.out[0].data) == groups[2]
    assert job.stats.records_read == 9 and job.stats.records_kept == 4


def test_the_byte_budget_pauses_only_a_cleaner_ahead_of_it() -> None:
    assert lc.budget_wait_s(100 * 2**20, 0.5, 0) == 0  # unbounded
    assert lc.budget_wait_s(100 * 2**20, 0.5, 100 * 2**20) == pytest.approx(0.5)
    assert lc.budget_wait_s(10 * 2**20, 0.5, 100 * 2**20) == 0  # behind it: no pause
