"""Who answers for what, and how leadership moves: one small interface that the
embedded default and cluster mode implement, so handlers never ask which they run in.

Embedded, this broker leads every partition, is the controller and the whole metadata
quorum, and a move can only name itself. In cluster mode the assignments in etcd say
(see broker.cluster.leadership).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.log.partition import Partition


class BrokerAddress(NamedTuple):
    """A live broker as clients should reach it."""

    broker_id: int
    host: str
    port: int
    rack: str | None
    # (listener name, advertised host, port) of each listener; host/port are the first's
    listeners: tuple[tuple[str, str, int], ...] = ()

    def reachable(self, listener: str | None) -> tuple[str, int]:
        """Where a client on `listener` (a name; None: the first) reaches this broker."""
        for name, host, port in self.listeners:
            if name == listener:
                return host, port
        return self.host, self.port


class Move(NamedTuple):
    """A partition being handed from `leader` to `target`."""

    leader: int
    target: int


class Quorum(NamedTuple):
    """The metadata 'quorum': its leader (-1 for none), epoch and high watermark."""

    leader: int
    epoch: int
    high_watermark: int


class Election(NamedTuple):
    """How a preferred-leader election of one partition starts: an error and message,
    and the broker to wait for when a move started."""

    error: ErrorCode
    message: str | None
    awaited: int | None


class MoveRefused(Exception):
    """A move that cannot start; the message says why."""


class Leadership(Protocol):
    def serves(self, p: Partition) -> bool:
        """Whether this broker takes writes and serves reads for `p` now."""
        ...

    def may_ack(self) -> bool:
        """Whether writes appended here may still be acknowledged."""
        ...

    def leader_of(self, p: Partition) -> tuple[int, int]:
        """(leader broker id or -1, leader epoch) of a partition."""
        ...

    def brokers(self) -> list[BrokerAddress]: ...

    def controller_id(self) -> int: ...

    def quorum(self) -> Quorum: ...

    def moves(self) -> dict[tuple[bytes, int], Move]:
        """Hand-offs in flight, by (topic id, partition)."""
        ...

    async def move(self, p: Partition, target: int | None) -> bool:
        """Hand `p` to broker `target` (None: call off a move in flight). False when
        nothing needed doing; raises MoveRefused when it cannot start."""
        ...

    async def elect_preferred(self, p: Partition) -> Election: ...

    async def led_by(self, p: Partition, broker_id: int, timeout: float) -> bool:
        """Wait until `broker_id` leads `p` (a started move done); False on timeout."""
        ...


class EmbeddedLeadership:
    """The one broker of the embedded default leads everything."""

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config

    def serves(self, p: Partition) -> bool:
        return p.leading

    def may_ack(self) -> bool:
        return True

    def leader_of(self, p: Partition) -> tuple[int, int]:
        return self._config.broker_id, p.leader_epoch

    def brokers(self) -> list[BrokerAddress]:
        c = self._config
        listeners = tuple(
            (lst.name, lst.advertised_host, lst.advertised_port) for lst in c.listeners()
        )
        _, host, port = listeners[0]
        return [BrokerAddress(c.broker_id, host, port, c.rack or None, listeners)]

    def controller_id(self) -> int:
        return self._config.broker_id

    def quorum(self) -> Quorum:
        return Quorum(self._config.broker_id, 1, 0)

    def moves(self) -> dict[tuple[bytes, int], Move]:
        return {}

    async def move(self, p: Partition, target: int | None) -> bool:
        me = self._config.broker_id
        if target is not None and target != me:
            raise MoveRefused(
                f"Strata runs embedded here: broker {me} is the only broker, there is no "
                f"broker {target} to move {p} to"
            )
        return False

    async def elect_preferred(self, p: Partition) -> Election:
        return Election(ErrorCode.election_not_needed, None, None)

    async def led_by(self, p: Partition, broker_id: int, timeout: float) -> bool:
        return broker_id == self._config.broker_id
