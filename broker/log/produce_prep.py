"""The CPU-bound look inside produced batches before they are appended, done in a
thread (never on the event loop): recompression for a topic's `compression.type`, and
the key check of compacted topics.

A compacted topic (`cleanup.policy` with `compact`) keeps the latest record per key,
so, as Kafka's LogValidator does, it refuses a batch holding any record without a key:
INVALID_RECORD with one record error per keyless record (its index in the batch).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from broker.log.recompress import RecompressError, recompress_one
from protocol import records
from protocol.record_codec import record_spans

_MAX_SHOWN = 3  # record errors named in the message, as Kafka's broker shows


@dataclass(frozen=True)
class Work:
    data: bytes  # one partition's produced records
    codec: int | None  # the codec the topic wants; None: keep the producer's
    require_keys: bool  # a compacted topic: every record needs a key


class InvalidRecords(ValueError):
    """Records a compacted topic refuses: (index in the batch, why) for each."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = ", ".join(f"{i}: {m}" for i, m in errors[:_MAX_SHOWN])
        super().__init__(
            f"One or more records have been rejected due to {len(errors)} record errors "
            f"in total, and only showing the first {_MAX_SHOWN} errors at most: [{shown}]"
        )


def keyless_records(batch: bytes, topic_partition: str) -> list[tuple[int, str]]:
    """(index, message) for each record of `batch` without a key."""
    _, _, spans = record_spans(batch)
    message = (
        f"Compacted topic cannot accept message without key in topic partition {topic_partition}."
    )
    return [(i, message) for i, span in enumerate(spans) if span[3] < 0]


def prepare_all(
    items: Sequence[tuple[Hashable, Work, str]],
) -> dict[Hashable, bytes | RecompressError | InvalidRecords]:
    """For each (key, work, "topic-partition"): the batch to append instead (recompressed),
    or the error that refuses it. What is not exactly one valid batch, or a control
    batch, is left out: the append path judges it as produced."""
    out: dict[Hashable, bytes | RecompressError | InvalidRecords] = {}
    for key, work, tp in items:
        try:
            batches = records.split_batches(work.data)
            if len(batches) != 1:
                continue
            h = records.validate(batches[0])
        except records.InvalidBatch:
            continue
        if h.is_control:
            continue
        if work.require_keys:
            try:
                keyless = keyless_records(batches[0], tp)
            except Exception as e:  # a codec's or the framing's error
                out[key] = RecompressError(f"records cannot be read: {e}")
                continue
            if keyless:
                out[key] = InvalidRecords(keyless)
                continue
        if work.codec is not None and h.compression != work.codec:
            out[key] = recompress_one(batches[0], work.codec)
    return out
