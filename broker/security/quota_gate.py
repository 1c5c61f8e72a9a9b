"""The client quotas of the cluster's metadata document as connections ask them: the
quota table is rebuilt whenever the document's quota list is replaced (it is never
edited in place), and a kind of quota nobody set costs a connection one set lookup."""

from __future__ import annotations

import time
from typing import Protocol

from broker.security.quotas import QuotaManager, QuotaTable


class QuotaSource(Protocol):
    quotas: list[dict]


class QuotaGate:
    def __init__(self, source: QuotaSource, manager: QuotaManager) -> None:
        self._source = source
        self._seen: object = None
        self.manager = manager

    def applies(self, key: str) -> bool:
        quotas = self._source.quotas
        if quotas is not self._seen:
            self._seen = quotas
            self.manager.table = QuotaTable(quotas)
        return self.manager.applies(key)

    def record(self, key: str, principal: str, client_id: str, amount: float) -> int:
        """The throttle time in ms of the quota `key` after `amount` more."""
        user = principal.partition(":")[2] or None
        return self.manager.record(key, user, client_id, amount, time.monotonic())

    def over_burst(self, key: str, principal: str, client_id: str, amount: float) -> bool:
        """Whether `amount` exceeds the whole burst of the quota that applies."""
        user = principal.partition(":")[2] or None
        return self.manager.over_burst(key, user, client_id, amount)

    def burst(self, key: str, principal: str, client_id: str) -> float | None:
        """The most a full bucket of the quota that applies holds, or None."""
        user = principal.partition(":")[2] or None
        return self.manager.burst(key, user, client_id)
