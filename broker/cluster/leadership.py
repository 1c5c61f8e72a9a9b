"""Leadership in cluster mode (see broker.leadership): what etcd's assignments and the
membership say, and operator moves through the controller's hand-off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.cluster.assignment import NONE
from broker.cluster.reassignment import led_by, move, ongoing, preferred_leader
from broker.leadership import BrokerAddress, Election, Move, MoveRefused, Quorum
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.cluster.node import ClusterNode
    from broker.log.partition import Partition

_INT32_MAX = 2**31 - 1


class ClusterLeadership:
    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    def serves(self, p: Partition) -> bool:
        return self._node.serves(p)

    def may_ack(self) -> bool:
        """The lease surely holds, so no other broker can have taken the partitions."""
        return self._node.lease_ok()

    def leader_of(self, p: Partition) -> tuple[int, int]:
        return self._node.leader_of(p.topic_id, p.index)

    def brokers(self) -> list[BrokerAddress]:
        return [
            BrokerAddress(b.broker_id, b.host, b.port, b.rack, b.listeners)
            for _, b in sorted(self._node.live().items())
        ]

    def controller_id(self) -> int:
        leader = self._node.election.leader_id
        return -1 if leader is None else leader

    def quorum(self) -> Quorum:
        """The controller seat: its holder, its epoch and the metadata revision."""
        election = self._node.election
        leader = election.leader_id
        return Quorum(
            -1 if leader is None else leader,
            min(election.epoch, _INT32_MAX),
            self._node.meta.revision,
        )

    def moves(self) -> dict[tuple[bytes, int], Move]:
        return {k: Move(a.leader, a.target) for k, a in ongoing(self._node).items()}

    async def move(self, p: Partition, target: int | None) -> bool:
        return await move(self._node, (p.topic_id, p.index), target)

    async def elect_preferred(self, p: Partition) -> Election:
        node = self._node
        k = (p.topic_id, p.index)
        live = sorted(node.live())
        a = node.assignments.get(k)
        if not live or a is None:
            return Election(
                ErrorCode.eligible_leaders_not_available, "No live broker can lead it yet", None
            )
        want = preferred_leader(live, p.index)
        if a.leader == want and a.target == NONE:
            return Election(ErrorCode.election_not_needed, None, None)
        try:
            await move(node, k, want)
        except MoveRefused as e:
            return Election(ErrorCode.preferred_leader_not_available, str(e), None)
        return Election(ErrorCode.none, None, want)

    async def led_by(self, p: Partition, broker_id: int, timeout: float) -> bool:
        return await led_by(self._node, (p.topic_id, p.index), broker_id, timeout)
