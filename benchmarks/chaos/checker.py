"""The history checker (pure): what the cluster acknowledged, what consumers read while
faults ran, the committed offsets sampled, and the final log read after every fault was
healed, against the durability contract.

Per partition the log is append-only and the final read is its truth. The rules:

- every acknowledged record is in the final log exactly once (else `lost`, `duplicated`),
  at the offset its acknowledgement gave (else `misplaced`; an acknowledgement that came
  without an offset is only counted, `acks_without_offset`), and each producer's records
  are in the order it sent them (else `reordered`);
- a record a consumer read is in the final log at the offset it was read at (else, if the
  record is nowhere in the final log, `phantom`: read, then it vanished; if it is elsewhere,
  `divergent`);
- a group's committed offset never moves backwards (`commit_regressions`);
- in `wal` mode a failover (a broker killed, paused past its lease, cut off from etcd) may
  move what the broker acknowledged but had not uploaded: such a record may come back at
  a new offset, after later ones, and (documented) twice. Those are counted as
  `relocated` / `relocated_duplicates`, allowed only for records acknowledged inside a
  window around a lease-losing fault; outside a window they are violations, and a record
  that never comes back is `lost` in every mode (`unreadable` instead if its partition
  could not be read to the end: unavailable, which also fails the run).

Also derived: the unavailability windows per partition (gaps between acknowledgements
longer than `gap_s` while producers were running).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

VIOLATIONS = (
    "lost",
    "duplicated",
    "misplaced",
    "reordered",
    "phantom",
    "divergent",
    "commit_regressions",
)


@dataclass(frozen=True)
class Ack:
    value: str
    producer: str  # one producer instance (a new instance after a fatal error is another)
    seq: int  # its send order
    partition: int
    offset: int | None  # None: the client was told of success without an offset
    t: float


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    value: str
    t: float


@dataclass(frozen=True)
class CommitSample:
    partition: int
    offset: int
    t: float


@dataclass
class History:
    durability: str
    acks: list[Ack] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    commits: list[CommitSample] = field(default_factory=list)
    final: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # p -> [(off, value)]
    windows: list[tuple[float, float]] = field(default_factory=list)  # wal loss windows
    unreadable: list[int] = field(default_factory=list)  # partitions not read to the end
    produce_span: tuple[float, float] = (0.0, 0.0)


@dataclass
class Verdict:
    acknowledged: int = 0
    final_records: int = 0
    reads: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    duplicated: list[dict[str, Any]] = field(default_factory=list)
    misplaced: list[dict[str, Any]] = field(default_factory=list)
    reordered: list[dict[str, Any]] = field(default_factory=list)
    phantom: list[dict[str, Any]] = field(default_factory=list)
    divergent: list[dict[str, Any]] = field(default_factory=list)
    commit_regressions: list[dict[str, Any]] = field(default_factory=list)
    relocated: list[dict[str, Any]] = field(default_factory=list)
    relocated_duplicates: list[dict[str, Any]] = field(default_factory=list)
    unacknowledged_present: int = 0
    acks_without_offset: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    unavailability: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(getattr(self, k) for k in VIOLATIONS) and not self.unreadable

    def counts(self) -> dict[str, int]:
        out = {"acknowledged": self.acknowledged, "final_records": self.final_records}
        out["reads"] = self.reads
        for k in (*VIOLATIONS, "relocated", "relocated_duplicates"):
            out[k] = len(getattr(self, k))
        out["unacknowledged_present"] = self.unacknowledged_present
        out["acks_without_offset"] = len(self.acks_without_offset)
        out["unreadable"] = len(self.unreadable)
        return out

    def as_dict(self, limit: int = 50) -> dict[str, Any]:
        """Counts, plus at most `limit` offenders of each kind."""
        out: dict[str, Any] = {"ok": self.ok, **self.counts()}
        out["offenders"] = {
            k: getattr(self, k)[:limit]
            for k in (
                *VIOLATIONS,
                "relocated",
                "relocated_duplicates",
                "acks_without_offset",
                "unreadable",
            )
            if getattr(self, k)
        }
        out["unavailability"] = {
            str(p): [[round(a, 2), round(b, 2)] for a, b in w]
            for p, w in self.unavailability.items()
        }
        return out


def _in_windows(t: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def check(h: History, gap_s: float = 1.0) -> Verdict:
    v = Verdict(acknowledged=len(h.acks), reads=len(h.reads))
    wal = h.durability == "wal"
    # where each value sits in the final log
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    at: dict[tuple[int, int], str] = {}
    for p, records in h.final.items():
        for off, value in records:
            where[value].append((p, off))
            at[(p, off)] = value
            v.final_records += 1
    acked = {a.value: a for a in h.acks}
    v.unacknowledged_present = sum(1 for value in where if value not in acked)

    def permitted(a: Ack) -> bool:
        return wal and _in_windows(a.t, h.windows)

    for a in h.acks:
        places = where.get(a.value, [])
        row = {"partition": a.partition, "offset": a.offset, "value": a.value, "t": round(a.t, 2)}
        if a.offset is None:
            v.acks_without_offset.append(row)
        if not places:
            if a.partition in h.unreadable:
                v.unreadable.append(row)  # not lost as far as anyone can tell: unavailable
            else:
                v.lost.append(row)
            continue
        if len(places) > 1:
            rec = {**row, "found_at": [o for _, o in places]}
            (v.relocated_duplicates if permitted(a) else v.duplicated).append(rec)
        if a.offset is not None and (a.partition, a.offset) not in places:
            rec = {**row, "found_at": [o for _, o in places]}
            (v.relocated if permitted(a) else v.misplaced).append(rec)
    # per producer instance and partition, the final offsets follow the send order
    by_stream: dict[tuple[str, int], list[Ack]] = defaultdict(list)
    for a in h.acks:
        by_stream[(a.producer, a.partition)].append(a)
    for (_, p), acks in by_stream.items():
        last = -1
        for a in sorted(acks, key=lambda a: a.seq):
            places = [o for q, o in where.get(a.value, []) if q == p]
            if not places or permitted(a):
                continue
            off = min(places)
            if off < last:
                v.reordered.append({"partition": p, "offset": off, "value": a.value, "after": last})
            last = max(last, off)
    # reads
    for r in h.reads:
        if at.get((r.partition, r.offset)) == r.value or r.partition in h.unreadable:
            continue
        row = {"partition": r.partition, "offset": r.offset, "value": r.value}
        if r.value not in where:
            v.phantom.append(row)
        elif not (r.value in acked and permitted(acked[r.value])):
            v.divergent.append({**row, "found_at": [o for _, o in where[r.value]]})
    # committed offsets
    high: dict[int, CommitSample] = {}
    for c in sorted(h.commits, key=lambda c: c.t):
        if c.offset < 0:
            continue
        prev = high.get(c.partition)
        if prev is not None and c.offset < prev.offset:
            v.commit_regressions.append(
                {"partition": c.partition, "offset": c.offset, "was": prev.offset, "t": c.t}
            )
        if prev is None or c.offset >= prev.offset:
            high[c.partition] = c
    v.unavailability = unavailability(h.acks, h.produce_span, gap_s)
    return v


def unavailability(
    acks: Iterable[Ack], span: tuple[float, float], gap_s: float
) -> dict[int, list[tuple[float, float]]]:
    """Per partition, the stretches within `span` longer than `gap_s` without an ack."""
    times: dict[int, list[float]] = defaultdict(list)
    for a in acks:
        times[a.partition].append(a.t)
    out: dict[int, list[tuple[float, float]]] = {}
    for p, ts in sorted(times.items()):
        ts.sort()
        edges = [span[0], *ts, span[1]]
        out[p] = [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b - a > gap_s]
    return out
