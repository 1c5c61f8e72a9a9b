"""Which event loop runs the broker: uvloop where it is installed (measured faster on
the hot paths: it writes large Fetch answers with writev instead of copying them into
one growing buffer), else asyncio's own; `--event-loop asyncio` forces the fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(kind: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """(the loop's name, a factory for asyncio.Runner; None: asyncio's default)."""
    if kind not in CHOICES:
        raise ValueError(f"--event-loop must be one of {', '.join(CHOICES)}, not {kind!r}")
    if kind == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ValueError("--event-loop uvloop: uvloop is not installed") from None
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, Any], kind: str = "auto") -> Any:
    name, factory = loop_factory(kind)
    log.info("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
