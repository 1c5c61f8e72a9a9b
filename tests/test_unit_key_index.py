"""The key index: an object says which of its blocks may hold a key, and when they ran."""

from __future__ import annotations

import random
import struct

import cramjam
import crc32c
import pytest

from protocol.record_codec import encode_batch
from protocol.records import HEADER_SIZE, parse_header, with_base_offset
from s3stream import key_index
from s3stream.object_format import (
    FOOTER,
    ObjectBuilder,
    PendingBatch,
    parse_footer,
    parse_index,
    parse_key_index,
    parse_locator,
    split_block,
)

pytestmark = pytest.mark.unit


def _zstd(batch: bytes) -> bytes:
    """The same batch with its records zstd-compressed (as a producer would send it)."""
    records = bytes(cramjam.zstd.compress(batch[HEADER_SIZE:]))
    head = bytearray(batch[:HEADER_SIZE])
    attrs = struct.unpack_from(">h", head, 21)[0] | 4
    struct.pack_into(">h", head, 21, attrs)
    struct.pack_into(">i", head, 8, HEADER_SIZE - 12 + len(records))
    after = bytes(head[21:]) + records
    struct.pack_into(">I", head, 17, crc32c.crc32c(after))
    return bytes(head) + records


def _session_batches(
    n: int, sessions: int, seed: int, compress: bool = False, base_ts: int = 1_700_000_000_000
) -> tuple[list[PendingBatch], list[tuple[int, bytes, int]]]:
    """Batches of 10 ~300-byte events each, keyed by random session ids; and
    (offset, key, timestamp) of every record."""
    rng = random.Random(seed)
    out, records = [], []
    offset = 0
    for b in range(n):
        keys = [b"sess_%05d" % rng.randrange(sessions) for _ in range(10)]
        stamps = [base_ts + b * 1000 + i for i in range(10)]
        raw = encode_batch([b"{" + b"x" * 290 + b"}"] * 10, keys, stamps)
        raw = with_base_offset(_zstd(raw) if compress else raw, offset, 0)
        h = parse_header(raw)
        out.append(PendingBatch(offset, offset + 9, h.max_timestamp, raw))
        records.extend(
            (offset + i, k, t) for i, (k, t) in enumerate(zip(keys, stamps, strict=True))
        )
        offset += 10
    return out, records


def _object(batches: list[PendingBatch], block_bytes: int = 16 * 1024) -> tuple[bytes, list]:
    builder = ObjectBuilder(block_bytes)
    builder.add_partition(b"T" * 16, 3, batches)
    body = builder.finish(created_ms=1)
    footer = parse_footer(body[-FOOTER.size :])
    entries = parse_index(footer, body[footer.index_position : -FOOTER.size])
    lo, hi = footer.locator_range
    loc = parse_locator(footer, body[lo:hi])
    return body, [entries, parse_key_index(loc, body[loc.position : loc.end]), builder]


@pytest.mark.parametrize("compress", [False, True])
def test_every_block_holding_a_key_is_a_candidate_and_few_others_are(compress: bool) -> None:
    batches, records = _session_batches(400, 300, seed=7, compress=compress)
    body, (entries, keys, _) = _object(batches)
    assert len(keys) == len(entries) > 3
    holding: dict[bytes, set[int]] = {}
    for i, e in enumerate(entries):
        for off, k, _ in records:
            if e.first_offset <= off <= e.last_offset:
                holding.setdefault(k, set()).add(i)
    extra = 0
    for k, blocks in holding.items():
        found = set(key_index.candidates(keys, k))
        assert blocks <= found, f"{k!r} is in blocks {blocks - found} the index misses"
        extra += len(found - blocks)
    assert extra == 0, "32-bit fingerprints of 300 keys should not collide here"
    assert list(key_index.candidates(keys, b"no such session")) == []


def test_time_range_of_each_block_is_its_records_and_narrows_the_candidates() -> None:
    batches, records = _session_batches(200, 50, seed=3)
    _, (entries, keys, _) = _object(batches)
    for e, k in zip(entries, keys, strict=True):
        stamps = [t for off, _, t in records if e.first_offset <= off <= e.last_offset]
        assert (k.min_timestamp, k.max_timestamp) == (min(stamps), max(stamps))
    key = records[0][1]
    everywhere = list(key_index.candidates(keys, key))
    late = list(key_index.candidates(keys, key, start_ms=keys[len(keys) // 2].min_timestamp))
    early = list(key_index.candidates(keys, key, end_ms=keys[0].max_timestamp))
    assert late and set(late) < set(everywhere) and min(late) >= len(keys) // 2 - 1
    assert early == [0]


def test_index_is_a_small_fraction_of_the_data() -> None:
    batches, _ = _session_batches(4000, 2000, seed=1)  # 40,000 ~300-byte events
    body, (_, _, builder) = _object(batches, block_bytes=1024 * 1024)
    fraction = builder.key_index_bytes / len(body)
    # the worst case for size: every record in a block has its own key
    assert fraction < 0.015, f"key index is {fraction:.2%} of the object"


def test_a_block_that_cannot_be_decoded_answers_every_key() -> None:
    good, _ = _session_batches(3, 10, seed=2)
    raw = bytearray(good[0].data)
    struct.pack_into(">h", raw, 21, 4)  # says zstd, is not
    entry = key_index.index_block([bytes(raw)])
    assert entry.fingerprints is None
    decoded = key_index.decode(key_index.encode([entry, key_index.index_block([good[1].data])]))
    assert decoded[0].may_hold(key_index.fingerprint(b"anything"))
    assert decoded[0].overlaps(0, 1) and decoded[0].overlaps(2**62, None)
    assert not decoded[1].may_hold(key_index.fingerprint(b"anything"))


def test_objects_without_a_key_index_stay_readable() -> None:
    batches, _ = _session_batches(50, 10, seed=4)
    old = ObjectBuilder(16 * 1024, version=1)
    old.add_partition(b"T" * 16, 0, batches)
    body = old.finish(created_ms=5)
    footer = parse_footer(body[-FOOTER.size :])
    assert footer.version == 1 and footer.locator_range is None
    assert footer.index_position + footer.index_size + FOOTER.size == len(body)
    entries = parse_index(footer, body[footer.index_position : -FOOTER.size])
    read = [
        bytes(d) for e in entries for *_, d in split_block(body[e.position : e.position + e.size])
    ]
    assert read == [bytes(b.data) for b in batches]


def test_null_keys_and_control_batches_are_not_indexed() -> None:
    raw = encode_batch([b"a", b"b"], [None, b"k"])
    keys, lo, hi = key_index.batch_keys(raw)
    assert keys == [b"k"] and lo <= hi
    control = bytearray(raw)
    struct.pack_into(">h", control, 21, 0x20)
    assert key_index.batch_keys(bytes(control))[0] == []
