"""The write-ahead log: appends on the event loop, writes and syncs on two threads.

Appends only buffer. A writer task writes whatever accumulated; a syncer task calls
fdatasync in a loop, each sync covering everything written before it began (group
commit). The two overlap, so the sync rate adapts to the load instead of capping it.
Positions are logical byte offsets across all segments, so a position names one
entry for good.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from wal.entry import HEADER_SIZE, WalEntry, decode_entries, encode_header
from wal.segment import fsync_dir, list_segments, segment_path

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


def _timed_fdatasync(fd: int) -> float:
    started = time.perf_counter()
    os.fdatasync(fd)
    return time.perf_counter() - started


class WalFailure(Exception):
    """The log could not be written or synced; nothing after this is acknowledged."""


class WalFull(WalFailure):
    """The WAL's disk is full: appends are refused until a write succeeds again (what
    was queued before is kept and written then). Not sticky, unlike WalFailure."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
FULL_RETRY_S = 0.5  # how often a write stalled on a full disk is tried again


class _NoSpace(Exception):
    """A write ran out of space; `rest` is what it did not write, in order."""

    def __init__(self, error: OSError, rest: list[tuple[int, bytes]]) -> None:
        super().__init__(error)
        self.error = error
        self.rest = rest


class TrimmedRead(LookupError):
    """A read of a position whose segment retention has already deleted."""


