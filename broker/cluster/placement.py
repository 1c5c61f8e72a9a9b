"""The controller's decisions, without etcd: who should lead which partition next.

`plan()` looks at the live brokers, the partition assignments and the topics that
should exist, and returns the changes the controller should try, in order:

- keys of deleted topics to remove;
- an assignment for every partition that has none, to the least-loaded live broker;
- for partitions whose leader is gone (lease expired, or released at shutdown), the
  least-loaded live broker, opened from the broker that stored it last (a failover);
  a hand-off towards a broker that has left is called off instead;
- hand-offs (`target`) that even out each topic's leaders over the live brokers, at
  most `max_moves` in flight, so a joining broker takes its share in steps.

The plan assumes each change succeeds. The controller applies it by compare-and-swap;
a change that fails (someone wrote first) changes the key, whose watch brings another
step, planned from what etcd holds then. Pure, so it is unit-tested without etcd.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum

from broker.cluster.assignment import NONE, Assignment, Key


class Kind(Enum):
    DELETE = "delete"  # the topic is gone: remove the key
    CREATE = "create"  # a partition without an assignment gets a leader
    FAILOVER = "failover"  # the leader is gone: another broker leads at epoch + 1
    STAY = "stay"  # the hand-off's target left: the leader keeps the partition
    MOVE = "move"  # the leader is asked to hand the partition to `target`


@dataclass(frozen=True, slots=True)
class Change:
    """Replace `old` (None: the key must not exist) by `new` (None: delete)."""

    kind: Kind
    key: Key
    old: Assignment | None
    new: Assignment | None
    topic: str = "?"


def wanted_partitions(
    topics: Iterable[tuple[bytes, str, int]], committed_ids: Collection[bytes]
) -> dict[Key, str]:
    """(topic id, partition) -> topic name of every partition that should have an
    assignment: those of topics in the committed document (not a change in flight)."""
    return {
        (topic_id, i): name
        for topic_id, name, partitions in topics
        if topic_id in committed_ids
        for i in range(partitions)
    }


def plan(
    live: Iterable[int],
    assignments: Mapping[Key, Assignment],
    wanted: Mapping[Key, str],
    committed_ids: Collection[bytes],
    revision: int,
    max_moves: int,
) -> list[Change]:
    """The changes to make, in order. `wanted` is from `wanted_partitions`; a key of a
    topic not in it is deleted only when the committed document (at `revision`) is
    newer than the key and lacks its topic (a new topic's keys may arrive first)."""
    brokers = sorted(live)
    if not brokers:
        return []
    current = dict(assignments)
    load = Counter({b: 0 for b in brokers})
    for k, a in current.items():
        if k in wanted and a.leader in load:
            load[a.target if a.target in load else a.leader] += 1

    def least_loaded() -> int:
        return min(brokers, key=lambda b: (load[b], b))

    changes: list[Change] = []
    for k in sorted(set(current) - set(wanted)):
        a = current.pop(k)
        if k[0] not in committed_ids and a.revision < revision:
            changes.append(Change(Kind.DELETE, k, a, None))

    for k in sorted(set(wanted) - set(current)):
        leader = least_loaded()
        new = Assignment(leader, 0)
        changes.append(Change(Kind.CREATE, k, None, new, wanted[k]))
        load[leader] += 1
        current[k] = new

    for k, a in sorted(current.items()):
        if a.leader in load:
            if a.target != NONE and a.target not in load:  # the target left: stay
                # (not reflected in `current`: balancing still counts it as moving)
                changes.append(Change(Kind.STAY, k, a, replace(a, target=NONE), wanted.get(k, "?")))
            continue
        leader = least_loaded()
        # opened from the broker that stored it last (its leader may never have)
        new = a.handed_to(leader, a.source)
        changes.append(Change(Kind.FAILOVER, k, a, new, wanted.get(k, "?")))
        load[leader] += 1
        current[k] = new

    changes.extend(_balance(current, wanted, brokers, max_moves))
    return changes


def _balance(
    current: Mapping[Key, Assignment], wanted: Mapping[Key, str], live: list[int], max_moves: int
) -> list[Change]:
    """Hand-offs evening out each topic's leaders, within the budget of moves."""
    moving = sum(1 for a in current.values() if a.target != NONE)
    budget = max_moves - moving
    if budget <= 0 or len(live) < 2:
        return []
    by_topic: dict[str, list[tuple[Key, Assignment]]] = {}
    for k, a in current.items():
        if k in wanted and a.leader in live:
            by_topic.setdefault(wanted[k], []).append((k, a))
    moves: list[Change] = []
    for topic in sorted(by_topic):
        topic_moves = _balance_topic(topic, by_topic[topic], live, budget)
        budget -= len(topic_moves)
        moves.extend(topic_moves)
    return moves


def _balance_topic(
    topic: str, parts: list[tuple[Key, Assignment]], live: list[int], budget: int
) -> list[Change]:
    """Move one partition at a time from the busiest broker to the idlest, until no two
    brokers lead more than one partition apart (or nothing the busiest leads can go)."""
    owner = {k: (a.target if a.target != NONE else a.leader) for k, a in parts}
    counts = Counter({b: 0 for b in live})
    counts.update(owner.values())
    moves: list[Change] = []
    while len(moves) < budget:
        hi = max(live, key=lambda b: (counts[b], -b))
        lo = min(live, key=lambda b: (counts[b], b))
        if counts[hi] - counts[lo] <= 1:
            break
        movable = [(k, a) for k, a in parts if a.leader == hi and a.target == NONE]
        if not movable:
            break
        k, a = movable[len(movable) // 2]
        moves.append(Change(Kind.MOVE, k, a, replace(a, target=lo), topic))
        parts = [(kk, aa) for kk, aa in parts if kk != k]
        counts[hi] -= 1
        counts[lo] += 1
    return moves
