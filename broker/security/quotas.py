"""Client quotas (KIP-13, KIP-124, KIP-546) as a pure core: which quota applies to a
(user, client id) pair in Kafka's order of precedence, and how long a client over it is
throttled.

Precedence (most specific first), as Kafka's ClientQuotaManager: user and client id,
user and default client id, user, default user and client id, default user and default
client id, default user, client id, default client id.

The rate is a token bucket, as Kafka's TokenBucket stat (KIP-599): it fills at the
quota per second up to a burst of (quota.window.num - 1) x quota.window.size.seconds
of quota, each request takes its bytes (or its handler time, in percent-seconds, for
request_percentage), and a bucket below zero throttles for as long as it takes to
refill to zero. A client that waits out every throttle therefore runs at its quota
exactly once the first burst is spent; a sampled windowed rate (Kafka's older Rate)
lets a client burst again each time an old window drops out, which made rates measured
over ten seconds swing between half and twice the quota.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PRODUCE = "producer_byte_rate"
FETCH = "consumer_byte_rate"
REQUEST = "request_percentage"

Entity = tuple[tuple[str, str | None], ...]  # sorted ((type, name or None for default), ...)


def candidates(user: str | None, client_id: str) -> list[Entity]:
    """The entities whose quota could apply, most specific first."""
    out: list[Entity] = []
    if user is not None:
        out += [
            (("client-id", client_id), ("user", user)),
            (("client-id", None), ("user", user)),
            (("user", user),),
            (("client-id", client_id), ("user", None)),
            (("client-id", None), ("user", None)),
            (("user", None),),
        ]
    out += [(("client-id", client_id),), (("client-id", None),)]
    return out


class QuotaTable:
    """Quotas by entity, from the metadata document's list
    ({"entity": [[type, name or None], ...], "values": {key: value}})."""

    def __init__(self, quotas: Iterable[dict]) -> None:
        self._by_entity: dict[Entity, dict[str, float]] = {}
        for q in quotas:
            key = tuple(sorted((t, n) for t, n in q["entity"]))
            self._by_entity[key] = dict(q["values"])
        self.keys = frozenset(k for values in self._by_entity.values() for k in values)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def lookup(self, user: str | None, client_id: str, key: str) -> tuple[Entity, float] | None:
        """The entity whose quota applies and the quota, or None."""
        for entity in candidates(user, client_id):
            values = self._by_entity.get(entity)
            if values is not None and key in values:
                return entity, values[key]
        return None


class TokenBucket:
    """Kafka's TokenBucket: starts full, refills at `quota` per second up to `burst_s`
    seconds of quota; the quota is given with each use, so a changed quota applies at
    once."""

    def __init__(self) -> None:
        self.tokens: float | None = None  # None: full
        self._last = 0.0

    def _refill(self, quota: float, burst: float, now: float) -> None:
        if self.tokens is None:
            self.tokens = burst
        else:
            self.tokens = min(burst, self.tokens + quota * max(0.0, now - self._last))
        self._last = now

    def record(self, amount: float, quota: float, burst_s: float, now: float) -> float:
        """Take `amount`; the seconds to wait until the bucket is back at zero."""
        burst = quota * burst_s
        self._refill(quota, burst, now)
        assert self.tokens is not None
        self.tokens = min(burst, self.tokens - amount)
        return -self.tokens / quota if self.tokens < 0 else 0.0


@dataclass(frozen=True, slots=True)
class QuotaWindow:
    """quota.window.num and quota.window.size.seconds: the burst a bucket holds is
    (num - 1) x size seconds of quota; no throttle is longer than num x size."""

    num: int = 11
    size_s: float = 1.0

    @property
    def burst_s(self) -> float:
        return max(1, self.num - 1) * self.size_s

    @property
    def max_throttle_s(self) -> float:
        return self.num * self.size_s


class QuotaManager:
    """Buckets per (quota key, entity), shared by every connection of that entity; the
    table is replaced when the quotas change."""

    def __init__(self, window: QuotaWindow | None = None) -> None:
        self.window = window or QuotaWindow()
        self.table = QuotaTable(())
        self._buckets: dict[tuple[str, Entity], TokenBucket] = {}

    def applies(self, key: str) -> bool:
        return key in self.table.keys

    def record(self, key: str, user: str | None, client_id: str, amount: float, now: float) -> int:
        """Count `amount` (bytes, or percent-seconds for request_percentage) against the
        quota that applies; the throttle time in ms (0: none applies or within it)."""
        found = self.table.lookup(user, client_id, key)
        if found is None:
            return 0
        entity, quota = found
        bucket = self._buckets.get((key, entity))
        if bucket is None:
            bucket = self._buckets[(key, entity)] = TokenBucket()
        wait = bucket.record(amount, quota, self.window.burst_s, now)
        return int(min(wait, self.window.max_throttle_s) * 1000)

    def over_burst(self, key: str, user: str | None, client_id: str, amount: float) -> bool:
        """Whether `amount` is more than a full bucket of the quota that applies holds."""
        found = self.table.lookup(user, client_id, key)
        return found is not None and amount > found[1] * self.window.burst_s

    def burst(self, key: str, user: str | None, client_id: str) -> float | None:
        """A full bucket of the quota that applies (Kafka's getMaxValueInQuotaWindow)."""
        found = self.table.lookup(user, client_id, key)
        return None if found is None else found[1] * self.window.burst_s
