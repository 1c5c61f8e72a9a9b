"""KIP-848 reconciliation of one member towards its target assignment, after Kafka's
CurrentAssignmentBuilder. Pure: the member's current state, its target and who still
holds which partition in; the member's next state out.

Revoke before assign: a member that must give partitions up stays at its epoch with
them pending revocation until it reports (in its owned partitions) that it let them go;
only then does it move to the target epoch. A partition of its target still held by
another member (assigned to it, or pending its revocation) is withheld until released.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from broker.groups.assignors import Assignment


class MemberState(Enum):
    STABLE = "stable"
    UNREVOKED_PARTITIONS = "unrevoked_partitions"
    UNRELEASED_PARTITIONS = "unreleased_partitions"


@dataclass(frozen=True)
class Reconciled:
    epoch: int
    previous_epoch: int
    state: MemberState
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)


# (topic id, partition) -> epoch of the member holding it, or -1 if nobody does
PartitionEpoch = Callable[[uuid.UUID, int], int]


def owns_any(owned: Assignment | None, parts: Assignment) -> bool:
    """Whether the member's reported partitions still include any of `parts` (unknown
    (not reported): assume it does)."""
    if owned is None:
        return True
    return any(owned.get(t, frozenset()) & ps for t, ps in parts.items())


def is_subset(small: Assignment, big: Assignment) -> bool:
    return all(ps <= big.get(t, frozenset()) for t, ps in small.items())


def _clean(a: dict[uuid.UUID, set[int]]) -> Assignment:
    return {t: frozenset(ps) for t, ps in a.items() if ps}


def reconcile(
    current: Reconciled,
    target_epoch: int,
    target: Assignment,
    owned: Assignment | None,
    partition_epoch: PartitionEpoch,
) -> Reconciled:
    """The member's next state, given what it reported owning in this heartbeat."""
    if current.state == MemberState.UNREVOKED_PARTITIONS:
        if owns_any(owned, current.pending_revocation):
            return current  # still waiting for it to let them go
        return _next(current, current.epoch, target_epoch, target, owned, partition_epoch)
    if current.state == MemberState.STABLE and current.epoch == target_epoch:
        return current
    return _next(current, current.epoch, target_epoch, target, owned, partition_epoch)


def _next(
    current: Reconciled,
    epoch: int,
    target_epoch: int,
    target: Assignment,
    owned: Assignment | None,
    partition_epoch: PartitionEpoch,
) -> Reconciled:
    kept: dict[uuid.UUID, set[int]] = {}
    revoke: dict[uuid.UUID, set[int]] = {}
    gained: dict[uuid.UUID, set[int]] = {}
    unreleased = False
    for t in {*target, *current.assigned}:
        want = target.get(t, frozenset())
        have = current.assigned.get(t, frozenset())
        kept[t] = set(have & want)
        revoke[t] = set(have - want)
        for p in sorted(want - have):
            if partition_epoch(t, p) == -1:
                gained.setdefault(t, set()).add(p)
            else:
                unreleased = True
    pending = _clean(revoke)
    if pending and owns_any(owned, pending):
        # give up first, at the current epoch; new partitions come after
        return Reconciled(
            epoch, current.previous_epoch, MemberState.UNREVOKED_PARTITIONS, _clean(kept), pending
        )
    for t, ps in gained.items():
        kept.setdefault(t, set()).update(ps)
    state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
    previous = epoch if target_epoch != epoch else current.previous_epoch
    return Reconciled(target_epoch, previous, state, _clean(kept), {})
