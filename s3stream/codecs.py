"""Compressing record payloads the way Kafka's clients frame them (for rebuilt batches).

Decompression lives in protocol.record_codec; the log cleaner, which rebuilds batches
with the codec they came with, needs the other direction: gzip, snappy (raw, or in
the xerial framing the Java client writes), LZ4 frames with independent blocks (what
Kafka's own LZ4 reader expects), zstd. All through cramjam, except gzip.
"""

from __future__ import annotations

import gzip
import struct

import cramjam

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024  # the Java client's default block size
_LZ4_MAGIC = struct.pack("<I", 0x184D2204)
_LZ4_FLG = 0x60  # version 01, independent blocks, no checksums
_LZ4_BD = 0x40  # 64 KiB blocks
_LZ4_BLOCK = 64 * 1024
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def xxh32_short(data: bytes, seed: int = 0) -> int:
    """xxHash32 of fewer than 16 bytes (the LZ4 frame descriptor's checksum)."""
    assert len(data) < 16
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    h = (seed + p5 + len(data)) & _M32
    i = 0
    while i + 4 <= len(data):
        (word,) = struct.unpack_from("<I", data, i)
        h = (_rotl((h + word * p3) & _M32, 17) * p4) & _M32
        i += 4
    for b in data[i:]:
        h = (_rotl((h + b * p5) & _M32, 11) * p1) & _M32
    h ^= h >> 15
    h = (h * p2) & _M32
    h ^= h >> 13
    h = (h * p3) & _M32
    h ^= h >> 16
    return h


def _lz4_frame(data: bytes) -> bytes:
    descriptor = bytes([_LZ4_FLG, _LZ4_BD])
    out = [_LZ4_MAGIC, descriptor, bytes([(xxh32_short(descriptor) >> 8) & 0xFF])]
    for pos in range(0, len(data), _LZ4_BLOCK):
        raw = data[pos : pos + _LZ4_BLOCK]
        packed = bytes(cramjam.lz4.compress_block(raw, store_size=False))
        if len(packed) >= len(raw):
            out += [struct.pack("<I", len(raw) | 0x80000000), raw]
        else:
            out += [struct.pack("<I", len(packed)), packed]
    out.append(b"\x00\x00\x00\x00")
    return b"".join(out)


def _xerial(data: bytes) -> bytes:
    out = [_XERIAL_HEADER]
    for pos in range(0, len(data), _XERIAL_BLOCK):
        packed = bytes(cramjam.snappy.compress_raw(data[pos : pos + _XERIAL_BLOCK]))
        out += [struct.pack(">i", len(packed)), packed]
    return b"".join(out)


def compress(codec: int, data: bytes, like: bytes | memoryview = b"") -> bytes:
    """`data` compressed with Kafka codec `codec` (0 none, 1 gzip, 2 snappy, 3 lz4,
    4 zstd); `like` is a payload of the original batch, whose snappy framing is kept."""
    if codec == 0:
        return data
    if codec == 1:
        return gzip.compress(data, compresslevel=6, mtime=0)
    if codec == 2:
        if bytes(like[: len(XERIAL_MAGIC)]) == XERIAL_MAGIC:
            return _xerial(data)
        return bytes(cramjam.snappy.compress_raw(data))
    if codec == 3:
        return _lz4_frame(data)
    if codec == 4:
        return bytes(cramjam.zstd.compress(data, level=3))
    raise ValueError(f"unknown compression codec {codec}")
