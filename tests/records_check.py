"""What every client test checks: every produced record came back, intact, in order."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Rec:
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int
    partition: int
    offset: int


def assert_same_records(produced: list[Rec], consumed: list[Rec]) -> None:
    """Each partition's consumed records equal the acknowledged ones, offset by offset."""
    assert len(consumed) == len(produced), f"consumed {len(consumed)} of {len(produced)} records"
    by_part: dict[int, list[Rec]] = defaultdict(list)
    for r in consumed:
        by_part[r.partition].append(r)
    for part, recs in by_part.items():
        offsets = [r.offset for r in recs]
        assert offsets == sorted(offsets), f"partition {part} consumed out of order"
    expected = {(r.partition, r.offset): r for r in produced}
    for r in consumed:
        want = expected.get((r.partition, r.offset))
        assert want is not None, f"unexpected record at {r.partition}/{r.offset}"
        assert r == want, f"record at {r.partition}/{r.offset} differs: {r} != {want}"
