"""One poke that wakes several loops, each through its own event (a shared event would
be cleared by whichever loop woke first)."""

from __future__ import annotations

import asyncio


class Wakeups:
    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []

    def listener(self) -> asyncio.Event:
        """An event set by every poke from now on; its owner clears it."""
        event = asyncio.Event()
        self._events.append(event)
        return event

    def poke(self) -> None:
        for event in self._events:
            event.set()
