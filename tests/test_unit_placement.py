"""The controller's placement planner, without etcd: what it decides for a cluster state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.cluster.assignment import NONE, Assignment, Key
from broker.cluster.placement import Change, Kind, plan, wanted_partitions

pytestmark = pytest.mark.unit

T1, T2 = b"\x01" * 16, b"\x02" * 16


def apply(assignments: Mapping[Key, Assignment], changes: list[Change]) -> dict[Key, Assignment]:
    """What etcd holds once every change of a plan succeeded."""
    out = dict(assignments)
    for c in changes:
        assert out.get(c.key) == c.old, f"{c} does not start from what is stored"
        if c.new is None:
            del out[c.key]
        else:
            out[c.key] = c.new
    return out


def complete_moves(assignments: Mapping[Key, Assignment]) -> dict[Key, Assignment]:
    """Each leader asked to hand over does so (what PartitionFollower._release writes)."""
    return {
        k: a.handed_to(a.target, a.leader) if a.target != NONE else a
        for k, a in assignments.items()
    }


def leaders(assignments: Mapping[Key, Assignment], topic_id: bytes) -> Counter[int]:
    return Counter(a.leader for k, a in assignments.items() if k[0] == topic_id)


def plan_for(
    live: list[int],
    assignments: Mapping[Key, Assignment],
    topics: list[tuple[bytes, str, int]],
    *,
    committed: set[bytes] | None = None,
    revision: int = 10,
    max_moves: int = 100,
) -> list[Change]:
    ids = {t[0] for t in topics} if committed is None else committed
    return plan(live, assignments, wanted_partitions(topics, ids), ids, revision, max_moves)


def test_every_partition_of_a_new_topic_gets_the_least_loaded_live_broker() -> None:
    existing = {(T1, 0): Assignment(1, 0)}  # broker 1 leads one already
    changes = plan_for([1, 2, 3], existing, [(T1, "old", 1), (T2, "new", 4)])
    assert [c.kind for c in changes] == [Kind.CREATE] * 4
    assert all(c.old is None and c.topic == "new" for c in changes)
    # each pick goes to the broker leading least so far, the lowest id on a tie
    assert [c.new.leader for c in changes if c.new] == [2, 3, 1, 2]
    assert all(c.new is not None and c.new.epoch == 0 for c in changes)


def test_a_topic_not_yet_in_the_committed_document_gets_no_assignments() -> None:
    assert plan_for([1, 2], {}, [(T1, "in-flight", 3)], committed=set()) == []


def test_no_live_broker_means_no_decision() -> None:
    stored = {(T1, 0): Assignment(7, 3, source=7)}
    assert plan_for([], stored, [(T1, "t", 1)]) == []


def test_a_partition_whose_leader_is_gone_fails_over_at_the_next_epoch_from_its_source() -> None:
    stored = {
        (T1, 0): Assignment(3, 4, source=3),  # broker 3's lease expired
        (T1, 1): Assignment(1, 2, source=1),
        (T1, 2): Assignment(NONE, 5, source=2),  # released at shutdown by broker 2
    }
    changes = plan_for([1, 2], stored, [(T1, "t", 3)])
    failovers = [c for c in changes if c.kind is Kind.FAILOVER]
    assert [c.key for c in failovers] == [(T1, 0), (T1, 2)]
    first, second = (c.new for c in failovers)
    assert first == Assignment(2, 5, source=3)  # the idlest live broker, opened from 3
    assert second == Assignment(1, 6, source=2)
    after = apply(stored, changes)
    assert all(a.leader in (1, 2) for a in after.values())


def test_a_hand_off_to_a_broker_that_left_is_called_off_and_the_leader_keeps_it() -> None:
    stored = {(T1, 0): Assignment(1, 2, source=1, target=4)}  # broker 4 is gone
    changes = plan_for([1, 2], stored, [(T1, "t", 1)])
    assert changes == [Change(Kind.STAY, (T1, 0), stored[(T1, 0)], Assignment(1, 2, source=1), "t")]


def test_a_joining_broker_takes_its_share_at_most_max_moves_at_a_time() -> None:
    stored = {(T1, i): Assignment(1 + i % 2, 1, source=1 + i % 2) for i in range(8)}
    changes = plan_for([1, 2, 3], stored, [(T1, "t", 8)], max_moves=2)
    assert [c.kind for c in changes] == [Kind.MOVE, Kind.MOVE]
    assert all(c.new is not None and c.new.target == 3 for c in changes)
    assert {c.old.leader for c in changes if c.old} == {1, 2}  # from the busiest each time
    # while those two are in flight, the budget is spent: nothing more is asked
    assert plan_for([1, 2, 3], apply(stored, changes), [(T1, "t", 8)], max_moves=2) == []


def test_moves_even_out_each_topic_to_within_one_partition() -> None:
    stored = {(T1, i): Assignment(1, 1, source=1) for i in range(7)}
    stored |= {(T2, i): Assignment(2, 1, source=2) for i in range(2)}
    state = stored
    for _ in range(10):
        changes = plan_for([1, 2, 3], state, [(T1, "a", 7), (T2, "b", 2)])
        if not changes:
            break
        assert {c.kind for c in changes} == {Kind.MOVE}
        state = complete_moves(apply(state, changes))
    assert plan_for([1, 2, 3], state, [(T1, "a", 7), (T2, "b", 2)]) == []
    assert sorted(leaders(state, T1).values()) == [2, 2, 3]
    assert max(leaders(state, T2).values()) == 1
    moved = [a for k, a in state.items() if k[0] == T1 and a.leader != 1]
    assert all(a.epoch == 2 and a.source == 1 for a in moved)  # opened from broker 1


def test_one_live_broker_moves_nothing() -> None:
    stored = {(T1, i): Assignment(1, 0) for i in range(4)}
    assert plan_for([1], stored, [(T1, "t", 4)]) == []


def test_a_partition_already_moving_counts_for_its_target_and_is_not_moved_again() -> None:
    stored = {
        (T1, 0): Assignment(1, 1, source=1, target=2),
        (T1, 1): Assignment(1, 1, source=1),
    }
    # broker 1 leads both, but one is on its way to 2: balanced already
    assert plan_for([1, 2], stored, [(T1, "t", 2)]) == []


def test_keys_of_a_deleted_topic_go_once_the_document_without_it_is_newer() -> None:
    stored = {
        (T1, 0): Assignment(1, 0, revision=5),  # the topic was deleted at revision 10
        (T2, 0): Assignment(1, 0, revision=12),  # written with a topic the document lacks yet
    }
    changes = plan_for([1], stored, [], committed=set(), revision=10)
    assert changes == [Change(Kind.DELETE, (T1, 0), stored[(T1, 0)], None)]


def test_keys_of_a_topic_in_the_committed_document_are_never_deleted() -> None:
    # more partitions stored than the topic has (say it shrank in flight): not the
    # planner's to delete while the topic is committed
    stored = {(T1, 0): Assignment(1, 0, revision=1), (T1, 1): Assignment(1, 0, revision=1)}
    changes = plan_for([1], stored, [(T1, "t", 1)], committed={T1}, revision=10)
    assert changes == []


def test_the_same_state_gives_the_same_plan() -> None:
    stored = {(T1, i): Assignment(i % 3 + 1, 1, source=i % 3 + 1) for i in range(9)}
    topics = [(T1, "t", 12), (T2, "u", 5)]
    assert plan_for([1, 2, 4], stored, topics) == plan_for([4, 2, 1], dict(stored), topics)


_brokers = st.integers(min_value=1, max_value=6)


@st.composite
def cluster_states(draw: st.DrawFn) -> tuple[list[int], dict[Key, Assignment], list]:
    live = sorted(draw(st.sets(_brokers, min_size=1, max_size=5)))
    topics = [
        (bytes([t]) * 16, f"topic-{t}", draw(st.integers(min_value=1, max_value=12)))
        for t in range(1, draw(st.integers(min_value=1, max_value=3)) + 1)
    ]
    stored: dict[Key, Assignment] = {}
    for topic_id, _, n in topics:
        for i in range(n):
            if draw(st.booleans()):
                leader = draw(st.one_of(_brokers, st.just(NONE)))
                target = draw(st.one_of(st.just(NONE), _brokers))
                stored[(topic_id, i)] = Assignment(
                    leader, draw(st.integers(0, 5)), leader, target if target != leader else NONE
                )
    return live, stored, topics


@settings(max_examples=200, deadline=None)
@given(cluster_states(), st.integers(min_value=1, max_value=4))
@example(  # a move in flight uses the whole budget: the first plan is empty
    ([1, 2], {(T1, 0): Assignment(1, 0, source=1, target=2)}, [(T1, "topic-1", 1)]), 1
)
def test_planning_and_applying_until_nothing_is_left_leaves_every_topic_balanced(
    state: tuple[list[int], dict[Key, Assignment], list], max_moves: int
) -> None:
    live, stored, topics = state
    for _ in range(100):
        changes = plan_for(live, stored, topics, max_moves=max_moves)
        # settled: nothing to plan and no hand-off in flight (a leader completes one
        # without the controller: a move in the first state may leave no plan at all)
        if not changes and all(a.target == NONE for a in stored.values()):
            break
        assert len([c for c in changes if c.kind is Kind.MOVE]) <= max_moves
        stored = complete_moves(apply(stored, changes))
    else:
        pytest.fail("the plans never settled")
    for topic_id, _, n in topics:
        assert {i for t, i in stored if t == topic_id} == set(range(n))
        counts = leaders(stored, topic_id)
        assert set(counts) <= set(live)
        per_broker = [counts.get(b, 0) for b in live]
        assert max(per_broker) - min(per_broker) <= 1
    assert all(a.target == NONE for a in stored.values())
