"""Awaiting work to its end even when the caller is cancelled meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


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
