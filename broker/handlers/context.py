"""What a handler may use: the few collaborators it needs, built once in broker/app.py.

Handlers get this instead of the broker, so what a handler can touch is listed here
(the log, the groups and their offsets, who leads what, the settings, the request
counters, and the transaction coordinator with its marker writer) rather than found
by walking from one object to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from broker.broker_configs import BrokerSettings
    from broker.fetch_sessions import FetchSessionCache
    from broker.groups.coordinator import GroupCoordinator
    from broker.groups.offset_store import OffsetStore
    from broker.groups.share_state import ShareStates
    from broker.leadership import Leadership
    from broker.log.manager import LogManager
    from broker.security.guard import Security
    from broker.txn.coordinator import TransactionCoordinator
    from broker.txn.markers import MarkerWriter
    from broker.zone_reads import Zones


class TopicCounters(Protocol):
    def appended(self, size: int, records: int) -> None: ...

    @property
    def bytes_out(self) -> _Counter: ...


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class RequestCounters(Protocol):
    """The per-topic and per-error counters handlers keep (broker.metrics)."""

    def topic(self, name: str) -> TopicCounters: ...

    def partition_error(self, api_key: int, code: int) -> None: ...

    def fetched_by_rack(self, broker_rack: str, client_rack: str, size: int) -> None: ...


@dataclass(frozen=True, slots=True)
class HandlerContext:
    logs: LogManager
    groups: GroupCoordinator
    offsets: OffsetStore
    leadership: Leadership
    settings: BrokerSettings
    counters: RequestCounters
    transactions: TransactionCoordinator
    txn_markers: MarkerWriter
    security: Security
    shares: ShareStates  # share-partitions and share sessions (KIP-932)
    fetch_sessions: FetchSessionCache
    zones: Zones | None = None  # zone-aware reads (client.rack); None: not configured
