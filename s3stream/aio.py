"""Small asyncio helpers shared by the broker's long-running loops and state changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set or `timeout` passes. Unlike wait_for(event.wait()),
    this never swallows a cancellation that arrives as the event is set (Python 3.11's
    wait_for can, which leaves a stopping loop running forever)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


async def run_to_completion(aw: Awaitable[T]) -> T:
    """Await `aw` to its end even if the caller is cancelled meanwhile, then re-raise the
    cancellation. For work that changes state in steps (a conditional write and the
    ETag it returns, a metadata change and its rollback): a cancellation in the middle
    would leave memory and storage disagreeing."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            log.warning("%r failed after its caller was cancelled", task, exc_info=task.exception())
        raise asyncio.CancelledError()
    return task.result()
