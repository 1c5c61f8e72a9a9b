"""One partition's transactions: the ongoing ones, the last stable offset, the aborted index.

A transactional batch opens its producer's transaction here (at its first offset); a
control batch (the coordinator's marker) closes it, and an abort adds the range
(producer, first offset, marker offset) to the aborted index that read_committed
fetches return. The last stable offset (LSO) is the first offset of the oldest
transaction not known to be finished, never past the high watermark: a transaction
whose marker is not durable yet still holds it back.

Persisted with the partition's object entries (the catalog snapshot and hand-off
records) as it stood at the end of the uploaded data, the `horizon`: what the WAL
replays from there is applied again on top, and anything below is ignored, so replay
is idempotent.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finished:
    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool


class TxnIndex:
    def __init__(self, horizon: int = 0) -> None:
        self.horizon = horizon  # offsets below are already reflected here
        self.ongoing: dict[int, int] = {}  # producer id -> first offset of its transaction
        # finished transactions not yet below the horizon, by marker offset: until their
        # marker is durable they still hold the LSO back, and `state_at` needs them
        self._recent: list[Finished] = []
        self._aborted: list[tuple[int, int, int]] = []  # (last, producer id, first), sorted

    def __len__(self) -> int:
        return len(self.ongoing)

    # --- the log --------------------------------------------------------------------

    def data(self, producer_id: int, offset: int) -> None:
        """A transactional data batch at `offset`."""
        if offset >= self.horizon:
            self.ongoing.setdefault(producer_id, offset)

    def marker(self, producer_id: int, offset: int, commit: bool) -> None:
        """A commit or abort marker at `offset`; one without a transaction here (the
        producer wrote nothing to this partition, or it was already closed) changes
        nothing."""
        if offset < self.horizon:
            return
        first = self.ongoing.pop(producer_id, None)
        if first is None:
            return
        self._recent.append(Finished(producer_id, first, offset, not commit))
        if not commit:
            self._aborted.append((offset, producer_id, first))

    # --- reads ----------------------------------------------------------------------

    def last_stable_offset(self, high_watermark: int) -> int:
        lso = high_watermark
        for first in self.ongoing.values():
            lso = min(lso, first)
        # newest first: markers at or past the high watermark are not durable yet
        for f in reversed(self._recent):
            if f.last_offset < high_watermark:
                break
            lso = min(lso, f.first_offset)
        return lso

    def aborted_between(self, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of aborted transactions overlapping [start, end),
        what a read_committed fetch of that range must skip."""
        i = bisect.bisect_left(self._aborted, (start, -(2**63), -(2**63)))
        return [(pid, first) for last, pid, first in self._aborted[i:] if first < end]

    def aborted_ranges(self) -> list[tuple[int, int, int]]:
        """(producer id, first offset, marker offset) of every aborted transaction still
        above the log start (a session replay skips their batches wherever they lie)."""
        return [(pid, first, last) for last, pid, first in self._aborted]

    def first_offset_of(self, producer_id: int) -> int:
        """The first offset of the producer's open transaction here, or -1."""
        return self.ongoing.get(producer_id, -1)

    # --- housekeeping ---------------------------------------------------------------

    def trim(self, log_start: int) -> None:
        """Forget aborted ranges wholly before the log start (retention, DeleteRecords)."""
        i = bisect.bisect_left(self._aborted, (log_start, -(2**63), -(2**63)))
        if i:
            del self._aborted[:i]

    def state_at(self, offset: int) -> list:
        """The index as it stood when the log ended at `offset` (plain lists, stored with
        the object entries); also forgets finished transactions below it."""
        ongoing = {pid: first for pid, first in self.ongoing.items() if first < offset}
        for f in self._recent:
            if f.first_offset < offset <= f.last_offset:
                ongoing[f.producer_id] = f.first_offset
        aborted = [list(a) for a in self._aborted if a[0] < offset]
        self._recent = [f for f in self._recent if f.last_offset >= offset]
        return [offset, sorted(ongoing.items()), aborted]

    @classmethod
    def restore(cls, state: list | None, default_horizon: int) -> TxnIndex:
        """From `state_at`'s lists; None (stored before transactions existed) is an
        empty index at `default_horizon`."""
        if not state:
            return cls(default_horizon)
        horizon, ongoing, aborted = state[:3]  # a cleaned end may follow (Partition)
        index = cls(horizon)
        index.ongoing = {pid: first for pid, first in ongoing}
        index._aborted = sorted((last, pid, first) for last, pid, first in aborted)
        return index
