"""The uploader: durable WAL data out to the object store, one object per flush.

An upload takes every partition's batches that the WAL has synced and not yet
uploaded (up to a size cap), lays them out as one object and PUTs it. Only after the
PUT succeeds do the partitions' indexes point at the object, the WAL may be trimmed
below it, and (in `object` durability mode) the produce requests waiting on it are
answered. A failed PUT is retried with the same key and the same bytes, so an upload
that in fact landed is recognised rather than written twice with other contents.

Triggers: enough bytes pending (`upload_bytes`), the oldest pending byte getting old
(`upload_interval`), memory pressure (pending data outgrowing the tail cache, after
which it would have to be read back from disk), any acknowledgement waiting in
`object` mode (after a short linger), and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aio.events import wait_event
from s3stream.api import Stream, WalSlice, WalSource
from s3stream.catalog import Catalog
from s3stream.object_format import BlockEntry, ObjectBuilder, PendingBatch, refs_by_partition
from s3stream.store import ObjectStoreError, PreconditionFailed, StoreUnavailable

log = logging.getLogger(__name__)


class UploadsPaused(ObjectStoreError):
    """The broker may not upload now (cluster mode: its lease is not confirmed, so the
    partitions may already be another broker's, who must not miss what it uploads)."""


@dataclass(frozen=True)
class UploadSettings:
    upload_bytes: int = 32 * 1024 * 1024
    upload_interval_s: float = 10.0
    max_object_bytes: int = 128 * 1024 * 1024
    block_bytes: int = 1024 * 1024
    object_mode: bool = False
    object_linger_s: float = 0.005
    memory_pressure_bytes: int = 64 * 1024 * 1024
    snapshot_every: int = 64  # uploads between catalog snapshots


@dataclass(slots=True)
class _Attempt:
    seq: int
    body: bytes
    created_ms: int
    plan: list[tuple[Stream, WalSlice]]
    epochs: list[int]  # each planned stream's leader epoch when planned
    entries: list[BlockEntry]
    target: int  # WAL position the upload covers
    batches: int


class Uploader:
    def __init__(
        self,
        source: WalSource,
        catalog: Catalog,
        settings: UploadSettings,
        *,
        backlog_limit: int,
        on_uploaded: Callable[[int], None],
        on_snapshot_due: Callable[[], None],
        may_upload: Callable[[], bool] = lambda: True,
    ) -> None:
        """`on_uploaded(position)` after each upload, with the new uploaded WAL
        position; `on_snapshot_due()` every `snapshot_every` uploads; `may_upload()`
        False pauses uploads (cluster mode: the lease is not confirmed);
        `backlog_limit` is named in the warning of a failing store."""
        self.source = source
        self.catalog = catalog
        self.store = catalog.store
        self.settings = settings
        self.backlog_limit = backlog_limit
        self._on_uploaded = on_uploaded
        self._on_snapshot_due = on_snapshot_due
        self.may_upload = may_upload
        self.uploaded_position = 0  # WAL position below which everything is uploaded
        self._pending_since: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._lock = asyncio.Lock()  # one upload at a time
        self._unfinished: _Attempt | None = None
        self.failing_since: float | None = None
        self.uploads = 0
        self.bytes_uploaded = 0
        self.failures = 0

    # --- state ------------------------------------------------------------------------

    @property
    def backlog_bytes(self) -> int:
        """WAL bytes not yet in the object store (synced or not)."""
        return max(0, self.source.end_position - self.uploaded_position)

    def wait_uploaded(self, position: int) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        if position <= self.uploaded_position:
            fut.set_result(None)
        else:
            self._waiters.append((position, fut))
            self._wake.set()
        return fut

    def on_durable(self, position: int) -> None:
        """WAL listener: new synced data may be due for upload."""
        if position <= self.uploaded_position:
            return
        first = self._pending_since is None
        if first:
            self._pending_since = time.monotonic()  # the upload loop starts its timer
        pending = position - self.uploaded_position
        if (
            first
            or self.settings.object_mode
            or pending >= self.settings.upload_bytes
            or pending >= self.settings.memory_pressure_bytes
        ):
            self._wake.set()

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uploader")

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._due()
            try:
                await self.upload()
                backoff = 0.1
            except ObjectStoreError as e:
                backoff = await self._failed(e, backoff)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("upload failed unexpectedly; retrying")
                backoff = await self._failed(None, backoff)

    async def _failed(self, error: BaseException | None, backoff: float) -> float:
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning(
                "object store upload failed (%r); retrying, produce continues into the WAL "
                "until %d bytes are waiting",
                error,
                self.backlog_limit,
            )
        await asyncio.sleep(backoff)
        return min(backoff * 2, 5.0)

    async def _due(self) -> None:
        """Return when an upload is due."""
        s = self.settings
        while True:
            self._wake.clear()
            pending = self.source.durable_position - self.uploaded_position
            if pending > 0:
                if (
                    pending >= s.upload_bytes
                    or pending >= s.memory_pressure_bytes
                    or self.failing_since is not None
                ):
                    return
                if s.object_mode:
                    await asyncio.sleep(s.object_linger_s)
                    return
                since = self._pending_since or time.monotonic()
                left = s.upload_interval_s - (time.monotonic() - since)
                if left <= 0:
                    return
                await wait_event(self._wake, left)
            else:
                await self._wake.wait()

    async def upload(self) -> bool:
        """Upload what the WAL has synced, up to the size cap; False if nothing was due."""
        async with self._lock:
            return await self._upload()

    async def _upload(self) -> bool:
        if not self.may_upload():
            raise UploadsPaused("uploads wait until this broker's lease is confirmed")
        attempt = self._unfinished or await self._prepare()
        if attempt is None:
            return False
        # kept until the PUT's outcome is known: an upload that may have landed is only
        # ever retried as exactly itself (same key, same bytes, same offsets)
        self._unfinished = attempt
        try:
            await self._put_until_stored(self.catalog.data_key(attempt.seq), attempt.body)
        except PreconditionFailed:
            log.error(
                "%s holds another writer's object: is a second broker using id %d here?",
                self.catalog.data_key(attempt.seq),
                self.catalog.broker_id,
            )
            self.catalog.abandon(attempt.seq)
            attempt.seq = self.catalog.allocate_seq()
            raise
        self._unfinished = None
        self._commit(attempt)
        return True

    async def _prepare(self) -> _Attempt | None:
        """Plan the next object from what the WAL has synced, and build it."""
        durable = self.source.durable_position
        target = min(durable, self.uploaded_position + self.settings.max_object_bytes)
        if target <= self.uploaded_position:
            return None
        plan: list[tuple[Stream, WalSlice]] = []
        for p in self.source.streams():
            run = p.wal_slice(target)
            if run is not None:
                plan.append((p, run))
        if not plan:
            self._advance(target)
            return None
        created_ms = int(time.time() * 1000)
        # per-batch work on a thread: thousands of small batches would stall the loop
        body, entries = await asyncio.to_thread(self._build, plan, created_ms)
        seq = self.catalog.allocate_seq()
        batches = sum(len(run) for _, run in plan)
        epochs = [p.leader_epoch for p, _ in plan]
        return _Attempt(seq, body, created_ms, plan, epochs, entries, target, batches)

    def _build(
        self, plan: list[tuple[Stream, WalSlice]], created_ms: int
    ) -> tuple[bytes, list[BlockEntry]]:
        """The object's bytes and its index entries (on a worker thread)."""
        builder = ObjectBuilder(self.settings.block_bytes)
        for p, run in plan:
            data = self.source.read_batches(run)
            builder.add_partition(
                p.topic_id,
                p.index,
                [
                    PendingBatch(base, last, ts, d)
                    for base, last, ts, d in zip(
                        run.base_offsets, run.last_offsets, run.max_timestamps, data, strict=True
                    )
                ],
            )
        return builder.finish(created_ms), builder.entries

    def _commit(self, attempt: _Attempt) -> None:
        """The object is stored: point the partitions at it (no await: atomic)."""
        seq, body, created_ms, plan = attempt.seq, attempt.body, attempt.created_ms, attempt.plan
        batches, target = attempt.batches, attempt.target
        obj = self.catalog.add(seq, len(body), created_ms)
        by_partition = refs_by_partition(attempt.entries, obj.id)
        for (p, run), epoch in zip(plan, attempt.epochs, strict=True):
            # a stream dropped meanwhile (cluster mode) may be held again, anew
            if p.holds_at(epoch):
                p.uploaded(run.last_offset, by_partition[(p.topic_id, p.index)])
        self.uploads += 1
        self.bytes_uploaded += len(body)
        self.catalog.uploads_since_snapshot += 1
        if self.failing_since is not None:
            log.info(
                "object store uploads resumed after %.1fs", time.monotonic() - self.failing_since
            )
            self.failing_since = None
        log.debug("uploaded %s: %d bytes, %d batches", obj.key, len(body), batches)
        self._advance(target)
        if self.catalog.uploads_since_snapshot >= self.settings.snapshot_every:
            self._on_snapshot_due()

    async def _put_until_stored(self, key: str, body: bytes) -> None:
        """PUT (create-only) until the outcome is known. A key that exists already must
        be our own earlier attempt, which landed although we never heard so (a lost
        response, a retry inside the client): then it counts as stored."""
        while True:
            if not self.may_upload():
                raise UploadsPaused("uploads wait until this broker's lease is confirmed")
            try:
                await self.store.put(key, body, if_none_match=True)
                return
            except PreconditionFailed:
                if await self._holds(key, body):
                    return
                raise
            except StoreUnavailable:
                self.failures += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("object store unavailable; retrying the upload of %s", key)
                await asyncio.sleep(0.5)

    async def _holds(self, key: str, body: bytes) -> bool:
        """Whether `key` holds `body` (its index and footer, which name its contents)."""
        start = max(0, len(body) - 4096)
        while True:
            try:
                tail = await self.store.get(key, start, None)
                return tail == body[start:]
            except StoreUnavailable:
                await asyncio.sleep(0.5)

    def _advance(self, target: int) -> None:
        self.uploaded_position = max(self.uploaded_position, target)
        self._pending_since = (
            time.monotonic() if self.source.durable_position > self.uploaded_position else None
        )
        while self._waiters and self._waiters[0][0] <= self.uploaded_position:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        self._on_uploaded(self.uploaded_position)

    # --- shutdown ---------------------------------------------------------------------

    async def stop(self, flush_timeout: float) -> None:
        """Stop the loop; upload everything synced, unless the store stays away longer
        than `flush_timeout` (the WAL keeps it then, for the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + flush_timeout
        while self.source.durable_position > self.uploaded_position:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "shutdown: %d bytes not uploaded; they stay in the WAL",
                    self.source.durable_position - self.uploaded_position,
                )
                break
            try:
                await asyncio.wait_for(self.upload(), left)
            except (ObjectStoreError, TimeoutError) as e:
                log.warning("shutdown upload failed: %r", e)
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
