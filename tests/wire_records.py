"""Decode record values from fetched bytes, for tests (uses the broker's own walker)."""

from __future__ import annotations

from protocol.record_timestamps import decompress, read_varint
from protocol.records import HEADER_SIZE, iter_headers


def decode_values(data: bytes | None) -> list[bytes]:
    out: list[bytes] = []
    if not data:
        return out
    for pos, h in iter_headers(data):
        buf = decompress(h.compression, data[pos + HEADER_SIZE : pos + h.size])
        p = 0
        for _ in range(h.record_count):
            length, p = read_varint(buf, p)
            end = p + length
            p += 1
            _, p = read_varint(buf, p)  # timestamp delta
            _, p = read_varint(buf, p)  # offset delta
            klen, p = read_varint(buf, p)
            p += max(klen, 0)
            vlen, p = read_varint(buf, p)
            out.append(buf[p : p + vlen] if vlen >= 0 else b"")
            p = end
    return out
