"""Operator moves of partition leadership in cluster mode: reassignments and elections.

A partition's only replica is its leader (the bucket holds the data), so reassigning
it to `[N]` means broker N leads it next. That is the controller's own move: set
`target` on the partition's key and the leader hands the partition over (see
broker.cluster.node). The controller keeps balancing afterwards, so a move that
leaves a topic's leaders uneven by more than one is evened out again.

The preferred leader of partition i is the i-th live broker in id order, round robin:
an even spread the controller's balancing leaves alone, and what preferred election
moves partitions back to after manual moves.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from broker.cluster import assignment as asg
from broker.cluster.assignment import NONE, Assignment, Key
from broker.leadership import MoveRefused

if TYPE_CHECKING:
    from broker.cluster.node import ClusterNode


def preferred_leader(live: list[int], index: int) -> int:
    return sorted(live)[index % len(live)]


def ongoing(node: ClusterNode) -> dict[Key, Assignment]:
    """Partitions being handed over now, by key."""
    return {k: a for k, a in node.assignments.items() if a.target != NONE}


async def move(node: ClusterNode, k: Key, target: int | None) -> bool:
    """Ask the leader of `k` to hand it to `target` (None: call off a move in flight).
    False when nothing needed doing; raises MoveRefused when it cannot start."""
    for _ in range(10):
        a = node.assignments.get(k)
        if a is None:
            raise MoveRefused("the partition has no assignment yet; try again")
        if target is None:
            if a.target == NONE:
                return False
            new = replace(a, target=NONE)
        else:
            if not node.membership.is_live(target):
                raise MoveRefused(f"broker {target} is not a live broker of this cluster")
            if a.leader == target and a.target in (NONE, target):
                return False
            if not node.membership.is_live(a.leader):
                raise MoveRefused(f"leader {a.leader} is gone: the controller is placing it")
            new = replace(a, target=NONE if a.leader == target else target)
        ok, now = await asg.swap(node.client, node.keys, k, a, new)
        if now is not None:
            node.assignments[k] = now
        if ok:
            node.controller.poke()
            return True
    raise MoveRefused("the partition's assignment kept changing; try again")


async def led_by(node: ClusterNode, k: Key, broker_id: int, timeout: float) -> bool:
    """Wait until `broker_id` leads `k` per etcd (the hand-off done)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        a = node.assignments.get(k)
        if a is not None and a.leader == broker_id and a.target == NONE:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
