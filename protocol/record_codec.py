"""Encoding and decoding of the records inside a batch: never on the event loop's hot path.

Used where the broker must look inside a batch: its own internal records (committed
offsets), ListOffsets by timestamp, recompression for a topic's `compression.type`
(in a thread), and tests.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import cramjam
import crc32c

from protocol.records import (
    COMPRESSION_MASK,
    CONTROL,
    HEADER_SIZE,
    TIMESTAMP_TYPE_LOG_APPEND,
    TRANSACTIONAL,
    BatchHeader,
    parse_header,
)

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_AFTER_CRC = struct.Struct(">hiqqqhii")
_BEFORE_CRC = struct.Struct(">qiibI")


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


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


# Kafka's codec ids (attributes bits 0-2) by the names `compression.type` uses
CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # version 1, compatible with 1
_XERIAL_BLOCK = 32 * 1024  # what the Java client's SnappyOutputStream writes per block


def _snappy_xerial(data: bytes) -> bytes:
    """Snappy in the xerial framing the Java client (and Kafka's broker) writes, which
    every client reads; raw snappy would fail older Java consumers."""
    out = bytearray(_XERIAL_HEADER)
    view = memoryview(data)
    for pos in range(0, len(data), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(view[pos : pos + _XERIAL_BLOCK]))
        out += len(block).to_bytes(4, "big") + block
    return bytes(out)


def _lz4_frame(data: bytes) -> bytes:
    """An LZ4 frame of independent blocks: Kafka's Java reader decodes each block on its own
    (it cannot follow linked blocks), as the frames it writes are."""
    c = cramjam.lz4.Compressor(block_linked=False, content_checksum=False)
    c.compress(data)
    return bytes(c.finish())


def compress(codec: int, data: bytes) -> bytes:
    """`data` (a batch's records) compressed with Kafka codec `codec`."""
    if codec == 0:
        return data
    if codec == 1:
        return bytes(cramjam.gzip.compress(data))
    if codec == 2:
        return _snappy_xerial(data)
    if codec == 3:
        return _lz4_frame(data)
    if codec == 4:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown compression codec {codec}")


def recompressed(batch: bytes, codec: int) -> bytes:
    """The batch with its records compressed by `codec` instead: the header (offsets,
    timestamps, producer id, epoch and sequence, transactional bit) is kept, the
    attributes name the new codec, and batchLength and the CRC-32C are recomputed, as
    Kafka's broker does for a topic whose `compression.type` differs from the producer's.
    CPU-bound: call it off the event loop."""
    h = parse_header(batch)
    body = compress(codec, decompress(h.compression, bytes(batch[HEADER_SIZE : h.size])))
    attributes = (h.attributes & ~COMPRESSION_MASK) | codec
    after_crc = (
        _AFTER_CRC.pack(
            attributes,
            h.last_offset_delta,
            h.base_timestamp,
            h.max_timestamp,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.record_count,
        )
        + body
    )
    batch_length = 4 + 1 + 4 + len(after_crc)
    before = _BEFORE_CRC.pack(
        h.base_offset, batch_length, h.leader_epoch, h.magic, crc32c.crc32c(after_crc)
    )
    return before + after_crc


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at `pos`: (value, position after it)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def read_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    """A length-prefixed field (length -1: null) at `pos`: (its bytes, position after it)."""
    n, pos = read_varint(buf, pos)
    if n < 0:
        return None, pos
    if pos + n > len(buf):
        raise ValueError("field runs past the record")
    return bytes(buf[pos : pos + n]), pos + n


RecordSpan = tuple[int, int, int, int, int]  # ts delta, offset delta, key pos, key len, end


def record_spans(batch: bytes | memoryview) -> tuple[BatchHeader, bytes, Iterator[RecordSpan]]:
    """Walk a batch's records without decoding them: its header, the decompressed
    records, and for each record (timestamp delta, offset delta, where its key starts,
    the key's length (-1: null), where the record ends). The one reader of the record
    framing, for callers that need only some fields (keys, or one key's records)."""
    h = parse_header(batch)
    buf = decompress(h.compression, bytes(batch[HEADER_SIZE : h.size]))

    def spans() -> Iterator[RecordSpan]:
        pos = 0
        for _ in range(h.record_count):
            length, pos = read_varint(buf, pos)
            end = pos + length
            if length <= 0 or end > len(buf):
                raise ValueError("record length out of bounds")
            ts_delta, p = read_varint(buf, pos + 1)  # after the attributes byte
            offset_delta, p = read_varint(buf, p)
            n, p = read_varint(buf, p)
            if p + max(n, 0) > end:
                raise ValueError("key runs past the record")
            yield ts_delta, offset_delta, p, n, end
            pos = end

    return h, buf, spans()


def record_timestamp(h: BatchHeader, ts_delta: int) -> int:
    return (
        h.max_timestamp if h.attributes & TIMESTAMP_TYPE_LOG_APPEND else h.base_timestamp + ts_delta
    )


def value_and_headers(
    buf: bytes, key_pos: int, key_len: int, end: int
) -> tuple[bytes | None, tuple[tuple[str, bytes | None], ...]]:
    """The rest of a record after its key (see record_spans), which must fill it."""
    value, pos = read_bytes(buf, key_pos + max(key_len, 0))
    n_headers, pos = read_varint(buf, pos)
    if n_headers < 0:
        raise ValueError("negative header count")
    headers = []
    for _ in range(n_headers):
        hkey, pos = read_bytes(buf, pos)
        hval, pos = read_bytes(buf, pos)
        headers.append(((hkey or b"").decode("utf-8", "replace"), hval))
    if pos != end:
        raise ValueError("record fields do not fill the record")
    return value, tuple(headers)


def decode_records(batch: bytes) -> list[Record]:
    """Every record of one batch; raises ValueError (or a codec's error) if malformed."""
    h, buf, spans = record_spans(batch)
    out = []
    for ts_delta, offset_delta, key_pos, key_len, end in spans:
        key = None if key_len < 0 else bytes(buf[key_pos : key_pos + key_len])
        value, headers = value_and_headers(buf, key_pos, key_len, end)
        out.append(
            Record(h.base_offset + offset_delta, record_timestamp(h, ts_delta), key, value, headers)
        )
    return out


def encode_varint(n: int) -> bytes:
    """A zigzag varint, as records use for lengths and deltas."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(b: bytes | None) -> bytes:
    return encode_varint(-1) if b is None else encode_varint(len(b)) + b


def encode_batch(
    values: list[bytes | None],
    keys: list[bytes | None] | None = None,
    timestamps: list[int] | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    headers: list[list[tuple[str, bytes]]] | None = None,
    attributes: int = 0,
) -> bytes:
    """An uncompressed RecordBatch v2 at base offset 0, with a correct CRC-32C
    (`attributes`: the transactional and control bits; compression stays none)."""
    import time

    now = int(time.time() * 1000)
    timestamps = timestamps or [now] * len(values)
    keys = keys or [None] * len(values)
    headers = headers or [[] for _ in values]
    base_ts = timestamps[0]
    body = bytearray()
    for i, (k, v, ts, hs) in enumerate(zip(keys, values, timestamps, headers, strict=True)):
        rec = bytearray(
            b"\x00"
            + encode_varint(ts - base_ts)
            + encode_varint(i)
            + _bytes_field(k)
            + _bytes_field(v)
        )
        rec += encode_varint(len(hs))
        for hk, hv in hs:
            rec += _bytes_field(hk.encode()) + _bytes_field(hv)
        body += encode_varint(len(rec)) + rec
    after_crc = _AFTER_CRC.pack(
        attributes,
        len(values) - 1,
        base_ts,
        max(timestamps),
        producer_id,
        producer_epoch,
        base_sequence,
        len(values),
    ) + bytes(body)
    batch_length = 4 + 1 + 4 + len(after_crc)
    return _BEFORE_CRC.pack(0, batch_length, -1, 2, crc32c.crc32c(after_crc)) + after_crc


# Control records (KIP-98): key = version i16, type i16; value = version i16,
# coordinator epoch i32. Type 0 aborts, 1 commits.
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
ABORT = 0
COMMIT = 1


def control_batch(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, now_ms: int
) -> bytes:
    """The marker a transaction coordinator writes to each partition of a transaction."""
    return encode_batch(
        [_CONTROL_VALUE.pack(0, coordinator_epoch)],
        keys=[_CONTROL_KEY.pack(0, COMMIT if commit else ABORT)],
        timestamps=[now_ms],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        attributes=TRANSACTIONAL | CONTROL,
    )


def control_type(batch: bytes | memoryview) -> int:
    """COMMIT or ABORT, from a control batch's one record (tiny, never compressed)."""
    records = decode_records(bytes(batch))
    key = records[0].key if records else None
    if key is None or len(key) < _CONTROL_KEY.size:
        raise ValueError("control batch without a control key")
    return _CONTROL_KEY.unpack_from(key)[1]
