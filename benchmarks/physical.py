"""The machine's own limits, measured in the same run as the brokers.

- loopback TCP: one process streams 1 MiB sends to another over 127.0.0.1 (the ceiling for any
  broker's reads and writes through a socket here, Python's socket loop included);
- write+fdatasync: sustained 1 MiB appends each followed by fdatasync in the data directory
  (the ceiling for an acks=all broker that syncs before it acks), and the latency of a 4 KiB
  append+fdatasync (the floor under an acks=all round trip);
- cold sequential read: a file written, synced and evicted from the page cache with
  posix_fadvise(DONTNEED), read back in 1 MiB reads (the ceiling for a catch-up read).

A virtual disk may be cached by the host underneath; the cold read is cold only in this kernel.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path
from typing import Any

from benchmarks.common import KIB, MIB, disk_throughput, mb_per_s


def _tcp_sender(port: int, seconds: float) -> None:
    buf = os.urandom(MIB)
    with socket.create_connection(("127.0.0.1", port)) as s:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            s.sendall(buf)


def loopback_tcp(seconds: float) -> dict[str, Any]:
    """Bytes/s one process receives from another over 127.0.0.1, 1 MiB sends and recvs."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(30)
        ctx = mp.get_context("spawn")
        proc = ctx.Process(target=_tcp_sender, args=(srv.getsockname()[1], seconds))
        proc.start()
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(30)
                buf = bytearray(MIB)
                view = memoryview(buf)
                n = conn.recv_into(view)
                start, total = time.monotonic(), 0
                while n:
                    total += n
                    n = conn.recv_into(view)
                elapsed = time.monotonic() - start
        finally:
            proc.join(seconds + 30)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    return {"bytes": total, "seconds": elapsed, "mb_per_s": mb_per_s(total, elapsed)}


def evict_page_cache(path: Path) -> int:
    """Drop the clean page-cache pages of every file under `path` (or of the file itself).

    posix_fadvise(DONTNEED) after fdatasync: no privileges needed, unlike drop_caches, and it
    only touches these files. Returns the bytes advised.
    """
    files = [path] if path.is_file() else [Path(r) / f for r, _, fs in os.walk(path) for f in fs]
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            fd = os.open(f, os.O_RDONLY)
            try:
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def cold_read(directory: Path, size: int) -> dict[str, Any]:
    """Sequential 1 MiB reads of a `size`-byte file that was evicted from the page cache."""
    path = directory / "cold-read-test.bin"
    chunk = os.urandom(MIB)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(max(1, size // MIB)):
                os.write(fd, chunk)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        evict_page_cache(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            total, start = 0, time.monotonic()
            while n := len(os.read(fd, MIB)):
                total += n
            elapsed = time.monotonic() - start
        finally:
            os.close(fd)
    finally:
        path.unlink(missing_ok=True)
    return {"bytes": total, "seconds": elapsed, "mb_per_s": mb_per_s(total, elapsed)}


def fdatasync_sustained(directory: Path, seconds: float) -> dict[str, Any]:
    """1 MiB append+fdatasync for `seconds`; the figure is the median whole second.

    Virtual disks absorb a burst of a second or two far faster than they sustain, and the
    brokers are measured over longer stretches than that.
    """
    r = disk_throughput(directory, MIB, seconds, 64 << 30)
    each = sorted(r["mb_per_s_each_second"])
    r["mb_per_s_burst_mean"] = r["mb_per_s"]
    if len(each) >= 3:
        r["mb_per_s"] = each[len(each) // 2]
    return r


def fdatasync_latency(directory: Path, seconds: float) -> dict[str, Any]:
    """Latency of 4 KiB append+fdatasync, in ms (p50/p90/p99/p999/max)."""
    return disk_throughput(directory, 4 * KIB, seconds, 1 << 30)


PROBE_SIZES = (256 * KIB, MIB, 4 * MIB)


def disk_probe(directory: Path, seconds: float) -> dict[str, Any]:
    """The detailed disk probe (`run --disk-probe`): append+fdatasync at several write sizes,
    and 1 MiB and 4 KiB overwrites of a pre-zeroed file (the data-only sync a recycled WAL
    segment would get), `seconds` each; says how much of the sync cost is the size commit."""
    appends = {
        str(size): disk_throughput(directory, size, seconds, 4 << 30) for size in PROBE_SIZES
    }
    return {
        "append": appends,
        "overwrite_1mib": disk_throughput(directory, MIB, seconds, 4 << 30, prealloc=256 * MIB),
        "overwrite_4kib": disk_throughput(directory, 4 * KIB, seconds, 1 << 30, prealloc=64 * MIB),
    }
