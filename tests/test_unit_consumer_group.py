"""The KIP-848 pure cores: the assignors, reconciliation and the heartbeat state machine
(broker/groups/assignors.py, reconcile.py, consumer_group.py), without a broker."""

from __future__ import annotations

import uuid

import msgpack
import pytest

from broker.groups.assignors import range_, uniform
from broker.groups.consumer_group import (
    ConsumerGroup,
    ConsumerSettings,
    HeartbeatError,
    HeartbeatRequest,
    from_record,
    heartbeat,
    to_record,
)
from broker.groups.reconcile import MemberState, Reconciled, reconcile
from protocol.errors import ErrorCode

pytestmark = pytest.mark.unit

T = uuid.UUID(int=1)
U = uuid.UUID(int=2)
TOPICS = {"t": (T, 12), "u": (U, 4), "__consumer_offsets": (uuid.UUID(int=3), 16)}
S = ConsumerSettings(heartbeat_interval_ms=500, session_timeout_ms=6000)


def parts(assignment) -> set[int]:
    return set(assignment.get(T, ()))


def test_uniform_balances_and_keeps_what_it_can() -> None:
    subs = {m: frozenset({T}) for m in ("a", "b", "c")}
    first = uniform(subs, {T: 12}, {})
    assert sorted(len(parts(a)) for a in first.values()) == [4, 4, 4]
    assert set().union(*(parts(a) for a in first.values())) == set(range(12))
    second = uniform({**subs, "d": frozenset({T})}, {T: 12}, first)
    assert sorted(len(parts(a)) for a in second.values()) == [3, 3, 3, 3]
    for m in ("a", "b", "c"):  # each original member keeps 3 of its 4: only 3 move
        assert parts(second[m]) < parts(first[m])


def test_uniform_gives_each_topic_only_to_its_subscribers() -> None:
    subs = {"a": frozenset({T}), "b": frozenset({T, U})}
    out = uniform(subs, {T: 12, U: 4}, {})
    assert U not in out["a"]
    assert len(out["b"][U]) == 4
    total = {m: sum(len(ps) for ps in a.values()) for m, a in out.items()}
    assert total == {"a": 8, "b": 8}


def test_range_gives_contiguous_ranges_in_member_order() -> None:
    out = range_({m: frozenset({T}) for m in ("b", "a", "c")}, {T: 8}, {})
    assert [sorted(parts(out[m])) for m in ("a", "b", "c")] == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_reconciliation_revokes_before_it_assigns() -> None:
    current = Reconciled(3, 2, MemberState.STABLE, {T: frozenset({0, 1, 2, 3})})
    target = {T: frozenset({2, 3, 4})}
    owners = {4: -1}

    def epoch_of(t, p) -> int:
        return owners.get(p, -1)

    step = reconcile(current, 4, target, {T: frozenset({0, 1, 2, 3})}, epoch_of)
    assert step.state is MemberState.UNREVOKED_PARTITIONS and step.epoch == 3
    assert step.assigned == {T: frozenset({2, 3})}
    assert step.pending_revocation == {T: frozenset({0, 1})}
    # still owning 0 and 1: nothing moves
    assert reconcile(step, 4, target, {T: frozenset({0, 1, 2, 3})}, epoch_of) == step
    # it let them go: the next epoch, with the new partition
    done = reconcile(step, 4, target, {T: frozenset({2, 3})}, epoch_of)
    assert done.state is MemberState.STABLE and done.epoch == 4 and done.previous_epoch == 3
    assert done.assigned == {T: frozenset({2, 3, 4})}


def test_a_partition_another_member_still_holds_is_withheld() -> None:
    current = Reconciled(1, 0, MemberState.STABLE, {})
    held = reconcile(current, 2, {T: frozenset({5, 6})}, {}, lambda t, p: 1 if p == 5 else -1)
    assert held.state is MemberState.UNRELEASED_PARTITIONS and held.epoch == 2
    assert held.assigned == {T: frozenset({6})}
    freed = reconcile(held, 2, {T: frozenset({5, 6})}, {T: frozenset({6})}, lambda t, p: -1)
    assert freed.state is MemberState.STABLE and freed.assigned == {T: frozenset({5, 6})}


