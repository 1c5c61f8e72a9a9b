"""Fetch responses (v4-v18) encoded straight to a list of buffers, without copying records.

The generic path (kio through protocol.codec) copies every record batch into one growing
buffer, and that copy was the largest single cost of a tail consume. Here the fixed parts
of each level are packed with `struct` layouts precomputed per version, and each
partition's record batches are handed on as they are (bytes or memoryviews of the tail
cache or a block), so the transport can write them with writelines / writev. The bytes are
the same as kio's (tests/test_unit_fetch_response.py compares every version).

Input: the plain dict the Fetch handler builds (see broker/handlers/fetch.py), whose
partitions' "records" may be one buffer or a list of buffers. Tagged fields are never
sent (no diverging epoch, current leader or snapshot id; no node endpoints).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import cache
from typing import Any

Buffer = bytes | bytearray | memoryview

MIN_VERSION, MAX_VERSION = 4, 18
_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
_ABORTED = struct.Struct(">qq")


class _Layout:
    """What one version writes, precomputed."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.flexible = version >= 12
        self.topic_ids = version >= 13
        # correlation id [+ empty header tags], throttle [, error, session id]
        head = ">ii" + ("hi" if version >= 7 else "")
        self.head = struct.Struct(head)
        # partition index, error, high watermark, last stable offset [, log start offset]
        self.partition = struct.Struct(">ihqq" + ("q" if version >= 5 else ""))
        self.preferred = version >= 11
        self.log_start = version >= 5
        self.session = version >= 7


@cache
def _layout(version: int) -> _Layout:
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ValueError(f"Fetch response v{version} is not supported here")
    return _Layout(version)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_UVARINTS = [_uvarint(n) for n in range(128)]


def _count(n: int, flexible: bool, null: bool = False) -> bytes:
    """An array's or a string's length prefix (-1 / 0 for null)."""
    if flexible:
        return b"\x00" if null else (_SMALL_UVARINTS[n + 1] if n < 127 else _uvarint(n + 1))
    return _I32.pack(-1 if null else n)


def _records(data: Buffer | Sequence[Buffer] | None) -> list[Buffer] | None:
    if data is None:
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        return [data] if len(data) else []
    return [d for d in data if len(d)]


def _partition(lay: _Layout, p: dict[str, Any], scratch: bytearray, out: list[Buffer]) -> None:
    """One partition: its fixed part into `scratch`; its records, if any, flush the
    scratch to `out` and follow it there as they are."""
    flex = lay.flexible
    fields = [
        p["partition_index"],
        int(p["error_code"]),
        p["high_watermark"],
        p["last_stable_offset"],
    ]
    if lay.log_start:
        fields.append(p["log_start_offset"])
    scratch += lay.partition.pack(*fields)
    aborted = p.get("aborted_transactions")
    if aborted is None:
        scratch += _count(0, flex, null=True)
    else:
        scratch += _count(len(aborted), flex)
        for a in aborted:
            scratch += _ABORTED.pack(a["producer_id"], a["first_offset"])
            if flex:
                scratch += b"\x00"
    if lay.preferred:
        scratch += _I32.pack(p.get("preferred_read_replica", -1))
    records = _records(p.get("records"))
    if records is None:
        scratch += _count(0, flex, null=True)
    else:
        scratch += _count(sum(len(r) for r in records), flex)
        if records:
            out.append(bytes(scratch))
            scratch.clear()
            out.extend(records)
    if flex:
        scratch += b"\x00"  # partition tags


def encode_fetch_response(
    correlation_id: int, version: int, body: dict[str, Any]
) -> tuple[list[Buffer], int]:
    """The whole frame (size prefix included) as buffers to write in order, and its size."""
    lay = _layout(version)
    flex = lay.flexible
    out: list[Buffer] = []
    scratch = bytearray()  # the small fixed parts between record buffers
    head = [correlation_id, body.get("throttle_time", 0)]
    if lay.session:
        head += [int(body.get("error_code", 0)), body.get("session_id", 0)]
    fixed = lay.head.pack(*head)
    if flex:  # response header v1: correlation id then its (empty) tags
        scratch += fixed[:4] + b"\x00" + fixed[4:]
    else:
        scratch += fixed
    topics = body["responses"]
    scratch += _count(len(topics), flex)
    for t in topics:
        if lay.topic_ids:
            scratch += t["topic_id"].bytes
        else:
            name = t["topic"].encode()
            scratch += _count(len(name), flex) if flex else _I16.pack(len(name))
            scratch += name
        parts = t["partitions"]
        scratch += _count(len(parts), flex)
        for p in parts:
            _partition(lay, p, scratch, out)
        if flex:
            scratch += b"\x00"  # topic tags
    if flex:
        scratch += b"\x00"  # response tags
    if scratch:
        out.append(bytes(scratch))
    size = sum(len(b) for b in out)
    out.insert(0, _I32.pack(size))
    return out, size + 4
