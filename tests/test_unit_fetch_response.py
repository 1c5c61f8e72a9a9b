"""The struct-layout Fetch response encoder against kio's, byte for byte, for every
version the broker serves, with records given as one buffer or as several."""

from __future__ import annotations

import uuid

import pytest

from protocol.codec import build_response, encode_response
from protocol.errors import ErrorCode
from protocol.fetch_response import MAX_VERSION, MIN_VERSION, encode_fetch_response

pytestmark = pytest.mark.unit

TOPIC_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _partition(index: int, records, aborted=None, error=ErrorCode.none, preferred=-1) -> dict:
    return {
        "partition_index": index,
        "error_code": error,
        "high_watermark": 1000 + index,
        "last_stable_offset": 900 + index,
        "log_start_offset": 7,
        "aborted_transactions": aborted,
        "preferred_read_replica": preferred,
        "records": records,
    }


def _bodies(version: int) -> list[dict]:
    key = (lambda n: {"topic_id": TOPIC_ID}) if version >= 13 else (lambda n: {"topic": n})
    batch_a, batch_b = b"A" * 300, bytes(range(256)) * 3
    many = [_partition(i, [batch_a, memoryview(batch_b)]) for i in range(140)]  # > 127
    return [
        {"throttle_time": 0, "error_code": ErrorCode.none, "session_id": 0, "responses": []},
        {
            "throttle_time": 5,
            "error_code": ErrorCode.invalid_fetch_session_epoch,
            "session_id": 0,
            "responses": [],
            "node_endpoints": [],
        },
        {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "session_id": 987654,
            "responses": [
                {
                    **key("orders"),
                    "partitions": [
                        _partition(0, [batch_a, batch_b]),
                        _partition(1, b""),
                        _partition(2, None, error=ErrorCode.offset_out_of_range),
                        _partition(
                            3,
                            memoryview(batch_b),
                            aborted=[
                                {"producer_id": 42, "first_offset": 3},
                                {"producer_id": 43, "first_offset": 9},
                            ],
                        ),
                        _partition(4, b"", aborted=[], preferred=2),
                    ],
                },
                {**key("t" * 200), "partitions": many},
            ],
            "node_endpoints": [],
        },
    ]


def _kio(correlation_id: int, version: int, body: dict) -> bytes:
    flat = {
        **body,
        "responses": [
            {
                **t,
                "partitions": [
                    {
                        **p,
                        "records": None
                        if p["records"] is None
                        else b"".join(bytes(r) for r in p["records"])
                        if isinstance(p["records"], list)
                        else bytes(p["records"]),
                    }
                    for p in t["partitions"]
                ],
            }
            for t in body["responses"]
        ],
    }
    return bytes(encode_response(correlation_id, build_response(1, version, flat)))


@pytest.mark.parametrize("version", range(MIN_VERSION, MAX_VERSION + 1))
def test_the_fast_fetch_encoder_writes_exactly_what_kio_writes(version: int) -> None:
    for i, body in enumerate(_bodies(version)):
        parts, size = encode_fetch_response(100 + i, version, body)
        got = b"".join(bytes(p) for p in parts)
        assert size == len(got)
        assert got == _kio(100 + i, version, body), f"v{version} body {i}"


def test_record_buffers_are_passed_on_not_copied() -> None:
    batch = bytearray(b"x" * 10_000)
    view = memoryview(batch)
    body = {
        "throttle_time": 0,
        "error_code": 0,
        "session_id": 0,
        "responses": [{"topic": "t", "partitions": [_partition(0, [view])]}],
    }
    parts, _ = encode_fetch_response(1, 12, body)
    assert any(p is view for p in parts)
