"""Sans-IO protocol pieces: framing, batch headers, versioned response building."""

from __future__ import annotations

import struct

import pytest

from protocol import records
from protocol.codec import build_response, decode_request, encode_response
from protocol.errors import ErrorCode, FrameTooLarge, InvalidFrame
from protocol.framing import FrameDecoder, frame
from protocol.record_codec import decode_records
from tests.wire import encode_request, make_batch


def test_frames_split_at_any_byte_boundary() -> None:
    payloads = [b"a" * 10, b"", b"b" * 1000]
    stream = b"".join(frame(p) for p in payloads)
    for step in (1, 3, 7, len(stream)):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), step):
            got += dec.feed(stream[i : i + step])
        assert got == payloads
        assert dec.pending == 0


def test_negative_and_oversized_sizes_are_refused_before_buffering() -> None:
    with pytest.raises(InvalidFrame):
        FrameDecoder().feed(struct.pack(">i", -5))
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame=1024).feed(struct.pack(">i", 1025))


def test_batch_header_rewrite_keeps_crc_valid() -> None:
    batch = make_batch([b"a", b"b", b"c"], producer_id=7, producer_epoch=1, base_sequence=4)
    h = records.validate(batch)
    assert (h.record_count, h.last_offset_delta, h.producer_id, h.base_sequence) == (3, 2, 7, 4)
    assert h.last_sequence == 6
    moved = records.with_base_offset(batch, 1234, 5)
    h2 = records.validate(moved)
    assert (h2.base_offset, h2.leader_epoch, h2.last_offset) == (1234, 5, 1236)


def test_corrupt_batch_is_detected() -> None:
    batch = bytearray(make_batch([b"payload"]))
    batch[-2] ^= 0x01
    with pytest.raises(records.CorruptBatch):
        records.validate(bytes(batch))
    with pytest.raises(records.InvalidBatch):
        records.validate(make_batch([b"x"])[:-1])


def test_log_append_time_restamps_and_recomputes_crc() -> None:
    batch = make_batch([b"a", b"b"], timestamps=[1000, 2000])
    stamped = records.with_log_append_time(batch, 99_000)
    h = records.validate(stamped)
    assert h.max_timestamp == 99_000
    assert h.attributes & records.TIMESTAMP_TYPE_LOG_APPEND
    assert [(r.offset, r.timestamp) for r in decode_records(stamped)] == [(0, 99_000), (1, 99_000)]


def test_record_timestamps_of_uncompressed_batch() -> None:
    batch = records.with_base_offset(
        make_batch([b"a", b"b", b"c"], timestamps=[10, 30, 20]), 100, 0
    )
    assert [(r.offset, r.timestamp) for r in decode_records(batch)] == [
        (100, 10),
        (101, 30),
        (102, 20),
    ]


def test_request_roundtrip_and_versioned_response() -> None:
    raw = encode_request(
        3, 5, {"topics": None, "allow_auto_topic_creation": False}, correlation_id=42
    )
    req = decode_request(raw[4:])
    assert (req.header.api_key, req.header.api_version, req.header.correlation_id) == (3, 5, 42)
    assert req.body.topics is None
    # The same dict serves an old and a new version; fields a version lacks are dropped.
    body = {
        "throttle_time": 0,
        "brokers": [],
        "cluster_id": "c",
        "controller_id": 0,
        "topics": [],
        "cluster_authorized_operations": 0,
        "error_code": ErrorCode.none,
    }
    for version in (0, 5, 12, 13):
        out = encode_response(42, build_response(3, version, body))
        assert struct.unpack(">ii", out[:8])[1] == 42
        assert struct.unpack(">i", out[:4])[0] == len(out) - 4


def test_a_not_ongoing_transaction_describes_with_start_time_minus_one() -> None:
    """DescribeTransactions' transaction_start_time is non-nullable; -1 (no transaction
    ongoing, as Kafka sends it) must encode as -1 rather than fail."""
    state = {
        "error_code": 0,
        "transactional_id": "t",
        "transaction_state": "CompleteCommit",
        "transaction_timeout": 60000,
        "transaction_start_time": -1,
        "producer_id": 7,
        "producer_epoch": 0,
        "topics": [],
    }
    body = {"throttle_time": 0, "transaction_states": [state]}
    out = encode_response(1, build_response(65, 0, body))
    # ... start time (i64), producer id (i64), epoch (i16), no topics, two empty tag buffers
    start, producer_id = struct.unpack(">qq", out[-21:-5])
    assert (start, producer_id) == (-1, 7)
