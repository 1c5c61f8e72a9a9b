"""The etcd connection, the key layout and the watch loop shared by cluster mode.

aetcd's defaults are unsafe for a long-running broker: without a timeout a hung etcd
blocks a call forever, and gRPC's reconnect backoff (up to two minutes) would keep a
client failing long after etcd is back. `connect()` sets both. A Client belongs to the
event loop that first uses it, so create one per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aetcd
import msgpack

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379

GRPC_OPTIONS: dict[str, Any] = {
    # Reconnect within a second of etcd coming back, whatever the outage's length.
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
}

UNAVAILABLE: tuple[type[Exception], ...] = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    aetcd.WatchTimeoutError,
)
"""What an unreachable or hung etcd raises: retry later, the state may be intact."""


def parse_urls(urls: str) -> list[tuple[str, int]]:
    """`http://host:port[,http://host:port...]` (scheme and port optional) as (host, port)."""
    endpoints = []
    for raw in urls.split(","):
        raw = raw.strip()
        if not raw:
            continue
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        if parts.scheme != "http":
            raise ValueError(f"unsupported etcd URL {raw!r}: only http:// (no TLS) is supported")
        if not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"bad etcd URL {raw!r}: expected http://host:port")
        endpoints.append((parts.hostname, parts.port or DEFAULT_PORT))
    if not endpoints:
        raise ValueError("no etcd URL given")
    return endpoints


def connect(urls: str, timeout: float = 3.0) -> aetcd.Client:
    """A client for the first of `urls`; it connects lazily, on first use.

    aetcd talks to a single endpoint, so the other URLs are only validated: give a
    load-balanced address (or list the healthiest member first) for failover.
    `timeout` bounds every call, and watch creation, in seconds.
    """
    host, port = parse_urls(urls)[0]
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal, as a gRPC target
    return aetcd.Client(host=host, port=port, timeout=timeout, options=dict(GRPC_OPTIONS))


class KeySpace:
    """Every key of one cluster lives under `/strata/<cluster>/`, so clusters can share an
    etcd and a prefix watch never sees another cluster's keys."""

    def __init__(self, cluster: str) -> None:
        if not cluster or "/" in cluster:
            raise ValueError(f"bad cluster name {cluster!r}: non-empty, without '/'")
        self.cluster = cluster
        self.root = f"/strata/{cluster}/".encode()

    def key(self, *parts: str) -> bytes:
        return self.root + "/".join(parts).encode()

    @property
    def brokers(self) -> bytes:
        """The prefix of the broker registrations."""
        return self.key("brokers", "")

    def broker(self, broker_id: int) -> bytes:
        return self.key("brokers", str(broker_id))

    @property
    def controller(self) -> bytes:
        return self.key("controller")


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class PrefixMirror:
    """A local copy of every key under a prefix, kept current by a watch.

    aetcd's watches end for good when etcd restarts, so this one is re-created from the
    revision after the last event seen (no event is lost or repeated); if etcd compacted
    that revision away meanwhile, the prefix is listed again instead. `on_change` gets the
    whole copy after each change.
    """

    def __init__(
        self,
        client: aetcd.Client,
        prefix: bytes,
        on_change: Callable[[dict[bytes, aetcd.KeyValue]], None],
        *,
        retry_delay: float = 0.5,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.items: dict[bytes, aetcd.KeyValue] = {}
        self.revision = 0  # the store revision self.items reflects
        self._on_change = on_change
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """List once (errors propagate, so a caller can refuse to start), then follow."""
        await self._list()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_within(task)

    async def _list(self) -> None:
        listing = await self.client.get_prefix(self.prefix)
        self.items = {kv.key: kv for kv in listing}
        self.revision = listing.header.revision
        self._notify()

    async def _follow(self) -> None:
        stale = False
        failing = False
        while True:
            watch = None
            try:
                if stale:
                    await self._list()
                    stale = False
                watch = await self.client.watch_prefix(
                    self.prefix, start_revision=self.revision + 1
                )
                if failing:
                    log.info("watch on %r resumed at revision %d", self.prefix, self.revision + 1)
                    failing = False
                async for event in watch:
                    self._apply(event)
                # Ends without an error only when the client was closed under us.
                await asyncio.sleep(self._retry_delay)
            except aetcd.RevisionCompactedError:
                log.info("watch on %r: history compacted, listing it again", self.prefix)
                stale = True
            except asyncio.CancelledError:
                if watch is not None:
                    await cancel_quietly(watch)
                raise
            except Exception as e:  # etcd down or hung; keep trying, never die
                if not failing:
                    log.warning("watch on %r lost (%s); retrying", self.prefix, describe(e))
                    failing = True
                await asyncio.sleep(self._retry_delay)

    def _apply(self, event: aetcd.Event) -> None:
        kv = event.kv
        if event.kind == aetcd.EventKind.DELETE:
            self.items.pop(kv.key, None)
        else:
            self.items[kv.key] = kv
        self.revision = max(self.revision, kv.mod_revision)
        self._notify()

    def _notify(self) -> None:
        try:
            self._on_change(self.items)
        except Exception:
            log.exception("change callback for %r failed", self.prefix)


async def cancel_quietly(watch: aetcd.Watch) -> None:
    """Tell etcd to drop the watch; best effort and bounded, the stream may be gone."""
    with contextlib.suppress(Exception):
        await within(watch.cancel(), 1.0)


async def within(coro: Any, timeout: float) -> Any:
    """Await `coro` for at most `timeout` seconds, then leave it running (cancelled) and
    raise TimeoutError. Unlike asyncio.wait_for, this never waits for the cancellation
    to finish: a gRPC call cancelled mid-flight may not end promptly, and a shutdown
    path must stay bounded."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError(f"no answer within {timeout}s")
    return task.result()


async def cancel_within(task: asyncio.Task[Any] | None, timeout: float = 5.0) -> None:
    """Cancel a background task and wait, at most `timeout` seconds, for it to end: a
    task inside a gRPC call may not end promptly, and stopping must stay bounded."""
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("%s did not stop within %.0fs; left behind", task.get_name(), timeout)
        task.add_done_callback(_consume)
    else:
        _consume(task)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def describe(e: BaseException) -> str:
    """For logs: the exception type, and its message if it has one."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
