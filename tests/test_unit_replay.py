"""The replay core over objects in a local directory, and how sessions are shown and diffed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from broker.replay.core import PartitionData, Query, Replayer, StoredBlock, records_with_key
from broker.replay.render import diff_report, first_divergence, parse_time, summary, timeline
from protocol.record_codec import decode_records, encode_batch
from protocol.records import parse_header, with_base_offset
from s3stream.local_store import LocalDirectoryStore
from s3stream.object_format import ObjectBuilder, PendingBatch

pytestmark = pytest.mark.unit
T0 = 1_700_000_000_000


def _batches(keys_per_batch: list[list[bytes]], first: int = 0, ts: int = T0) -> list[PendingBatch]:
    out, offset = [], first
    for keys in keys_per_batch:
        stamps = [ts + 10 * (offset + i) for i in range(len(keys))]
        values = [
            json.dumps({"k": k.decode(), "o": offset + i}).encode() for i, k in enumerate(keys)
        ]
        raw = with_base_offset(encode_batch(values, keys, stamps), offset, 0)
        h = parse_header(raw)
        out.append(PendingBatch(offset, offset + h.last_offset_delta, h.max_timestamp, raw))
        offset += len(keys)
    return out


async def _put(store, key: str, batches: list[PendingBatch], version: int, partition: int = 0):
    """Store one object of `batches` (1 KiB blocks); its blocks as a catalog lists them."""
    b = ObjectBuilder(1024, version=version)
    b.add_partition(b"T" * 16, partition, batches)
    body = b.finish(created_ms=1)
    await store.put(key, body)
    return [
        StoredBlock(
            key, len(body), e.position, e.size, e.first_offset, e.last_offset, e.max_timestamp
        )
        for e in b.entries
    ]


def _keys(n_batches: int, pattern: list[bytes]) -> list[list[bytes]]:
    return [[pattern[(b * 5 + i) % len(pattern)] for i in range(5)] for b in range(n_batches)]


def test_replay_reads_new_objects_by_their_key_index_and_old_ones_whole(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalDirectoryStore(tmp_path)
        rare = [b"common"] * 40 + [b"rare"]
        old = _batches(_keys(60, rare))
        new = _batches(_keys(60, rare), first=old[-1].last_offset + 1)
        blocks = await _put(store, "data/old.obj", old, version=1)
        blocks += await _put(store, "data/new.obj", new, version=2)
        r = Replayer(store)
        result = await r.replay([PartitionData(0, 0, blocks)], Query(b"rare"))
        keys = [k for part in (_keys(60, rare), _keys(60, rare)) for batch in part for k in batch]
        expected = [o for o, k in enumerate(keys) if k == b"rare"]
        assert [x.offset for x in result.records] == expected
        assert all(x.key == b"rare" for x in result.records)
        s = result.stats
        old_blocks = sum(1 for b in blocks if b.key == "data/old.obj")
        # every block of the old object, only the rare key's blocks of the new one
        assert old_blocks < s.blocks_read < len(blocks)
        again = await r.replay([PartitionData(0, 0, blocks)], Query(b"rare"))
        assert again.records == result.records
        assert again.stats.gets < s.gets, "key indexes are read once per object"

    asyncio.run(main())


def test_replay_honours_log_start_time_range_tail_and_limit(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalDirectoryStore(tmp_path)
        stored = _batches([[b"a", b"b"]] * 20)
        blocks = await _put(store, "data/1.obj", stored, version=2)
        tail_batches = _batches([[b"a", b"b"]] * 3, first=40)
        # the tail repeats the last uploaded batch (an upload raced the read): once only
        tail = [bytes(stored[-1].data)] + [bytes(b.data) for b in tail_batches]

        async def read_tail() -> list[bytes]:
            return tail

        p = PartitionData(0, 11, blocks, read_tail)
        got = await Replayer(store).replay([p], Query(b"a"))
        assert [x.offset for x in got.records] == list(range(12, 46, 2))
        assert got.stats.tail_batches == 4
        lo, hi = T0 + 10 * 20, T0 + 10 * 30
        ranged = await Replayer(store).replay([p], Query(b"a", lo, hi))
        assert [x.offset for x in ranged.records] == list(range(20, 31, 2))
        limited = await Replayer(store).replay([p], Query(b"a", limit=3))
        assert [x.offset for x in limited.records] == [12, 14, 16] and limited.truncated

    asyncio.run(main())


def test_partitions_merge_by_timestamp(tmp_path: Path) -> None:
    async def main() -> None:
        store = LocalDirectoryStore(tmp_path)
        a = await _put(store, "data/a.obj", _batches([[b"k"]] * 5, ts=T0), 2, partition=0)
        b = await _put(store, "data/b.obj", _batches([[b"k"]] * 5, ts=T0 + 5), 2, partition=1)
        got = await Replayer(store).replay(
            [PartitionData(0, 0, a), PartitionData(1, 0, b)], Query(b"k")
        )
        assert [(x.partition, x.offset) for x in got.records] == [
            (p, o) for o in range(5) for p in (0, 1)
        ]

    asyncio.run(main())


def _ev(step: int, **v) -> dict:
    return {"partition": 0, "offset": step, "timestamp": T0 + 1500 * step, "key": "s", "value": v}


def test_diff_names_the_first_divergent_step_and_sums_numeric_fields() -> None:
    common = [_ev(i, event_type="tool_call", tool=f"t{i}", tokens=10) for i in range(7)]
    a = [*common, _ev(7, event_type="tool_call", tool="refund", action="deny", tokens=1)]
    b = [*common, _ev(7, event_type="tool_call", tool="refund", action="approve", tokens=2)]
    d = first_divergence(a, b, ["event_type", "tool", "action"])
    assert d.step == 8 and d.a is a[7] and d.b is b[7]
    assert first_divergence(a, a, ["tool"]).step is None
    assert first_divergence(a, a[:5], ["tool"]).step == 6
    assert summary(a) == {"steps": 8, "duration_s": 10.5, "totals": {"tokens": 71}}
    text = diff_report("A", a, "B", b, ["event_type", "tool", "action"])
    assert "step 8" in text and '"deny"' in text and '"approve"' in text


def test_timeline_shows_time_since_start_type_and_fields() -> None:
    lines = timeline([_ev(0, event_type="start", tool="x"), _ev(2, event_type="end")]).splitlines()
    assert "2 events" in lines[0]
    assert "+    0.000s" in lines[1] and "start" in lines[1] and 'tool="x"' in lines[1]
    assert "+    3.000s" in lines[2] and "end" in lines[2]


def test_times_parse_from_iso_8601_or_epoch_ms() -> None:
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time("2023-11-14T22:13:20+00:00") == T0
    assert parse_time(str(T0)) == T0
    assert parse_time(None) is None
    with pytest.raises(ValueError, match="malformed time"):
        parse_time("yesterday")


def test_reading_only_one_keys_records_agrees_with_decoding_the_whole_batch() -> None:
    keys = [b"a", None, b"ab", b"a", b"b", b"a"]
    headers = [[("h", b"1")], [], [("x", b"")], [], [("h", b"2"), ("i", b"3")], []]
    raw = encode_batch([b"v%d" % i for i in range(6)], keys, None, headers=headers)
    full = [(r.offset, r.timestamp, r.value, r.headers) for r in decode_records(raw)]
    for k in (b"a", b"ab", b"b", b"zz"):
        assert records_with_key(raw, k) == [
            f for f, key in zip(full, keys, strict=True) if key == k
        ]
