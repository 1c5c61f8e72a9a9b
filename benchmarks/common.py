"""Shared pieces of the benchmarks: units, /proc readings, the disk probe, run plumbing.

The broker process itself is devkit.broker.BrokerProcess, shared with the tests.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000
KIB = 1024
MIB = 1024 * 1024
MESSAGE_SIZE = 1024
CPU_BOUND = 0.9  # a client process above this share of one core is called CPU-bound
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- small helpers ----------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p999/max in milliseconds."""
    ordered = sorted(seconds)
    out = {f"p{q}".replace(".", ""): percentile(ordered, q) * 1e3 for q in (50, 90, 99, 99.9)}
    out["max"] = (ordered[-1] * 1e3) if ordered else math.nan
    out["count"] = len(ordered)
    return out


def rusage_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def mb_per_s(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / MB if seconds > 0 else math.nan


# --- /proc readings ---------------------------------------------------------------------


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _stat_cpu(path: str) -> float:
    with open(path) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a whole process and of its main thread (where the event loop runs)."""
    return {
        "process": _stat_cpu(f"/proc/{pid}/stat"),
        "main": _stat_cpu(f"/proc/{pid}/task/{pid}/stat"),
    }


def proc_io(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies across all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def mount_of(path: Path) -> dict[str, str]:
    """The /proc/mounts entry holding `path` (longest mount-point prefix)."""
    best = {"device": "?", "mount": "/", "fstype": "?"}
    resolved = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, *_ = line.split()
            inside = resolved == mnt or resolved.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best["mount"]):
                best = {"device": dev, "mount": mnt, "fstype": fstype}
    return best


class PhaseMeter:
    """Broker and machine resource use over one phase: CPU shares, WAL bytes, write syscalls."""

    def __init__(self, pid: int, wal_dir: Path) -> None:
        self.pid = pid
        self.wal_dir = wal_dir
        self._t0 = time.monotonic()
        self._cpu0 = proc_cpu(pid)
        self._io0 = proc_io(pid)
        self._machine0 = machine_cpu()
        self._wal0 = dir_bytes(wal_dir)

    def finish(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._t0
        cpu = proc_cpu(self.pid)
        io = proc_io(self.pid)
        busy, total = machine_cpu()
        syscw = io["syscw"] - self._io0["syscw"]
        wchar = io["wchar"] - self._io0["wchar"]
        return {
            "seconds": elapsed,
            "broker_cpu_cores": (cpu["process"] - self._cpu0["process"]) / elapsed,
            "broker_loop_thread_cpu_cores": (cpu["main"] - self._cpu0["main"]) / elapsed,
            "machine_cpu_busy": (busy - self._machine0[0]) / max(1.0, total - self._machine0[1]),
            "wal_bytes": dir_bytes(self.wal_dir) - self._wal0,
            # writev/write calls (sends go through sendto and are not counted): about one
            # WAL flush each, so wchar/syscw is roughly the group-commit write size
            "broker_write_syscalls": syscw,
            "broker_bytes_per_write_syscall": wchar / syscw if syscw else 0.0,
            "broker_storage_write_bytes": io["write_bytes"] - self._io0["write_bytes"],
        }


# --- phase 1: the disk ------------------------------------------------------------------


def disk_throughput(
    directory: Path, size: int, seconds: float, max_bytes: int, prealloc: int = 0
) -> dict[str, Any]:
    """`size`-byte writes, each followed by fdatasync, for `seconds` or `max_bytes`.

    By default they append to a new file, as the WAL does (so every sync also commits the
    file's new size). With `prealloc` they overwrite, round and round, a file of that many
    bytes written as zeros and synced first: the data-only sync a recycled or pre-zeroed
    segment would get.
    """
    path = directory / f"disk-test-{size}.bin"
    buf = os.urandom(size)
    latencies = array("d")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if prealloc else os.O_APPEND)
    fd = os.open(path, flags, 0o644)
    try:
        if prealloc:
            zeros = bytes(min(prealloc, 16 * MIB))
            for _ in range(max(1, prealloc // len(zeros))):
                os.write(fd, zeros)
            os.fsync(fd)
            prealloc = max(size, prealloc // size * size)
        written = 0
        start = time.monotonic()
        deadline = start + seconds
        timeline: list[float] = []  # MB/s in each whole second
        bucket_end, bucket_bytes = start + 1.0, 0
        while written < max_bytes and time.monotonic() < deadline:
            t0 = time.monotonic()
            if t0 >= bucket_end:
                timeline.append(bucket_bytes / MB)
                bucket_end, bucket_bytes = bucket_end + 1.0, 0
            view = memoryview(buf)
            pos = written % prealloc if prealloc else 0
            while view:
                n = os.pwrite(fd, view, pos) if prealloc else os.write(fd, view)
                view = view[n:]
                pos += n
            os.fdatasync(fd)
            latencies.append(time.monotonic() - t0)
            written += size
            bucket_bytes += size
        elapsed = time.monotonic() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {
        "write_bytes": size,
        "mode": "overwrite-preallocated" if prealloc else "append",
        "writes": len(latencies),
        "seconds": elapsed,
        "mb_per_s": mb_per_s(written, elapsed),
        "latency_ms": latency_summary(latencies),
        "mb_per_s_each_second": [round(x, 1) for x in timeline],
    }


# --- run plumbing -------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import confluent_kafka

    commit, dirty = "", []
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        dirty = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "git_commit": commit,
        "git_dirty": dirty,  # the broker measured is the working tree, edits included
        "loadavg_at_start": os.getloadavg(),
    }


def json_default(o: Any) -> Any:
    if isinstance(o, array):
        return None  # raw timestamps stay out of the JSON
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def step(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the broker and workers are still stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
