"""Per-record timestamps of one batch, for ListOffsets by timestamp (never the hot path).

Decompresses the batch and walks its records far enough to read each record's
offset and timestamp deltas, skipping keys, values and headers.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import cramjam

from protocol.records import HEADER_SIZE, TIMESTAMP_TYPE_LOG_APPEND, parse_header

_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def _snappy(data: bytes) -> bytes:
    if data.startswith(_XERIAL_MAGIC):  # the Java client's (and librdkafka's) framing
        out = bytearray()
        pos = 16
        while pos < len(data):
            size = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
            out += bytes(cramjam.snappy.decompress_raw(data[pos : pos + size]))
            pos += size
        return bytes(out)
    return bytes(cramjam.snappy.decompress_raw(data))


def decompress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        return gzip.decompress(data)
    if codec == 2:
        return _snappy(data)
    if codec == 3:
        return bytes(cramjam.lz4.decompress(data))
    if codec == 4:
        return bytes(cramjam.zstd.decompress(data))
    raise ValueError(f"unknown compression codec {codec}")


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def record_timestamps(batch: bytes) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record in `batch`."""
    h = parse_header(batch)
    if h.attributes & TIMESTAMP_TYPE_LOG_APPEND:
        for delta in range(h.record_count):
            yield h.base_offset + delta, h.max_timestamp
        return
    buf = decompress(h.compression, batch[HEADER_SIZE:])
    pos = 0
    for _ in range(h.record_count):
        length, pos = read_varint(buf, pos)
        end = pos + length
        pos += 1  # attributes
        ts_delta, pos = read_varint(buf, pos)
        offset_delta, pos = read_varint(buf, pos)
        yield h.base_offset + offset_delta, h.base_timestamp + ts_delta
        pos = end