class WriteAheadLog:
    def __init__(
        self,
        directory: Path,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        sync_observer: Callable[[float, int], None] | None = None,
    ) -> None:
        """`sync_observer(seconds, bytes made durable)`: called on the event loop after
        each sync (metrics)."""
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._segments: list[int] = []  # base positions, ascending
        self._end = 0  # logical end of appended data
        self._durable = 0  # logical end of synced data
        self._active_base = 0
        self._pending: list[tuple[int, bytes]] = []  # (segment base, bytes) not yet written
        self._pending_bytes = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._listeners: list[Callable[[int], None]] = []
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._sync_wakeup: asyncio.Event | None = None
        self._written = 0  # logical end of data written to files (maybe not yet synced)
        self._fd_lock = threading.Lock()  # guards _write_fd between writer and syncer threads
        self._read_lock = threading.Lock()  # _read_fds, _read_users and trimming
        self._read_users: dict[int, int] = {}  # segment base -> reads in progress
        self._write_fd: int | None = None
        self._write_base: int | None = None
        self._read_fds: dict[int, int] = {}
        self._failure: BaseException | None = None
        self._full: OSError | None = None  # the last write found the disk full
        self.full_stalls = 0  # times writes stalled on a full disk
        self.syncs = 0
        self.bytes_synced = 0
        self.sync_observer = sync_observer

    # --- recovery ---------------------------------------------------------------------

    def recover(self, on_entry: Callable[[WalEntry], None]) -> None:
        """Replay every valid entry in order; cut a torn or corrupt tail.

        Blocking: call before serving (or on a thread). A bad entry ends the valid
        log there: that segment is truncated and any later segments are removed,
        since nothing after a gap can be trusted to be contiguous.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        bases = list_segments(self.directory)
        end = 0
        for i, base in enumerate(bases):
            path = segment_path(self.directory, base)
            data = path.read_bytes()
            entries, valid = decode_entries(memoryview(data), base)
            for entry in entries:
                on_entry(entry)
            end = base + valid
            if valid < len(data):
                dropped = (
                    len(data)
                    - valid
                    + sum(segment_path(self.directory, b).stat().st_size for b in bases[i + 1 :])
                )
                level = logging.WARNING if i == len(bases) - 1 else logging.ERROR
                log.log(
                    level,
                    "WAL segment %s: invalid entry at byte %d; cutting the log there "
                    "(%d bytes dropped, never acknowledged if this is a torn tail)",
                    path.name,
                    valid,
                    dropped,
                )
                with open(path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
                for later in bases[i + 1 :]:
                    segment_path(self.directory, later).unlink()
                fsync_dir(self.directory)  # those must not come back after the cut
                bases = bases[: i + 1]
                break
        if not bases:
            segment_path(self.directory, 0).touch()
            fsync_dir(self.directory)
            bases = [0]
        self._segments = bases
        self._active_base = bases[-1]
        self._end = self._durable = self._written = end

    # --- appending --------------------------------------------------------------------

    @property
    def end_position(self) -> int:
        return self._end

    @property
    def durable_position(self) -> int:
        return self._durable

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def add_durable_listener(self, listener: Callable[[int], None]) -> None:
        """Called on the event loop with the new durable position after every sync."""
        self._listeners.append(listener)

    def append(
        self, topic_id: bytes, partition: int, leader_epoch: int, base_offset: int, batch: bytes
    ) -> tuple[int, int]:
        """Queue one batch; returns (position of the batch bytes, end position of the entry)."""
        if self._failure is not None:
            raise WalFailure("write-ahead log failed earlier") from self._failure
        if self._full is not None:
            raise WalFull(f"the WAL's disk is full ({self._full.strerror}); retry later")
        header = encode_header(topic_id, partition, leader_epoch, base_offset, batch)
        size = len(header) + len(batch)
        if self._end - self._active_base >= self.segment_bytes:
            self._active_base = self._end
            self._segments.append(self._end)
        self._pending.append((self._active_base, header))
        self._pending.append((self._active_base, batch))
        start = self._end
        self._end += size
        self._pending_bytes += size
        if self._wakeup is not None:
            self._wakeup.set()
        return start + HEADER_SIZE, self._end

    def wait_durable(self, position: int) -> asyncio.Future[None]:
        """A future resolved once everything up to `position` is synced."""
        fut = asyncio.get_running_loop().create_future()
        if self._failure is not None:
            fut.set_exception(WalFailure("write-ahead log failed"))
        elif position <= self._durable:
            fut.set_result(None)
        else:
            self._waiters.append((position, fut))
        return fut

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._sync_wakeup = asyncio.Event()
        self._flusher = asyncio.create_task(self._write_loop(), name="wal-writer")
        self._syncer = asyncio.create_task(self._sync_loop(), name="wal-syncer")

    async def _write_loop(self) -> None:
        """Write whatever accumulated, then let the syncer know; never waits for a sync."""
        assert self._wakeup is not None and self._sync_wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            chunks, self._pending = self._pending, []
            target = self._end
            self._pending_bytes = 0
            try:
                await asyncio.to_thread(self._write, chunks)
            except _NoSpace as e:
                # nothing is lost: what was not written goes back in front of what was
                # appended meanwhile, and is tried again until the disk has room; new
                # appends are refused (retriable) until then
                self._pending = e.rest + self._pending
                self._pending_bytes += sum(len(c) for _, c in e.rest)
                if self._full is None:
                    self.full_stalls += 1
                    log.error(
                        "WAL write failed (%s); refusing appends until the disk has room "
                        "(%d bytes kept to write then)",
                        e.error,
                        self._pending_bytes,
                    )
                self._full = e.error
                await asyncio.sleep(FULL_RETRY_S)
                self._wakeup.set()
                continue
            except BaseException as e:
                self._fail(e)
                raise
            if self._full is not None:
                log.warning("WAL writes resumed: the disk has room again")
                self._full = None
            self._written = target
            self._sync_wakeup.set()

    async def _sync_loop(self) -> None:
        """fdatasync in a loop: each sync covers everything written before it began.

        Writing and syncing overlap on two threads, so a large write never waits for
        the previous sync, and a sync's cost is shared by every append it covers.
        """
        assert self._sync_wakeup is not None
        while True:
            await self._sync_wakeup.wait()
            self._sync_wakeup.clear()
            target = self._written
            if target <= self._durable:
                continue
            try:
                seconds = await asyncio.to_thread(self._sync_active_segment)
            except BaseException as e:
                self._fail(e)
                raise
            self.syncs += 1
            self.bytes_synced += target - self._durable
            if self.sync_observer is not None:
                self.sync_observer(seconds, target - self._durable)
            self._durable = target
            while self._waiters and self._waiters[0][0] <= target:
                _, fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
            for listener in self._listeners:
                listener(target)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            return
        log.critical("write-ahead log failed; refusing further appends: %r", exc)
        self._failure = exc
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(WalFailure(str(exc)))

    def _write(self, chunks: list[tuple[int, bytes]]) -> None:
        """Runs on a worker thread: write runs of chunks to their segments (no sync).
        A full disk raises _NoSpace with what is left to write (a partly written chunk
        as its unwritten end: segments are opened O_APPEND, so a retry continues it)."""
        k = 0
        try:
            while k < len(chunks):
                base = chunks[k][0]
                j = k
                while j < len(chunks) and chunks[j][0] == base:
                    j += 1
                fd = self._writer_for(base)
                while k < j:
                    group = [c for _, c in chunks[k : min(k + 512, j)]]
                    wrote = os.writev(fd, group)
                    while k < j and wrote >= len(chunks[k][1]):
                        wrote -= len(chunks[k][1])
                        k += 1
                    if wrote:  # a short write: the rest of this chunk next
                        chunks[k] = (base, chunks[k][1][wrote:])
        except OSError as e:
            if e.errno in _NO_SPACE:
                raise _NoSpace(e, chunks[k:]) from e
            raise

    def _sync_active_segment(self) -> float:
        """Runs on a worker thread: fdatasync the active segment through a private dup of
        its descriptor, so the writer may roll to a new segment and close the old one
        meanwhile. Earlier segments were synced by the writer when it left them."""
        with self._fd_lock:
            if self._write_fd is None:
                return 0.0
            fd = os.dup(self._write_fd)
        try:
            return _timed_fdatasync(fd)
        finally:
            os.close(fd)

    def _writer_for(self, base: int) -> int:
        if self._write_base == base and self._write_fd is not None:
            return self._write_fd
        if self._write_fd is not None:
            # a finished segment is synced here, before any byte of the next is written,
            # so the syncer only ever needs to sync the newest segment
            os.fdatasync(self._write_fd)
        path = segment_path(self.directory, base)
        created = not path.exists()
        new_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            fsync_dir(self.directory)
        with self._fd_lock:
            old, self._write_fd, self._write_base = self._write_fd, new_fd, base
        if old is not None:
            os.close(old)
        return new_fd

    # --- trimming ---------------------------------------------------------------------

    def trim(self, position: int) -> int:
        """Delete the segments that end at or before `position` (never the active one).

        A segment still being read on a worker thread is unlinked at once but its
        descriptor closes when the last such read ends. Returns the bytes freed.
        """
        with self._read_lock:
            segments = self._segments
            k = 0
            while k + 1 < len(segments) and segments[k + 1] <= position:
                k += 1
            if not k:
                return 0
            self._segments = segments[k:]  # a new list: readers on threads hold the old one
            for base in segments[:k]:
                if not self._read_users.get(base):
                    fd = self._read_fds.pop(base, None)
                    if fd is not None:
                        os.close(fd)
                # no directory fsync: a segment that comes back after a crash holds only
                # batches below their partitions' persisted log starts, which replay drops
                segment_path(self.directory, base).unlink(missing_ok=True)
        log.info("WAL trimmed %d segments below position %d", k, segments[k])
        return segments[k] - segments[0]

    @property
    def segment_bases(self) -> list[int]:
        """Positions where the segments on disk begin, oldest first."""
        return list(self._segments)

    @property
    def retained_bytes(self) -> int:
        """Bytes in segments still on disk."""
        return self._end - self._segments[0] if self._segments else 0

    # --- reading ----------------------------------------------------------------------

    def read_many(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Blocking preads of (position, size) ranges of synced data; run on a thread.

        Raises TrimmedRead if a range lies in a segment trim() has deleted."""
        out = []
        for position, size in ranges:
            base, fd = self._open_for_read(position)
            try:
                data = os.pread(fd, size, position - base)
            finally:
                self._done_reading(base)
            if len(data) != size:
                raise WalFailure(f"short read at WAL position {position}")
            out.append(data)
        return out

    def _open_for_read(self, position: int) -> tuple[int, int]:
        with self._read_lock:
            segments = self._segments
            if not segments or position < segments[0]:
                raise TrimmedRead(position)
            base = segments[bisect.bisect_right(segments, position) - 1]
            fd = self._read_fds.get(base)
            if fd is None:
                fd = self._read_fds[base] = os.open(segment_path(self.directory, base), os.O_RDONLY)
            self._read_users[base] = self._read_users.get(base, 0) + 1
            return base, fd

    def _done_reading(self, base: int) -> None:
        with self._read_lock:
            left = self._read_users[base] - 1
            if left:
                self._read_users[base] = left
                return
            del self._read_users[base]
            if base < self._segments[0]:  # trimmed while we read: ours to close
                os.close(self._read_fds.pop(base))

    async def read(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        return await asyncio.to_thread(self.read_many, ranges)

    # --- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        """Sync what is pending, stop the writer and syncer, close files."""
        if self._flusher is not None and self._end > self._durable and self._failure is None:
            with contextlib.suppress(WalFailure):
                await self.wait_durable(self._end)
        for task in (self._flusher, self._syncer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for fd in [self._write_fd, *self._read_fds.values()]:
            if fd is not None:
                os.close(fd)
        self._write_fd = None
        self._read_fds.clear()
