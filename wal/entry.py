"""Framing of one WAL entry: a raw record batch tagged with where it belongs.

    length u32 | crc32c u32 | version u8 | topic_id 16s | partition i32 |
    leader_epoch i32 | base_offset i64 | batch bytes

`length` counts everything after the CRC; the CRC covers the same bytes. A zero or
impossible length, a short read or a CRC mismatch marks the end of the valid log.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

_PREFIX = struct.Struct(">II")
_META = struct.Struct(">B16siiq")
HEADER_SIZE = _PREFIX.size + _META.size  # 41
VERSION = 1
MAX_ENTRY = 1 << 30


@dataclass(frozen=True, slots=True)
class WalEntry:
    """An entry found by recovery; `batch` is a view into the segment buffer."""

    position: int  # logical WAL position of the entry's first byte
    topic_id: bytes
    partition: int
    leader_epoch: int
    base_offset: int
    batch: memoryview

    @property
    def batch_position(self) -> int:
        return self.position + HEADER_SIZE

    @property
    def end_position(self) -> int:
        return self.batch_position + len(self.batch)


def encode_header(
    topic_id: bytes, partition: int, leader_epoch: int, base_offset: int, batch: bytes
) -> bytes:
    meta = _META.pack(VERSION, topic_id, partition, leader_epoch, base_offset)
    crc = crc32c.crc32c(batch, crc32c.crc32c(meta))
    return _PREFIX.pack(len(meta) + len(batch), crc) + meta


def decode_entries(buf: memoryview, base_position: int) -> tuple[list[WalEntry], int]:
    """Entries parsed from the start of `buf`, and the byte count that was valid."""
    entries: list[WalEntry] = []
    pos, end = 0, len(buf)
    while end - pos >= HEADER_SIZE:
        length, crc = _PREFIX.unpack_from(buf, pos)
        if length < _META.size or length > MAX_ENTRY or pos + _PREFIX.size + length > end:
            break
        body = buf[pos + _PREFIX.size : pos + _PREFIX.size + length]
        if crc32c.crc32c(body) != crc:
            break
        version, topic_id, partition, epoch, base_offset = _META.unpack_from(body, 0)
        if version != VERSION:
            break
        entries.append(
            WalEntry(
                base_position + pos, topic_id, partition, epoch, base_offset, body[_META.size :]
            )
        )
        pos += _PREFIX.size + length
    return entries, pos
