"""Decode record values from fetched bytes, for tests."""

from __future__ import annotations

from protocol.record_codec import decode_records
from protocol.records import iter_headers


def decode_values(data: bytes | None) -> list[bytes | None]:
    if not data:
        return []
    return [
        r.value for pos, h in iter_headers(data) for r in decode_records(data[pos : pos + h.size])
    ]
