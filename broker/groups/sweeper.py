"""The coordinators' timer: call `sweep(now)` every `interval` seconds until stopped, a
failing sweep logged and the next one run anyway. One loop for the classic, KIP-848 and
share group coordinators."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.2


class Sweeper:
    def __init__(self, sweep: Callable[[float], None], what: str, interval: float = SWEEP_INTERVAL):
        self._sweep = sweep
        self._what = what
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name=f"{self._what} sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self._sweep(time.monotonic())
            except Exception:
                log.exception("%s sweep failed", self._what)
