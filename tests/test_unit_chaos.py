"""The chaos harness's pure parts: the history checker finds each kind of violation in a
synthetic history (and passes a clean one), and the fault schedule is a function of its seed."""

from __future__ import annotations

import pytest

from benchmarks.chaos.checker import Ack, CommitSample, History, Read, check
from benchmarks.chaos.proxy import error_response
from benchmarks.chaos.schedule import KINDS, make_schedule

pytestmark = pytest.mark.unit


def clean(durability: str = "object") -> History:
    """Two producers, two partitions, five records each, all read back once at their offsets."""
    h = History(durability=durability, produce_span=(0.0, 6.0))
    offsets = {0: 0, 1: 0}
    t = 0.0
    for seq in range(10):
        for prod in ("a", "b"):
            p = seq % 2
            t += 0.1
            value = f"{prod}-{seq}"
            h.acks.append(Ack(value, prod, seq, p, offsets[p], t))
            h.reads.append(Read(p, offsets[p], value, t + 0.05))
            offsets[p] += 1
    h.final = {p: [] for p in (0, 1)}
    for a in sorted(h.acks, key=lambda a: a.offset):
        h.final[a.partition].append((a.offset, a.value))
    h.commits = [CommitSample(0, 2, 1.0), CommitSample(0, 5, 2.0), CommitSample(1, 3, 2.0)]
    return h


def test_a_clean_history_passes() -> None:
    v = check(clean())
    assert v.ok, v.as_dict()
    assert v.counts()["acknowledged"] == 20 and v.counts()["final_records"] == 20


def test_an_acknowledged_record_missing_from_the_log_is_lost() -> None:
    h = clean()
    h.final[0] = [r for r in h.final[0] if r[0] != 3]
    h.reads = [r for r in h.reads if (r.partition, r.offset) != (0, 3)]
    v = check(h)
    assert [(x["partition"], x["offset"]) for x in v.lost] == [(0, 3)]
    assert not v.ok


def test_a_record_twice_in_the_log_is_duplicated() -> None:
    h = clean()
    h.final[1].append((10, h.final[1][2][1]))
    v = check(h)
    assert len(v.duplicated) == 1 and v.duplicated[0]["found_at"] == [2, 10]


def test_records_out_of_send_order_are_reordered_and_misplaced() -> None:
    h = clean()
    (o1, v1), (o2, v2) = h.final[0][0], h.final[0][2]  # a-0 and a-2: same producer
    h.final[0][0], h.final[0][2] = (o1, v2), (o2, v1)
    h.reads = []
    v = check(h)
    assert len(v.reordered) == 1 and v.reordered[0]["value"] == "a-2"
    assert {x["value"] for x in v.misplaced} == {"a-0", "a-2"}


def test_a_read_of_a_record_that_vanished_is_a_phantom() -> None:
    h = clean()
    h.reads.append(Read(1, 99, "ghost", 3.0))
    v = check(h)
    assert [x["value"] for x in v.phantom] == ["ghost"]
    assert not v.lost


def test_a_read_of_a_record_at_another_offset_is_divergent() -> None:
    h = clean()
    h.reads.append(Read(0, 1, "a-0", 3.0))
    v = check(h)
    assert [x["offset"] for x in v.divergent] == [1]


def test_a_committed_offset_moving_backwards_is_caught() -> None:
    h = clean()
    h.commits.append(CommitSample(0, 4, 3.0))
    h.commits.append(CommitSample(1, -1001, 3.0))  # no commit yet: not a regression
    v = check(h)
    assert v.commit_regressions == [{"partition": 0, "offset": 4, "was": 5, "t": 3.0}]


def _relocate(h: History) -> None:
    """wal failover: b-9 (partition 1, offset 9) comes back at the end, after a new record."""
    h.final[1] = [r for r in h.final[1] if r[1] != "b-9"] + [(9, "c-0"), (10, "b-9")]


def test_wal_mode_allows_a_relocated_record_only_inside_a_failover_window() -> None:
    h = clean("wal")
    _relocate(h)
    h.reads = [r for r in h.reads if r.value != "b-9"]
    h.windows = [(1.5, 2.5)]  # b-9 was acked at 2.0
    v = check(h)
    assert v.ok, v.as_dict()
    assert [x["value"] for x in v.relocated] == ["b-9"]
    h.windows = [(3.0, 4.0)]
    v = check(h)
    assert [x["value"] for x in v.misplaced] == ["b-9"] and not v.ok


def test_object_mode_allows_no_relocation_even_in_a_window() -> None:
    h = clean("object")
    _relocate(h)
    h.windows = [(0.0, 10.0)]
    v = check(h)
    assert [x["value"] for x in v.misplaced] == ["b-9"] and not v.relocated


def test_a_record_that_never_comes_back_is_lost_in_wal_mode_too() -> None:
    h = clean("wal")
    h.final[1] = [r for r in h.final[1] if r[1] != "b-9"]
    h.windows = [(0.0, 10.0)]
    assert [x["value"] for x in check(h).lost] == ["b-9"]


def test_gaps_between_acks_are_reported_as_unavailability() -> None:
    h = clean()
    h.produce_span = (0.0, 9.0)
    v = check(h, gap_s=1.0)
    # the last ack is at 2.0: each partition is unavailable from then to 9.0
    assert all(ws and ws[-1][1] == 9.0 for ws in v.unavailability.values())


def test_the_schedule_is_a_function_of_its_seed_and_deals_every_kind() -> None:
    a = make_schedule(27, 7, [1, 2, 3], 3.0)
    assert a == make_schedule(27, 7, [1, 2, 3], 3.0)
    assert a != make_schedule(27, 8, [1, 2, 3], 3.0)
    assert sorted(f.kind for f in a) == sorted(KINDS * 3)
    assert all(f.seconds > 3.0 for f in a if f.kind == "sigstop")
    only = make_schedule(5, 1, [1, 2, 3], 3.0, kinds=["kill9"], outage_s=60)
    assert {f.kind for f in only} == {"kill9"}
    exact = make_schedule(0, 3, [1, 2, 3], 3.0, counts={"kill9": 4, "s3_down": 2}, outage_s=60)
    assert sorted(f.kind for f in exact) == ["kill9"] * 4 + ["s3_down"] * 2
    assert all(f.seconds == 60 for f in exact if f.kind == "s3_down")
    with pytest.raises(ValueError):
        make_schedule(1, 1, [1], 3.0, kinds=["meteor"])


def test_the_proxy_answers_s3_errors_in_s3s_format() -> None:
    raw = error_response(503)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Slow Down")
    assert b"<Code>SlowDown</Code>" in body and f"Content-Length: {len(body)}".encode() in head


def test_an_acknowledgement_without_an_offset_is_counted_not_misplaced() -> None:
    h = clean()
    a = h.acks[0]
    h.acks[0] = Ack(a.value, a.producer, a.seq, a.partition, None, a.t)
    v = check(h)
    assert v.ok and len(v.acks_without_offset) == 1


def test_records_of_a_partition_that_could_not_be_read_are_unreadable_not_lost() -> None:
    h = clean()
    h.final[1] = h.final[1][:2]
    h.unreadable = [1]
    v = check(h)
    assert not v.lost and len(v.unreadable) == 8 and not v.ok