def req(member: str, epoch: int, **kw) -> HeartbeatRequest:
    fields = dict(
        group_id="g",
        member_id=member,
        member_epoch=epoch,
        instance_id=None,
        rack_id=None,
        rebalance_timeout_ms=30000 if epoch == 0 else -1,
        subscribed_topic_names=("t",) if epoch == 0 else None,
        subscribed_topic_regex=None,
        server_assignor=None,
        owned={} if epoch == 0 else None,
    )
    fields.update(kw)
    return HeartbeatRequest(**fields)


def beat(g: ConsumerGroup, r: HeartbeatRequest, now: float = 0.0) -> dict:
    return heartbeat(g, r, TOPICS, now, S, new_member_id="generated")


def owned(answer: dict) -> dict:
    return {
        tp["topic_id"]: frozenset(tp["partitions"])
        for tp in (answer["assignment"] or {"topic_partitions": []})["topic_partitions"]
    }


def test_two_members_reconcile_to_a_split_without_sharing_a_partition() -> None:
    g = ConsumerGroup("g")
    a = beat(g, req("a", 0))
    assert a["member_epoch"] == 1 and len(owned(a)[T]) == 12
    b = beat(g, req("b", 0))
    assert b["member_epoch"] == 2 and owned(b) == {}  # a still holds everything
    a2 = beat(g, req("a", 1, owned=owned(a)))
    assert a2["member_epoch"] == 1 and len(owned(a2)[T]) == 6  # revoke first
    a3 = beat(g, req("a", 1, owned=owned(a2)))
    assert a3["member_epoch"] == 2 and a3["assignment"] is None  # unchanged: not resent
    b2 = beat(g, req("b", 2, owned={}))
    assert len(owned(b2)[T]) == 6 and not owned(b2)[T] & owned(a2)[T]
    assert g.state_name == "Stable"


def test_bad_heartbeats_are_refused_and_change_nothing() -> None:
    g = ConsumerGroup("g")
    beat(g, req("a", 0))
    before = to_record(g)
    for r, code in [
        (req("a", 7), ErrorCode.fenced_member_epoch),
        (req("zzz", 1), ErrorCode.unknown_member_id),
        (req("b", 0, subscribed_topic_regex="a(b"), ErrorCode.invalid_regular_expression),
        (req("b", 0, server_assignor="sticky"), ErrorCode.unsupported_assignor),
        (req("b", 0, rebalance_timeout_ms=-1), ErrorCode.invalid_request),
    ]:
        with pytest.raises(HeartbeatError) as e:
            beat(g, r)
        assert e.value.code == code
    assert to_record(g) == before


def test_a_regex_matches_whole_names_and_skips_internal_topics() -> None:
    g = ConsumerGroup("g")
    a = beat(g, req("a", 0, subscribed_topic_names=None, subscribed_topic_regex="t|__.*"))
    assert set(owned(a)) == {T}


def test_a_static_member_rejoins_with_its_assignment_and_epoch() -> None:
    g = ConsumerGroup("g")
    a = beat(g, req("a", 0, instance_id="i1"))
    beat(g, req("a", -2, instance_id="i1"))  # leaving for a while
    epoch = g.group_epoch
    again = beat(g, req("a2", 0, instance_id="i1"))
    assert again["member_id"] == "a2" and again["member_epoch"] == a["member_epoch"]
    assert owned(again) == owned(a) and g.group_epoch == epoch  # no rebalance
    with pytest.raises(HeartbeatError) as e:  # the instance is taken meanwhile
        beat(g, req("a3", 0, instance_id="i1"))
    assert e.value.code == ErrorCode.unreleased_instance_id


def test_silent_members_expire_and_the_group_survives_a_round_trip_through_its_record() -> None:
    g = ConsumerGroup("g")
    beat(g, req("a", 0), now=0.0)
    beat(g, req("b", 0), now=5.0)
    assert [mid for mid, _ in g.expired(6.5, S)] == ["a"]
    restored = from_record("g", msgpack.unpackb(msgpack.packb(to_record(g))), now=100.0)
    assert to_record(restored) == to_record(g)
    assert restored.expired(105.0, S) == []
