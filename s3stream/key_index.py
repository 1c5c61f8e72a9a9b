"""The key index of an object: which of its blocks may hold a record key, and their times.

Replaying one session (one record key) from weeks of retention must not read the
topic: the reader asks each object's key index which blocks may hold the key, and
GETs only those. The index is built while the object is laid out (on the uploader's
or compaction's worker thread) by decoding the record keys of each batch.

Structure: per block, in the order of the object's block index, its record time
range (min, max timestamp) and a *sorted array of 32-bit fingerprints*: the top half
of a 64-bit BLAKE2b hash of each distinct key in the block. Why this shape:

* size: 4 bytes per distinct key per block. A block (about 1 MiB) of ~300-byte
  events holds ~3,500 records; keyed by agent session they hold far fewer distinct
  keys, so the index is ~0.1-1.5% of the data (tests/test_unit_key_index.py and the
  `replay` benchmark measure it). Full 64-bit hashes would double that for no gain.
* lookup: a binary search per block (`bisect` on an `array('I')`, C speed), so a
  1,000-block object answers in microseconds; no decoding, no hashing per block.
* false positives: a foreign key shares a fingerprint with probability about
  distinct-keys / 2**32 per block (~1e-6), i.e. an extra block GET once in a million
  blocks; the reader filters records by the exact key anyway, so results never differ.
  A Bloom filter at 1% false positives would take ~1.2 bytes per key but fetch an
  extra 1 MiB block for one block in a hundred: worse for replay's GET budget.

A block whose batches cannot be decoded (a codec this process lacks) is marked
UNINDEXED: every lookup answers it, so a replay reads it rather than miss a record.
Control batches (transaction markers) carry no user keys and are skipped.

Section layout (little endian):

    count u32 | (min ts i64, max ts i64, fingerprints u32)*count | fingerprint u32*
"""

from __future__ import annotations

import bisect
import hashlib
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from protocol.record_codec import record_spans, record_timestamp
from protocol.records import CONTROL, parse_header

UNINDEXED = 0xFFFFFFFF  # a block's fingerprint count: may hold any key
_COUNT = struct.Struct("<I")
_BLOCK = struct.Struct("<qqI")
_NO_TIME = (2**63 - 1, -(2**63))


def key_hash(key: bytes) -> int:
    """The 64-bit hash of a record key (stable across processes and versions)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def fingerprint(key: bytes) -> int:
    """What the index stores for `key`: the top 32 bits of its hash."""
    return key_hash(key) >> 32


def batch_keys(batch: bytes | memoryview) -> tuple[list[bytes], int, int]:
    """The non-null record keys of one RecordBatch v2, and its records' (min, max)
    timestamps. Raises ValueError (or a codec's error) if the batch is malformed."""
    if parse_header(batch).attributes & CONTROL:
        return [], _NO_TIME[0], _NO_TIME[1]
    h, buf, spans = record_spans(batch)
    keys = []
    lo, hi = _NO_TIME
    for ts_delta, _, key_pos, key_len, _ in spans:
        if key_len >= 0:
            keys.append(bytes(buf[key_pos : key_pos + key_len]))
        ts = record_timestamp(h, ts_delta)
        lo, hi = min(lo, ts), max(hi, ts)
    return keys, lo, hi


@dataclass(frozen=True, slots=True)
class BlockKeys:
    """One block's entry: its records' time range and its keys' sorted fingerprints
    (None: not indexed, may hold any key)."""

    min_timestamp: int
    max_timestamp: int
    fingerprints: array | None

    def may_hold(self, fp: int) -> bool:
        f = self.fingerprints
        if f is None:
            return True
        i = bisect.bisect_left(f, fp)
        return i < len(f) and f[i] == fp

    def overlaps(self, start_ms: int | None, end_ms: int | None) -> bool:
        """Whether the block may hold records timed in [start_ms, end_ms]."""
        if start_ms is not None and self.max_timestamp < start_ms:
            return False
        return not (end_ms is not None and self.min_timestamp > end_ms)


def index_block(batches: Iterable[bytes | memoryview]) -> BlockKeys:
    """The entry of a block made of `batches` (CPU work: on a worker thread)."""
    fps: set[int] = set()
    lo, hi = _NO_TIME
    try:
        for b in batches:
            keys, blo, bhi = batch_keys(b)
            lo, hi = min(lo, blo), max(hi, bhi)
            fps.update(key_hash(k) >> 32 for k in keys)
    except Exception:  # a codec we cannot read: the block answers every lookup, any time
        return BlockKeys(_NO_TIME[1], _NO_TIME[0], None)
    return BlockKeys(lo, hi, array("I", sorted(fps)))


def encode(blocks: list[BlockKeys]) -> bytes:
    """The section for an object's blocks (in the order of its block index)."""
    parts = [_COUNT.pack(len(blocks))]
    for b in blocks:
        n = UNINDEXED if b.fingerprints is None else len(b.fingerprints)
        parts.append(_BLOCK.pack(b.min_timestamp, b.max_timestamp, n))
    for b in blocks:
        if b.fingerprints:
            a = array("I", b.fingerprints)
            if sys.byteorder == "big":
                a.byteswap()
            parts.append(a.tobytes())
    return b"".join(parts)


def decode(section: bytes | memoryview) -> list[BlockKeys]:
    """The blocks' entries from a section; ValueError if it does not add up."""
    view = memoryview(section)
    if len(view) < _COUNT.size:
        raise ValueError("key index shorter than its count")
    (count,) = _COUNT.unpack_from(view, 0)
    pos = _COUNT.size
    heads = []
    for _ in range(count):
        if pos + _BLOCK.size > len(view):
            raise ValueError("key index truncated in its block table")
        heads.append(_BLOCK.unpack_from(view, pos))
        pos += _BLOCK.size
    out = []
    for lo, hi, n in heads:
        if n == UNINDEXED:
            out.append(BlockKeys(lo, hi, None))
            continue
        end = pos + 4 * n
        if end > len(view):
            raise ValueError("key index truncated in its fingerprints")
        a = array("I")
        a.frombytes(view[pos:end])
        if sys.byteorder == "big":
            a.byteswap()
        out.append(BlockKeys(lo, hi, a))
        pos = end
    if pos != len(view):
        raise ValueError("key index has trailing bytes")
    return out


def candidates(
    blocks: list[BlockKeys], key: bytes, start_ms: int | None = None, end_ms: int | None = None
) -> Iterator[int]:
    """Ordinals of the blocks that may hold records of `key` timed in [start, end]."""
    fp = fingerprint(key)
    for i, b in enumerate(blocks):
        if b.overlaps(start_ms, end_ms) and b.may_hold(fp):
            yield i
