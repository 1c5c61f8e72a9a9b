"""The event-loop lag probe on a real asyncio loop: a callback that holds the loop shows
up as that much lag, an idle loop shows almost none."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.metrics.loop_lag import LoopLag

pytestmark = pytest.mark.unit


def test_a_blocked_loop_shows_as_lag_and_an_idle_one_does_not() -> None:
    seen: list[float] = []

    async def main() -> None:
        probe = LoopLag(seen.append, interval_s=0.01)
        probe.start()
        await asyncio.sleep(0.2)
        idle = list(seen)
        time.sleep(0.3)  # holds the loop, as blocking work on it would
        await asyncio.sleep(0.05)
        probe.stop()
        n = len(seen)
        await asyncio.sleep(0.05)
        assert len(seen) == n  # stopped: no more wake-ups
        assert len(idle) >= 5
        assert sorted(idle)[len(idle) // 2] < 0.1  # an idle loop wakes about on time
        assert probe.worst >= 0.25

    asyncio.run(main())
    assert max(seen) >= 0.25
