"""Long polls: futures set when a partition gets new readable data."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from broker.log.partition import Partition


class Watchers:
    def __init__(self) -> None:
        self._waiters: dict[Partition, set[asyncio.Future[None]]] = {}

    def watch(self, partitions: Iterable[Partition]) -> asyncio.Future[None]:
        """A future set when any of `partitions` gets new readable data."""
        fut = asyncio.get_running_loop().create_future()
        for p in partitions:
            self._waiters.setdefault(p, set()).add(fut)
        return fut

    def unwatch(self, fut: asyncio.Future[None], partitions: Iterable[Partition]) -> None:
        for p in partitions:
            waiters = self._waiters.get(p)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[p]

    def wake(self, p: Partition) -> None:
        """`p` changed: new data, or it stopped being readable here."""
        waiters = self._waiters.pop(p, None)
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
