"""Event-loop lag: how late a timer on the loop fires (its actual wake-up minus the one
it was scheduled for). Whatever holds the loop (a slow callback, a long encode, a GC
pause, blocking I/O) delays every request and ack by as much, so its histogram shows
whether latency comes from the disk or from the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL_S = 0.05


class LoopLag:
    """A timer re-armed every `interval_s`; each wake-up's lateness goes to `observe`
    (seconds). A plain callback, not a task: nothing to schedule but the timer itself."""

    def __init__(self, observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
        self.observe = observe
        self.interval_s = interval_s
        self.worst = 0.0  # the largest lag seen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.interval_s
        self._timer = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        lag = max(0.0, self._loop.time() - self._due)  # may fire a clock tick early
        self.worst = max(self.worst, lag)
        self.observe(lag)
        self._arm()
