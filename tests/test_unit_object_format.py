"""The object layout: what one upload writes can be read back from its footer alone."""

from __future__ import annotations

import pytest

from protocol.records import parse_header, with_base_offset
from s3stream.object_format import (
    FOOTER,
    CorruptObject,
    ObjectBuilder,
    PendingBatch,
    parse_footer,
    parse_index,
    refs_by_partition,
    split_block,
)
from tests.wire import make_batch

pytestmark = pytest.mark.unit


def _batches(first_offset: int, count: int, size: int) -> list[PendingBatch]:
    out = []
    offset = first_offset
    for i in range(count):
        raw = with_base_offset(make_batch([b"v%d" % i + b"x" * size] * 3), offset, 0)
        h = parse_header(raw)
        out.append(PendingBatch(offset, offset + h.last_offset_delta, h.max_timestamp, raw))
        offset += h.last_offset_delta + 1
    return out


def test_blocks_index_and_footer_round_trip() -> None:
    a = _batches(0, 40, 1000)
    b = _batches(500, 3, 100)
    builder = ObjectBuilder(block_bytes=16 * 1024)
    builder.add_partition(b"A" * 16, 0, a)
    builder.add_partition(b"B" * 16, 7, b)
    body = builder.finish(created_ms=123)

    footer = parse_footer(body[-FOOTER.size :])
    assert footer.created_ms == 123
    assert footer.index_position + footer.index_size + FOOTER.size == len(body)
    entries = parse_index(footer, body[footer.index_position : -FOOTER.size])
    a_blocks = [e for e in entries if e.topic_id == b"A" * 16]
    assert len(a_blocks) > 1, "40 KB of batches in 16 KiB blocks make several blocks"
    assert all(e.size <= 16 * 1024 for e in a_blocks)
    assert [e.partition for e in entries if e.topic_id == b"B" * 16] == [7]
    # blocks tile each partition's offsets and bytes, in order
    assert a_blocks[0].first_offset == 0 and a_blocks[-1].last_offset == a[-1].last_offset
    for x, y in zip(a_blocks, a_blocks[1:], strict=False):
        assert y.first_offset == x.last_offset + 1 and y.position == x.position + x.size
    read_back = [
        bytes(data)
        for e in entries
        for _, _, _, data in split_block(body[e.position : e.position + e.size])
    ]
    assert read_back == [bytes(p.data) for p in a + b]
    assert sum(e.batch_count for e in entries) == len(a) + len(b)


def test_damaged_index_or_footer_is_refused() -> None:
    builder = ObjectBuilder()
    builder.add_partition(b"A" * 16, 0, _batches(0, 2, 10))
    body = bytearray(builder.finish())
    footer = parse_footer(body)
    body[footer.index_position] ^= 0xFF
    with pytest.raises(CorruptObject):
        parse_index(footer, body[footer.index_position : -FOOTER.size])
    with pytest.raises(CorruptObject):
        parse_footer(body[:-1] + b"?")


def test_a_batch_larger_than_a_block_gets_a_block_of_its_own() -> None:
    big, small = _batches(0, 1, 5000), _batches(3, 2, 10)
    builder = ObjectBuilder(block_bytes=1024)
    builder.add_partition(b"A" * 16, 0, big + small)
    assert [e.batch_count for e in builder.entries] == [1, 2]
    assert builder.entries[0].size == len(big[0].data) > 1024


def test_short_objects_and_indexes_of_partial_entries_are_refused() -> None:
    with pytest.raises(CorruptObject):
        parse_footer(b"x" * (FOOTER.size - 1))
    builder = ObjectBuilder()
    builder.add_partition(b"A" * 16, 0, _batches(0, 1, 10))
    body = builder.finish()
    footer = parse_footer(body)
    with pytest.raises(CorruptObject):  # the size does not match the footer's
        parse_index(footer, body[footer.index_position : -FOOTER.size - 1])


def test_refs_by_partition_groups_an_objects_entries_in_order() -> None:
    builder = ObjectBuilder(block_bytes=2048)
    builder.add_partition(b"A" * 16, 0, _batches(0, 6, 1000))
    builder.add_partition(b"B" * 16, 1, _batches(0, 1, 10))
    refs = refs_by_partition(builder.entries, 9)
    assert set(refs) == {(b"A" * 16, 0), (b"B" * 16, 1)}
    a = refs[(b"A" * 16, 0)]
    assert len(a) > 1 and all(r.object_id == 9 for r in a)
    assert [r.base_offset for r in a] == sorted(r.base_offset for r in a)
