"""A topic's `compression.type`: which produced batches need another codec, and the
recompression itself (CPU-bound: run it in a thread, never on the event loop).

As in Kafka, `producer` keeps every batch as sent; any other value rewrites a batch
whose codec differs (`uncompressed` decompresses). Only the records' compression, the
codec bits, batchLength and the CRC change: offsets, timestamps, producer id, epoch,
sequence and the transactional bit are kept, so idempotence and transactions are as
if the producer had used the topic's codec.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from protocol import records
from protocol.record_codec import CODECS, recompressed

_ATTRIBUTES_LOW = records.CRC_START + 1  # the attributes' low byte holds the codec


def wanted_codec(compression_type: str) -> int | None:
    """The codec a topic asks for, or None for `producer` (keep the batch's own)."""
    return CODECS.get(compression_type)


def needs_recompression(data: bytes, codec: int | None) -> bool:
    """A cheap look at the first batch's codec bits (the rest is checked in the thread)."""
    if codec is None or len(data) < records.HEADER_SIZE:
        return False
    return data[_ATTRIBUTES_LOW] & records.COMPRESSION_MASK != codec


class RecompressError(ValueError):
    """A batch whose records cannot be decompressed or re-encoded."""


def recompress_all(
    items: Sequence[tuple[Hashable, bytes, int]],
) -> dict[Hashable, bytes | RecompressError]:
    """For each (key, the partition's records, wanted codec): the batch in that codec, or
    the error that makes it invalid. A request that is not exactly one valid batch, a
    control batch, or one already in the codec is left out: the append path judges it
    as produced (CORRUPT_MESSAGE for a bad CRC is checked here before anything changes)."""
    out: dict[Hashable, bytes | RecompressError] = {}
    for key, data, codec in items:
        try:
            batches = records.split_batches(data)
            if len(batches) != 1:
                continue
            h = records.validate(batches[0])
        except records.InvalidBatch:
            continue
        if h.is_control or h.compression == codec:
            continue
        out[key] = recompress_one(batches[0], codec)
    return out


def recompress_one(batch: bytes, codec: int) -> bytes | RecompressError:
    """One valid batch in `codec`, or the error that makes its records unreadable."""
    try:
        return recompressed(batch, codec)
    except Exception as e:  # any codec's own error: the records are not readable
        return RecompressError(f"cannot recompress the batch to codec {codec}: {e}")
