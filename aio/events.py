"""Waiting on an asyncio.Event with a timeout, without swallowing a cancellation."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set or `timeout` passes. Unlike wait_for(event.wait()),
    this never swallows a cancellation that arrives as the event is set (Python 3.11's
    wait_for can, which leaves a stopping loop running forever)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
