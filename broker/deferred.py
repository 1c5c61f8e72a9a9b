"""The answer of a handler whose request has taken effect and now only waits."""

from __future__ import annotations

from collections.abc import Awaitable


class Deferred:
    """Returned by a handler once everything its request changes is applied, when what
    is left holds no state: a produce waiting for its fsync or upload, a long-poll
    Fetch, a JoinGroup or SyncGroup parked until the rebalance completes. The
    connection starts the next request meanwhile and sends this one's answer (what
    `wait` returns: a response body, or None for none) in its turn. If the client
    leaves, the wait is cancelled, which must leave nothing half done."""

    __slots__ = ("wait",)

    def __init__(self, wait: Awaitable[dict | None]) -> None:
        self.wait = wait
