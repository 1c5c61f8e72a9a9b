"""Recompression of a batch for a topic's compression.type (the pure part, no broker)."""

from __future__ import annotations

import crc32c
import pytest

from broker.log.recompress import RecompressError, needs_recompression, recompress_all
from protocol import records
from protocol.record_codec import CODECS, decode_records, encode_batch, recompressed

pytestmark = pytest.mark.unit


def _batch() -> bytes:
    values = [
        (f'{{"step": {i}, "text": "' + "tool output " * (i % 40) + '"}').encode()
        for i in range(300)
    ]
    keys = [f"session-{i % 9}".encode() for i in range(300)]
    return encode_batch(
        values,
        keys=keys,
        timestamps=[1_700_000_000_000 + i for i in range(300)],
        producer_id=42,
        producer_epoch=3,
        base_sequence=1000,
        headers=[[("trace", f"t{i}".encode())] for i in range(300)],
        attributes=records.TRANSACTIONAL,
    )


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_recompressed_batch_keeps_its_records_and_header_and_has_a_valid_crc(codec: str) -> None:
    plain = _batch()
    out = recompressed(plain, CODECS[codec])
    h, before = records.validate(out), records.parse_header(plain)
    assert h.compression == CODECS[codec]
    assert h.is_transactional
    same = ("last_offset_delta", "base_timestamp", "max_timestamp", "producer_id")
    same += ("producer_epoch", "base_sequence", "record_count")
    assert all(getattr(h, f) == getattr(before, f) for f in same)
    assert decode_records(out) == decode_records(plain)
    assert recompressed(out, 0) == plain  # and back, byte for byte


def test_snappy_uses_the_xerial_framing_and_lz4_independent_blocks() -> None:
    plain = _batch()
    snappy = recompressed(plain, CODECS["snappy"])[records.HEADER_SIZE :]
    assert snappy.startswith(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01")
    lz4 = recompressed(plain, CODECS["lz4"])[records.HEADER_SIZE :]
    assert lz4[:4] == b"\x04\x22\x4d\x18" and lz4[4] & 0x20  # FLG: block independence


def test_only_batches_of_another_codec_are_recompressed() -> None:
    plain = _batch()
    zstd = recompressed(plain, CODECS["zstd"])
    assert needs_recompression(plain, CODECS["zstd"])
    assert not needs_recompression(zstd, CODECS["zstd"])
    assert not needs_recompression(plain, None)  # compression.type=producer
    corrupt = bytearray(plain)
    corrupt[-1] ^= 0xFF
    garbage = bytearray(zstd[: records.HEADER_SIZE] + b"not zstd at all")
    garbage[8:12] = (len(garbage) - 12).to_bytes(4, "big")
    crc = crc32c.crc32c(bytes(garbage[records.CRC_START :]))
    garbage[17:21] = crc.to_bytes(4, "big")
    out = recompress_all(
        [
            ("plain", plain, 4),
            ("same", zstd, 4),
            ("corrupt", bytes(corrupt), 4),
            ("bad", bytes(garbage), 0),
        ]
    )
    assert records.parse_header(out["plain"]).compression == 4
    assert "same" not in out  # already in the codec
    assert "corrupt" not in out  # left for the append path to refuse (CORRUPT_MESSAGE)
    assert isinstance(out["bad"], RecompressError)
