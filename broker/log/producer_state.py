"""Per-partition idempotent producer state, in the manner of Kafka's ProducerStateManager.

For each producer id: its current epoch and the last few batches' sequence ranges
with the offsets they were given, so a retried batch is answered with its original
offsets instead of being written twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from protocol.errors import ErrorCode
from protocol.records import NO_SEQUENCE, BatchHeader

RETAINED_BATCHES = 5  # what max.in.flight.requests.per.connection allows in flight
_SEQ_MOD = 2**31


@dataclass(slots=True)
class _BatchMeta:
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class _ProducerEntry:
    epoch: int
    last_timestamp: int = -1  # newest batch max timestamp, for producer.id.expiration.ms
    batches: deque[_BatchMeta] = field(default_factory=lambda: deque(maxlen=RETAINED_BATCHES))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE


@dataclass(frozen=True, slots=True)
class SequenceCheck:
    """The verdict on an incoming batch: append it, answer a duplicate, or refuse."""

    error: ErrorCode = ErrorCode.none
    duplicate_of: int | None = None  # base offset the batch was given the first time


APPEND = SequenceCheck()


class ProducerStateTable:
    def __init__(self) -> None:
        self._producers: dict[int, _ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, h: BatchHeader) -> SequenceCheck:
        if not h.is_idempotent:
            return APPEND
        entry = self._producers.get(h.producer_id)
        if entry is None:
            return APPEND  # unknown producer: accept whatever sequence it starts at
        if h.producer_epoch < entry.epoch:
            return SequenceCheck(ErrorCode.invalid_producer_epoch)
        if h.producer_epoch > entry.epoch:
            if h.base_sequence != 0 and not h.is_control:
                return SequenceCheck(ErrorCode.out_of_order_sequence_number)
            return APPEND
        for b in entry.batches:
            if b.first_seq == h.base_sequence and b.last_seq == h.last_sequence:
                return SequenceCheck(duplicate_of=b.base_offset)
        last = entry.last_seq
        if last == NO_SEQUENCE:
            return APPEND
        if h.base_sequence != (last + 1) % _SEQ_MOD:
            return SequenceCheck(ErrorCode.out_of_order_sequence_number)
        return APPEND

    def expire(self, now_ms: int, max_age_ms: int) -> int:
        """Forget producers silent for longer than `max_age_ms` (Kafka's
        producer.id.expiration.ms), so the table does not grow without bound."""
        stale = [
            pid for pid, e in self._producers.items() if now_ms - e.last_timestamp > max_age_ms
        ]
        for pid in stale:
            del self._producers[pid]
        return len(stale)

    def update(self, h: BatchHeader, base_offset: int) -> None:
        """Record an appended batch (also used when replaying the log)."""
        if not h.is_idempotent:
            return
        entry = self._producers.get(h.producer_id)
        if entry is None or h.producer_epoch != entry.epoch:
            entry = _ProducerEntry(h.producer_epoch)
            self._producers[h.producer_id] = entry
        entry.last_timestamp = max(entry.last_timestamp, h.max_timestamp)
        if h.is_control:  # a transaction marker: it carries the epoch, not a sequence
            return
        if entry.batches and entry.batches[-1].base_offset >= base_offset:
            return  # seen already (restored state, then the same batch from the WAL)
        entry.batches.append(
            _BatchMeta(
                h.base_sequence, h.last_sequence, base_offset, base_offset + h.last_offset_delta
            )
        )

    def describe(self) -> list[tuple[int, int, int, int]]:
        """(producer id, epoch, last sequence, last timestamp) of each producer."""
        return [(pid, e.epoch, e.last_seq, e.last_timestamp) for pid, e in self._producers.items()]

    def snapshot(self) -> list:
        """The table as plain lists (stored with the catalog, so the next leader of the
        partition can recognise retries without reading the log)."""
        return [
            [
                pid,
                e.epoch,
                e.last_timestamp,
                [[b.first_seq, b.last_seq, b.base_offset, b.last_offset] for b in e.batches],
            ]
            for pid, e in self._producers.items()
        ]

    def snapshot_at(self, offset: int) -> list:
        """The table as it stood when the log ended at `offset`: only batches wholly
        below it (what the catalog stores beside the uploaded object entries, so the
        next leader after a failover knows every producer, not only the newest few,
        and batches that were never uploaded come back as orphans, not duplicates)."""
        out = []
        for pid, e in self._producers.items():
            kept = [b for b in e.batches if b.last_offset < offset]
            if kept or not e.batches:
                out.append(
                    [
                        pid,
                        e.epoch,
                        e.last_timestamp,
                        [[b.first_seq, b.last_seq, b.base_offset, b.last_offset] for b in kept],
                    ]
                )
        return out

    def restore(self, snapshot: list) -> None:
        for pid, epoch, last_ts, batches in snapshot:
            entry = _ProducerEntry(epoch, last_ts)
            entry.batches.extend(_BatchMeta(*b) for b in batches)
            self._producers[pid] = entry
