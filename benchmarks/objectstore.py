"""Strata's object store seen from outside: where a system's objects are, its counters, and
the same objects read straight from the backend (the yardstick for the catch-up read).

A Strata broker keeps its log in objects (`data/b<broker>/<seq>.obj` under the store's
prefix): a local directory for the embedded default, S3 (here moto) for `strata-s3`. The
harness reads the broker's own /metrics for requests, bytes and backlog, and reads the
objects itself, with the broker's GET size and about its concurrency, so the catch-up figure
can be given as a share of what the backend delivers on this machine in the same run.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, mb_per_s
from benchmarks.physical import evict_page_cache

# what the broker's defaults are (`python -m broker serve --help`); the direct read copies them
READAHEAD_BYTES = 8 * MIB
READ_INFLIGHT_BYTES = 64 * MIB
DATA_PREFIX = "data/"


@dataclass(frozen=True)
class StoreLocation:
    """A Strata system's object store: a directory (`file`) or an S3 bucket and prefix."""

    kind: str  # "file" or "s3"
    path: Path | None = None  # file: the store's root directory
    bucket: str = ""
    prefix: str = ""  # s3: keys are prefix/data/..., prefix/manifests/...
    endpoint: str = ""
    env: dict[str, str] = field(default_factory=dict)  # s3: credentials and region

    def describe(self) -> str:
        if self.kind == "file":
            return f"directory {self.path}"
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint or 'AWS'}"

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


# --- the broker's counters ----------------------------------------------------------------

COUNTERS = {
    "puts": 'strata_object_store_requests_total{op="put"}',
    "gets": 'strata_object_store_requests_total{op="get"}',
    "lists": 'strata_object_store_requests_total{op="list"}',
    "deletes": 'strata_object_store_requests_total{op="delete"}',
    "put_errors": 'strata_object_store_errors_total{op="put"}',
    "get_errors": 'strata_object_store_errors_total{op="get"}',
    "bytes_up": 'strata_object_store_bytes_total{direction="up"}',
    "bytes_down": 'strata_object_store_bytes_total{direction="down"}',
    "uploads": "strata_uploads_total",
    "compactions": "strata_compactions_total",
    "objects_deleted": "strata_objects_deleted_total",
    "block_cache_hits": "strata_block_cache_hits_total",
    "block_cache_misses": "strata_block_cache_misses_total",
}
GAUGES = {
    "objects": "strata_objects",
    "upload_backlog_bytes": "strata_upload_backlog_bytes",
    "block_cache_bytes": "strata_block_cache_bytes",
}


