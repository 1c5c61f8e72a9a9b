"""The broker-side assignors of KIP-848 (`group.consumer.assignors`): `uniform` and `range`.

Pure functions: the members' subscriptions, the subscribed topics' partition counts and
the previous target assignment in, the new target assignment out. No I/O, no clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

# topic id -> partitions
Assignment = dict[uuid.UUID, frozenset[int]]
# member id -> the topic ids it subscribes to
Subscriptions = Mapping[str, frozenset[uuid.UUID]]
Assignor = Callable[[Subscriptions, Mapping[uuid.UUID, int], Mapping[str, Assignment]], dict]

TopicPartition = tuple[uuid.UUID, int]


def _as_assignment(parts: set[TopicPartition]) -> Assignment:
    out: dict[uuid.UUID, set[int]] = {}
    for t, p in parts:
        out.setdefault(t, set()).add(p)
    return {t: frozenset(ps) for t, ps in out.items()}


def uniform(
    members: Subscriptions,
    topics: Mapping[uuid.UUID, int],
    previous: Mapping[str, Assignment],
) -> dict[str, Assignment]:
    """Every member gets as many partitions as any other it could trade with (within one),
    and keeps as much of its previous assignment as that allows (sticky)."""
    eligible = {t: sorted(m for m, subs in members.items() if t in subs) for t in topics}
    owned: dict[str, set[TopicPartition]] = {m: set() for m in members}
    owner: dict[TopicPartition, str] = {}
    for m in sorted(members):  # keep what is still valid
        for t, ps in previous.get(m, {}).items():
            if t not in topics or t not in members[m]:
                continue
            for p in sorted(ps):
                if p < topics[t] and (t, p) not in owner:
                    owner[(t, p)] = m
                    owned[m].add((t, p))
    everything = [(t, p) for t in sorted(topics) for p in range(topics[t])]
    for tp in everything:  # the rest, each to the least loaded member that may take it
        if tp in owner or not eligible[tp[0]]:
            continue
        m = min(eligible[tp[0]], key=lambda m: (len(owned[m]), m))
        owner[tp] = m
        owned[m].add(tp)
    # balance: the most loaded member gives a partition to the least loaded one that may
    # take it, while they differ by two or more; each move lowers the sum of squared
    # loads, so this ends
    while _move_one(owned, owner, eligible):
        pass
    return {m: _as_assignment(ps) for m, ps in owned.items()}


def _move_one(
    owned: dict[str, set[TopicPartition]],
    owner: dict[TopicPartition, str],
    eligible: Mapping[uuid.UUID, list[str]],
) -> bool:
    for a in sorted(owned, key=lambda m: (-len(owned[m]), m)):
        for tp in sorted(owned[a]):
            b = min(eligible[tp[0]], key=lambda m: (len(owned[m]), m))
            if len(owned[a]) - len(owned[b]) > 1:
                owned[a].discard(tp)
                owned[b].add(tp)
                owner[tp] = b
                return True
    return False


def range_(
    members: Subscriptions,
    topics: Mapping[uuid.UUID, int],
    previous: Mapping[str, Assignment],
) -> dict[str, Assignment]:
    """Per topic, its subscribers in member-id order take contiguous ranges (the first
    `partitions % subscribers` one more), so members of co-partitioned topics get the same
    partition numbers of each."""
    owned: dict[str, set[TopicPartition]] = {m: set() for m in members}
    for t in sorted(topics):
        subs = sorted(m for m, s in members.items() if t in s)
        if not subs:
            continue
        n = topics[t]
        each, extra = divmod(n, len(subs))
        start = 0
        for i, m in enumerate(subs):
            count = each + (1 if i < extra else 0)
            owned[m].update((t, p) for p in range(start, start + count))
            start += count
    return {m: _as_assignment(ps) for m, ps in owned.items()}


ASSIGNORS: dict[str, Assignor] = {"uniform": uniform, "range": range_}
