"""RecordBatch v2 headers, read and patched with `struct`; the records themselves stay opaque.

Layout (big endian): baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 |
magic i8 | crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32.
The CRC-32C covers everything from attributes to the end, so the broker may rewrite
baseOffset and partitionLeaderEpoch without touching it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the part batchLength does not count
CRC_START = 21  # attributes onwards
_OFFSET_AND_LENGTH = struct.Struct(">qi")
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_CRC = struct.Struct(">I")
_ATTRS = struct.Struct(">h")
_MAX_TS = struct.Struct(">q")

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_LOG_APPEND = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1


class InvalidBatch(ValueError):
    """A batch that is not a well-formed RecordBatch v2."""


class CorruptBatch(InvalidBatch):
    """A batch whose CRC-32C does not match its contents."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the batch occupies on the wire, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % (2**31)

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL)

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id != NO_PRODUCER_ID


def parse_header(buf: bytes | memoryview, pos: int = 0) -> BatchHeader:
    if len(buf) - pos < HEADER_SIZE:
        raise InvalidBatch(f"batch header needs {HEADER_SIZE} bytes, got {len(buf) - pos}")
    return BatchHeader(*HEADER.unpack_from(buf, pos))


def validate(buf: bytes, check_crc: bool = True) -> BatchHeader:
    """Check that `buf` is exactly one well-formed v2 batch and return its header."""
    h = parse_header(buf)
    if h.magic != 2:
        raise InvalidBatch(f"unsupported magic {h.magic}")
    if h.size != len(buf):
        raise InvalidBatch(f"batchLength {h.batch_length} does not match {len(buf)} bytes")
    if h.record_count <= 0 or h.last_offset_delta < 0:
        raise InvalidBatch(
            f"batch with {h.record_count} records, lastOffsetDelta {h.last_offset_delta}"
        )
    if h.last_offset_delta != h.record_count - 1:  # producers send dense batches
        raise InvalidBatch("lastOffsetDelta does not match the record count")
    if h.compression > 4:
        raise InvalidBatch(f"unknown compression codec {h.compression}")
    if check_crc and crc32c.crc32c(memoryview(buf)[CRC_START:]) != h.crc:
        raise CorruptBatch("batch CRC-32C mismatch")
    if h.compression == 0 and not _records_tile(buf, h.record_count):
        raise InvalidBatch("record lengths do not add up to the batch's records")
    return h


def _records_tile(buf: bytes, count: int) -> bool:
    """Do `count` length-prefixed records exactly fill an uncompressed batch?

    Only each record's length varint is read, never its contents: a cheap check that
    the batch's framing is whole, which is all the broker relies on. Compressed batches
    are left as the producer built them (their CRC is still checked).
    """
    pos, end, n = HEADER_SIZE, len(buf), 0
    while pos < end:
        b = buf[pos]
        if b < 0x80:  # records under 64 bytes
            raw = b
            pos += 1
        elif pos + 1 < end and buf[pos + 1] < 0x80:  # under 8 KiB: the common case
            raw = (b & 0x7F) | (buf[pos + 1] << 7)
            pos += 2
        else:
            shift = raw = 0
            while True:
                if pos >= end or shift > 28:
                    return False
                b = buf[pos]
                pos += 1
                raw |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
        length = (raw >> 1) ^ -(raw & 1)
        if length <= 0:
            return False
        pos += length
        n += 1
    return pos == end and n == count


def split_batches(records: bytes) -> list[bytes]:
    """Cut a records field into its batches (by their length fields, no parsing beyond)."""
    out = []
    pos, end = 0, len(records)
    if end >= LOG_OVERHEAD and LOG_OVERHEAD + _OFFSET_AND_LENGTH.unpack_from(records, 0)[1] == end:
        return [records]  # the usual single batch: no copy
    while pos < end:
        if end - pos < LOG_OVERHEAD:
            raise InvalidBatch("truncated batch at end of records")
        _, length = _OFFSET_AND_LENGTH.unpack_from(records, pos)
        if length < HEADER_SIZE - LOG_OVERHEAD or pos + LOG_OVERHEAD + length > end:
            raise InvalidBatch(f"batch length {length} out of bounds")
        out.append(records[pos : pos + LOG_OVERHEAD + length])
        pos += LOG_OVERHEAD + length
    return out


def with_base_offset(batch: bytes, base_offset: int, leader_epoch: int) -> bytearray:
    """The batch re-addressed to its assigned offset; the CRC'd part is untouched."""
    out = bytearray(batch)
    _BASE_OFFSET.pack_into(out, 0, base_offset)
    _LEADER_EPOCH.pack_into(out, 12, leader_epoch)
    return out


def with_log_append_time(batch: bytes, now_ms: int) -> bytes:
    """Stamp LogAppendTime: attributes and maxTimestamp change, so the CRC is recomputed."""
    out = bytearray(batch)
    (attrs,) = _ATTRS.unpack_from(out, CRC_START)
    _ATTRS.pack_into(out, CRC_START, attrs | TIMESTAMP_TYPE_LOG_APPEND)
    _MAX_TS.pack_into(out, 35, now_ms)
    _CRC.pack_into(out, 17, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


def iter_headers(data: bytes | memoryview):
    """Headers of consecutive batches in `data`, stopping at a partial trailing batch."""
    pos, end = 0, len(data)
    while end - pos >= HEADER_SIZE:
        h = parse_header(data, pos)
        if pos + h.size > end:
            break
        yield pos, h
        pos += h.size


_PRODUCER = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence at offset 43


def without_producer(batch: bytes | memoryview) -> bytes:
    """The batch with no producer id or sequence (CRC recomputed): for re-appending
    records whose producer has since moved on, which its sequence checks would refuse."""
    out = bytearray(batch)
    _PRODUCER.pack_into(out, 43, NO_PRODUCER_ID, -1, NO_SEQUENCE)
    _CRC.pack_into(out, 17, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)
