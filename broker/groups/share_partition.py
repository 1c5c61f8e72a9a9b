"""One share-partition (KIP-932): which records of a topic partition a share group has
handed out, to whom, and until when. Pure: offsets, members and the clock in; acquired
ranges, acknowledgement errors and counts out. No I/O, no asyncio.

The share-partition start offset (SPSO) is the first offset not yet acknowledged or
archived; the end offset (SPEO) is one past the last offset ever acquired. Between them
every offset is in flight: available (to be delivered again), acquired (locked to one
member until a deadline), acknowledged or archived. Offsets at the start that are done
are dropped and the start moves on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from protocol.errors import ErrorCode


class RecordState(IntEnum):
    AVAILABLE = 0
    ACQUIRED = 1
    ACKNOWLEDGED = 2
    ARCHIVED = 4


class AckType(IntEnum):
    GAP = 0  # no record at that offset (a control record, compacted away)
    ACCEPT = 1
    RELEASE = 2
    REJECT = 3
    RENEW = 4  # ShareAcknowledge v2: extend the lock


@dataclass(frozen=True)
class ShareSettings:
    record_lock_duration_ms: int = 30_000
    delivery_count_limit: int = 5
    max_record_locks: int = 2000


@dataclass(slots=True)
class InFlight:
    state: RecordState
    delivery_count: int = 0
    member_id: str = ""
    deadline: float = 0.0


@dataclass
class Counts:
    """What happened, for the metrics: deliveries after the first, lock expiries, records
    archived because their delivery count reached the limit."""

    redeliveries: int = 0
    lock_expiries: int = 0
    delivery_limit_archived: int = 0


@dataclass(eq=False)
class SharePartition:
    start_offset: int
    settings: ShareSettings = field(default_factory=ShareSettings)
    end_offset: int = -1  # set to start_offset on creation
    records: dict[int, InFlight] = field(default_factory=dict)
    state_epoch: int = 0
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        if self.end_offset < self.start_offset:
            self.end_offset = self.start_offset

    # --- reading ----------------------------------------------------------------------

    @property
    def acquired_count(self) -> int:
        return sum(1 for r in self.records.values() if r.state == RecordState.ACQUIRED)

    @property
    def in_flight(self) -> int:
        """Records between start and end not yet acknowledged or archived."""
        return sum(
            1
            for r in self.records.values()
            if r.state in (RecordState.AVAILABLE, RecordState.ACQUIRED)
        )

    def next_fetch_offset(self, log_end: int) -> int | None:
        """Where a fetch should read from: the first available record in flight, else the
        end offset; None when nothing can be acquired (all delivered, or the locks are
        all taken)."""
        if self.acquired_count >= self.settings.max_record_locks:
            return None
        for off in range(self.start_offset, self.end_offset):
            r = self.records.get(off)
            if r is not None and r.state == RecordState.AVAILABLE:
                return off
        return self.end_offset if self.end_offset < log_end else None

    def state_of(self, offset: int) -> RecordState:
        if offset < self.start_offset:
            return RecordState.ACKNOWLEDGED
        r = self.records.get(offset)
        return r.state if r is not None else RecordState.AVAILABLE

    # --- acquiring --------------------------------------------------------------------

    def acquire(
        self, member_id: str, first: int, last: int, max_records: int, now: float
    ) -> list[tuple[int, int, int]]:
        """Lock to `member_id` the available offsets in [first, last] (what the fetch read
        from the log), new ones beyond the end offset included, at most `max_records` and
        within the partition's lock limit. The acquired ranges: (first, last, delivery
        count)."""
        deadline = now + self.settings.record_lock_duration_ms / 1000
        budget = min(max_records, self.settings.max_record_locks - self.acquired_count)
        out: list[list[int]] = []
        off = max(first, self.start_offset)
        while off <= last and budget > 0:
            r = self.records.get(off)
            if off >= self.end_offset:
                r = self.records[off] = InFlight(RecordState.AVAILABLE)
                self.end_offset = off + 1
            if r is not None and r.state == RecordState.AVAILABLE:
                r.state = RecordState.ACQUIRED
                r.member_id = member_id
                r.deadline = deadline
                r.delivery_count += 1
                if r.delivery_count > 1:
                    self.counts.redeliveries += 1
                if out and out[-1][1] == off - 1 and out[-1][2] == r.delivery_count:
                    out[-1][1] = off
                else:
                    out.append([off, off, r.delivery_count])
                budget -= 1
            off += 1
        return [(a, b, c) for a, b, c in out]

    def archive(self, first: int, last: int) -> None:
        """Offsets a fetch must never hand out (control records; under read_committed, the
        records of aborted transactions): archived unless delivered already."""
        for off in range(self.end_offset, first):  # what lies between stays deliverable
            self.records[off] = InFlight(RecordState.AVAILABLE)
        self.end_offset = max(self.end_offset, first)
        for off in range(max(first, self.start_offset), last + 1):
            r = self.records.get(off)
            if off >= self.end_offset:
                self.records[off] = InFlight(RecordState.ARCHIVED)
                self.end_offset = off + 1
            elif r is not None and r.state == RecordState.AVAILABLE:
                r.state = RecordState.ARCHIVED
        self._advance()

    # --- acknowledging ----------------------------------------------------------------

    def acknowledge(
        self, member_id: str, first: int, last: int, types: list[int], now: float = 0.0
    ) -> ErrorCode | None:
        """One acknowledgement batch: `types` has one type for the whole range or one per
        offset. All or nothing: INVALID_RECORD_STATE (nothing changed) unless every offset
        is acquired by `member_id`."""
        if last < first or not types or (len(types) != 1 and len(types) != last - first + 1):
            return ErrorCode.invalid_request
        try:
            kinds = [AckType(t) for t in types]
        except ValueError:
            return ErrorCode.invalid_request
        for off in range(first, last + 1):
            r = self.records.get(off)
            if r is None or r.state != RecordState.ACQUIRED or r.member_id != member_id:
                return ErrorCode.invalid_record_state
        for i, off in enumerate(range(first, last + 1)):
            kind = kinds[0] if len(kinds) == 1 else kinds[i]
            self._settle(self.records[off], kind, now)
        self._advance()
        return None

    def _settle(self, r: InFlight, kind: AckType, now: float) -> None:
        if kind == AckType.RENEW:  # the member keeps it, for another lock duration
            r.deadline = now + self.settings.record_lock_duration_ms / 1000
            return
        if kind == AckType.ACCEPT:
            r.state = RecordState.ACKNOWLEDGED
        elif kind in (AckType.REJECT, AckType.GAP):
            r.state = RecordState.ARCHIVED
        else:
            self._make_available(r)
        r.member_id = ""

    def _make_available(self, r: InFlight) -> None:
        r.member_id = ""
        if r.delivery_count >= self.settings.delivery_count_limit:
            r.state = RecordState.ARCHIVED
            self.counts.delivery_limit_archived += 1
        else:
            r.state = RecordState.AVAILABLE

    def release_member(self, member_id: str) -> int:
        """A member left or was fenced: its acquired records become available again."""
        n = 0
        for r in self.records.values():
            if r.state == RecordState.ACQUIRED and r.member_id == member_id:
                self._make_available(r)
                n += 1
        self._advance()
        return n

    def expire(self, now: float) -> int:
        """Locks past their deadline return their records to available (or archived at the
        delivery limit); how many expired."""
        n = 0
        for r in self.records.values():
            if r.state == RecordState.ACQUIRED and r.deadline <= now:
                self._make_available(r)
                n += 1
        self.counts.lock_expiries += n
        if n:
            self._advance()
        return n

    def _advance(self) -> None:
        while self.start_offset < self.end_offset:
            r = self.records.get(self.start_offset)
            if r is None or r.state not in (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED):
                break
            del self.records[self.start_offset]
            self.start_offset += 1

    # --- administration ---------------------------------------------------------------

    def reset(self, start_offset: int) -> None:
        """AlterShareGroupOffsets (an empty group) or a start offset below the log start:
        forget everything in flight and start at `start_offset`."""
        self.records.clear()
        self.start_offset = self.end_offset = start_offset
        self.state_epoch += 1

    def skip_to(self, log_start: int) -> None:
        """The log's start moved past the share-partition's (retention, DeleteRecords)."""
        if log_start > self.start_offset:
            for off in range(self.start_offset, min(log_start, self.end_offset)):
                self.records.pop(off, None)
            self.start_offset = log_start
            self.end_offset = max(self.end_offset, log_start)

    # --- persistence: the state a new coordinator needs --------------------------------

    def to_record(self) -> dict:
        """Start offset and the in-flight records past it as runs of (first, last, state,
        delivery count); acquired records are written as available (their locks do not
        survive the coordinator), so they come back after a restart."""
        runs: list[list[int]] = []
        for off in range(self.start_offset, self.end_offset):
            r = self.records.get(off)
            if r is None:
                continue
            state = RecordState.AVAILABLE if r.state == RecordState.ACQUIRED else r.state
            if runs and runs[-1][1] == off - 1 and runs[-1][2:] == [state, r.delivery_count]:
                runs[-1][1] = off
            else:
                runs.append([off, off, int(state), r.delivery_count])
        return {
            "v": 1,
            "start": self.start_offset,
            "end": self.end_offset,
            "epoch": self.state_epoch,
            "runs": runs,
        }

    @classmethod
    def from_record(cls, v: dict, settings: ShareSettings) -> SharePartition:
        sp = cls(v["start"], settings, end_offset=v["end"], state_epoch=v["epoch"])
        for first, last, state, count in v["runs"]:
            for off in range(first, last + 1):
                sp.records[off] = InFlight(RecordState(state), count)
        return sp