def counters(metrics: dict[str, float]) -> dict[str, float]:
    """The object-store counters and gauges of one scrape, by short name (missing: NaN)."""
    out = {k: metrics.get(name, float("nan")) for k, name in COUNTERS.items()}
    out.update({k: metrics.get(name, float("nan")) for k, name in GAUGES.items()})
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters as differences, gauges as their value at the end."""
    out = {k: after[k] - before[k] for k in COUNTERS}
    out.update({k: after[k] for k in GAUGES})
    return out


def topic_bytes_in(metrics: dict[str, float], topic: str) -> float:
    """Record-batch bytes Produce appended to `topic` since the broker started."""
    return metrics.get(f'strata_topic_bytes_in_total{{topic="{topic}"}}', 0.0)


# --- the objects, read straight from the backend ------------------------------------------


def data_objects(loc: StoreLocation) -> list[tuple[str, int]]:
    """(key, size) of every data object in the store, sorted by key."""
    if loc.kind == "file":
        assert loc.path is not None
        root = loc.path / DATA_PREFIX
        out = [
            ((Path(r) / f).relative_to(loc.path).as_posix(), os.path.getsize(Path(r) / f))
            for r, _, fs in os.walk(root)
            for f in fs
            if f.endswith(".obj")
        ]
        return sorted(out)
    return asyncio.run(_s3_list(loc))


def read_direct(
    loc: StoreLocation, request_bytes: int = READAHEAD_BYTES, concurrency: int = 0
) -> dict[str, Any]:
    """Every data object, in `request_bytes` ranges with `concurrency` in flight, timed.

    The broker's catch-up fetches `--readahead-bytes` per GET with at most
    `--read-inflight-bytes` in flight; by default the same here. A directory is first evicted
    from the page cache (as the broker's was) and read with plain preads on threads.
    """
    concurrency = concurrency or max(1, READ_INFLIGHT_BYTES // request_bytes)
    objects = data_objects(loc)
    ranges = [
        (key, pos, min(size, pos + request_bytes))
        for key, size in objects
        for pos in range(0, size, request_bytes)
    ]
    evicted = 0
    if loc.kind == "file":
        assert loc.path is not None
        evicted = evict_page_cache(loc.path / DATA_PREFIX)
        t0 = time.monotonic()
        nbytes = _file_read(loc.path, ranges, concurrency)
        took = time.monotonic() - t0
    else:
        nbytes, took = asyncio.run(_s3_read(loc, ranges, concurrency))
    expected = sum(size for _, size in objects)
    if nbytes != expected:
        raise RuntimeError(f"direct read of {loc.describe()}: {nbytes} of {expected} bytes")
    return {
        "backend": loc.describe(),
        "objects": len(objects),
        "bytes": nbytes,
        "requests": len(ranges),
        "request_bytes": request_bytes,
        "concurrency": concurrency,
        "seconds": round(took, 3),
        "mb_per_s": mb_per_s(nbytes, took),
        "evicted_bytes": evicted,
        "largest_object_bytes": max((s for _, s in objects), default=0),
    }


def _file_read(root: Path, ranges: list[tuple[str, int, int]], concurrency: int) -> int:
    def one(r: tuple[str, int, int]) -> int:
        key, start, end = r
        fd = os.open(root / key, os.O_RDONLY)
        try:
            got, pos = 0, start
            while pos < end:
                chunk = os.pread(fd, end - pos, pos)
                if not chunk:
                    break
                got += len(chunk)
                pos += len(chunk)
            return got
        finally:
            os.close(fd)

    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(one, ranges))


def _s3_client(loc: StoreLocation, pool: int) -> Any:
    """An aiobotocore client (the library the broker uses), path-style, as the broker's."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    config = AioConfig(
        region_name=loc.env.get("AWS_DEFAULT_REGION", "us-east-1"),
        max_pool_connections=max(pool, 10),
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        read_timeout=60,
    )
    return AioSession().create_client(
        "s3",
        endpoint_url=loc.endpoint or None,
        aws_access_key_id=loc.env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=loc.env.get("AWS_SECRET_ACCESS_KEY"),
        config=config,
    )


async def _s3_list(loc: StoreLocation) -> list[tuple[str, int]]:
    strip = len(loc.key(""))
    out: list[tuple[str, int]] = []
    async with _s3_client(loc, 1) as client:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=loc.bucket, Prefix=loc.key(DATA_PREFIX)
        )
        async for page in pages:
            for obj in page.get("Contents", ()):
                if obj["Key"].endswith(".obj"):
                    out.append((obj["Key"][strip:], int(obj["Size"])))
    return sorted(out)


async def _s3_read(
    loc: StoreLocation, ranges: list[tuple[str, int, int]], concurrency: int
) -> tuple[int, float]:
    async with _s3_client(loc, concurrency) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(key: str, start: int, end: int) -> int:
            async with sem:
                resp = await client.get_object(
                    Bucket=loc.bucket, Key=loc.key(key), Range=f"bytes={start}-{end - 1}"
                )
                async with resp["Body"] as body:
                    return len(await body.read())

        await client.head_bucket(Bucket=loc.bucket)  # connected before the clock starts
        t0 = time.monotonic()
        sizes = await asyncio.gather(*(one(*r) for r in ranges))
        return sum(sizes), time.monotonic() - t0


def delete_prefix(loc: StoreLocation) -> int:
    """Delete every object of a store that is no longer needed (a finished variant's)."""
    if loc.kind == "file":
        return 0  # its directory goes with the variant's work dir
    return asyncio.run(_s3_delete_prefix(loc))


async def _s3_delete_prefix(loc: StoreLocation) -> int:
    n = 0
    async with _s3_client(loc, 1) as client:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=loc.bucket, Prefix=loc.key("")
        )
        async for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
            if keys:
                await client.delete_objects(Bucket=loc.bucket, Delete={"Objects": keys})
                n += len(keys)
    return n
