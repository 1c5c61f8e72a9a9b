"""The ObjectStore contract, run against both backends: a local directory and S3 (moto).

Whatever the uploader, readers and compaction rely on is pinned here once, so the two
backends cannot drift apart. S3-only tests cover the failure modes a directory cannot
have: a hung server, a refused connection, a missing bucket.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import crc32c
import pytest

from devkit.procs import free_port
from s3stream import s3_store
from s3stream.local_store import LocalDirectoryStore
from s3stream.open_store import open_store, store_from_url
from s3stream.s3_store import S3Store
from s3stream.store import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoreUnavailable,
)

MiB = 1024 * 1024

Factory = Callable[[], ObjectStore]


def run(make: Factory, body: Callable[[ObjectStore], Awaitable[Any]]) -> Any:
    """Open a fresh store in a fresh event loop, run `body` on it, close it."""

    async def main() -> Any:
        store = await open_store(make())
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture(params=["local", "s3", "s3-prefixed"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A factory, not a store: S3Store's client must be created inside the test's loop."""
    if request.param == "local":
        return lambda: LocalDirectoryStore(tmp_path / "objects")
    server, bucket = request.getfixturevalue("s3_bucket")
    prefix = "cluster-a/objects" if request.param == "s3-prefixed" else ""
    return lambda: S3Store(bucket, prefix, endpoint_url=server.endpoint, path_style=True)


# -- the contract ---------------------------------------------------------------------


def test_put_get_roundtrip_and_ranges(make_store: Factory) -> None:
    big = os.urandom(3 * MiB + 17)

    async def body(store: ObjectStore) -> None:
        etag = await store.put("t/0/seg-1", b"hello world")
        assert etag.startswith('"') and etag.endswith('"')
        assert await store.get("t/0/seg-1") == b"hello world"
        assert await store.get("t/0/seg-1", 0, 5) == b"hello"
        assert await store.get("t/0/seg-1", 6) == b"world"
        assert await store.get("t/0/seg-1", 6, 100) == b"world"  # clipped like a slice
        assert await store.get("t/0/seg-1", 3, 3) == b""
        assert await store.get("t/0/seg-1", 11) == b""
        assert await store.get("t/0/seg-1", 50, 60) == b""
        assert await store.get_with_etag("t/0/seg-1") == (b"hello world", etag)

        big_etag = await store.put("t/0/big", big)
        assert await store.get("t/0/big") == big
        assert await store.get("t/0/big", MiB - 7, 2 * MiB + 13) == big[MiB - 7 : 2 * MiB + 13]
        assert await store.get("t/0/big", 3 * MiB) == big[3 * MiB :]
        assert await store.get_with_etag("t/0/big") == (big, big_etag)

        await store.put("t/0/empty", b"")
        assert await store.get("t/0/empty") == b""
        assert await store.get("t/0/empty", 0, 10) == b""

        new_etag = await store.put("t/0/seg-1", b"replaced")  # unconditional overwrite
        assert new_etag != etag
        assert await store.get_with_etag("t/0/seg-1") == (b"replaced", new_etag)

    run(make_store, body)


def test_bad_ranges_are_caller_errors(make_store: Factory) -> None:
    async def body(store: ObjectStore) -> None:
        await store.put("k", b"abc")
        with pytest.raises(ValueError):
            await store.get("k", -1)
        with pytest.raises(ValueError):
            await store.get("k", 2, 1)

    run(make_store, body)


def test_if_none_match_refuses_existing_key(make_store: Factory) -> None:
    async def body(store: ObjectStore) -> None:
        await store.put("meta/lock", b"first", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            await store.put("meta/lock", b"second", if_none_match=True)
        assert await store.get("meta/lock") == b"first"

    run(make_store, body)


def test_if_match_is_compare_and_set(make_store: Factory) -> None:
    async def body(store: ObjectStore) -> None:
        v1 = await store.put("meta/manifest", b"v1")
        v2 = await store.put("meta/manifest", b"v2", if_match=v1)
        assert v2 != v1
        with pytest.raises(PreconditionFailed):
            await store.put("meta/manifest", b"v3", if_match=v1)  # stale
        assert await store.get_with_etag("meta/manifest") == (b"v2", v2)

        with pytest.raises(PreconditionFailed):
            await store.put("meta/missing", b"x", if_match=v2)
        with pytest.raises(ObjectNotFound):
            await store.get("meta/missing")

    run(make_store, body)


def test_concurrent_if_none_match_has_one_winner(make_store: Factory) -> None:
    async def body(store: ObjectStore) -> None:
        async def attempt(i: int) -> int | None:
            try:
                await store.put("race/create", b"writer-%d" % i, if_none_match=True)
                return i
            except PreconditionFailed:
                return None

        results = await asyncio.gather(*(attempt(i) for i in range(8)))
        winners = [i for i in results if i is not None]
        assert len(winners) == 1
        assert await store.get("race/create") == b"writer-%d" % winners[0]

    run(make_store, body)


def test_missing_key_is_object_not_found(make_store: Factory) -> None:
    async def body(store: ObjectStore) -> None:
        with pytest.raises(ObjectNotFound):
            await store.get("nope/never")
        with pytest.raises(ObjectNotFound):
            await store.get("nope/never", 10, 20)
        with pytest.raises(ObjectNotFound):
            await store.get_with_etag("nope/never")

    run(make_store, body)


def test_list_is_sorted_with_string_prefixes_and_sizes(make_store: Factory) -> None:
    objects = {
        "t/2/c": b"ccc",
        "t/1/b": b"bb",
        "t/10/x": b"x" * 100,
        "t/1/a": b"",
        "u/z": b"zz",
    }

    async def body(store: ObjectStore) -> None:
        assert await store.list("") == []
        for key, data in objects.items():
            await store.put(key, data)
        everything = await store.list("")
        assert everything == [ObjectInfo(k, len(objects[k])) for k in sorted(objects)]
        # S3 prefixes are strings, not directories: "t/1" also matches "t/10/...".
        assert [i.key for i in await store.list("t/1")] == ["t/1/a", "t/1/b", "t/10/x"]
        assert await store.list("t/1/") == [ObjectInfo("t/1/a", 0), ObjectInfo("t/1/b", 2)]
        assert await store.list("t/10/x") == [ObjectInfo("t/10/x", 100)]
        assert await store.list("nothing/") == []
        assert await store.list("t/1/c") == []

    run(make_store, body)


def test_delete_is_idempotent(make_store: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_store, "DELETE_BATCH", 2)  # exercise S3 batching on 5 keys

    async def body(store: ObjectStore) -> None:
        keys = [f"d/{i}" for i in range(6)]
        for k in keys:
            await store.put(k, k.encode())
        await store.delete([])
        await store.delete([*keys[:5], "d/missing"])
        assert await store.list("d/") == [ObjectInfo("d/5", 3)]
        with pytest.raises(ObjectNotFound):
            await store.get("d/0")
        await store.delete(keys[:5])  # again: already gone is fine
        await store.delete(keys)
        assert await store.list("") == []

    run(make_store, body)


# -- local directory specifics -------------------------------------------------------------


def test_local_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        for bad in ["../x", "/etc/passwd", "a/../../b", "a/./b", "", "a//b", "a/", ".tmp-x"]:
            with pytest.raises(ValueError):
                await store.put(bad, b"x")
            with pytest.raises(ValueError):
                await store.get(bad)
        with pytest.raises(ValueError):
            await store.list("../")
        with pytest.raises(ValueError):
            await store.delete(["ok", "../x"])

    run(lambda: LocalDirectoryStore(tmp_path / "root"), body)
    assert not (tmp_path / "x").exists()


def test_local_layout_etags_and_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "root"

    async def body(store: ObjectStore) -> None:
        etag = await store.put("a/b/c", b"payload")
        assert etag == f'"{crc32c.crc32c(b"payload"):08x}"'
        assert (root / "a" / "b" / "c").read_bytes() == b"payload"
        (root / "a" / "b" / ".tmp-leftover").write_bytes(b"crashed mid-write")
        assert await store.list("") == [ObjectInfo("a/b/c", 7)]
        await store.put("a/b/c", b"again", if_match=etag)
        await store.put("a/b/d", b"new", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            await store.put("a/b/d", b"new", if_none_match=True)
        names = sorted(p.name for p in (root / "a" / "b").iterdir())
        assert names == [".tmp-leftover", "c", "d"]  # no temp file of ours left behind
        assert store.describe() == f"file://{root}"

    run(lambda: LocalDirectoryStore(root), body)


def test_local_concurrent_if_match_has_one_winner(tmp_path: Path) -> None:
    async def body(store: ObjectStore) -> None:
        etag = await store.put("m", b"v0")
        results = await asyncio.gather(
            *(store.put("m", b"v%d" % i, if_match=etag) for i in range(1, 9)),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, str)]
        assert len(wins) == 1
        assert sum(isinstance(r, PreconditionFailed) for r in results) == 7

    run(lambda: LocalDirectoryStore(tmp_path), body)


# -- S3 specifics ----------------------------------------------------------------------------


def test_s3_prefix_is_a_key_prefix_in_the_bucket(s3_bucket: tuple) -> None:
    server, bucket = s3_bucket

    async def body(store: ObjectStore) -> None:
        await store.put("t/0/seg", b"x")
        assert await store.list("") == [ObjectInfo("t/0/seg", 1)]
        assert "s3://" in store.describe() and server.endpoint in store.describe()

    run(lambda: S3Store(bucket, "/pre/fix/", endpoint_url=server.endpoint, path_style=True), body)
    assert server.list_keys(bucket) == ["pre/fix/t/0/seg"]


def test_s3_ensure_bucket_creates_it_once(s3_bucket: tuple) -> None:
    server, bucket = s3_bucket
    fresh = bucket + "-new"

    def make() -> S3Store:
        return S3Store(fresh, endpoint_url=server.endpoint, path_style=True)

    async def body(store: ObjectStore) -> None:
        assert isinstance(store, S3Store)
        await store.ensure_bucket()  # already there now: no error
        await store.put("k", b"v")

    run(make, body)
    assert server.list_keys(fresh) == ["k"]


def test_s3_missing_bucket_is_unavailable_not_not_found(s3_bucket: tuple) -> None:
    server, bucket = s3_bucket

    async def main() -> None:
        store = S3Store(bucket + "-absent", endpoint_url=server.endpoint, path_style=True)
        try:
            with pytest.raises(StoreUnavailable):
                await store.get("k")  # "object gone" here could make a caller drop data
        finally:
            await store.close()

    asyncio.run(main())


def test_s3_hung_server_is_unavailable_within_bounded_time(
    s3_bucket: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOPped moto: connections are accepted but never answered. Reads hit the read
    timeout; a small put too (no 100-continue wait); a body bigger than the socket
    buffers hits the upload deadline. All three end as StoreUnavailable, retries included."""
    server, bucket = s3_bucket
    monkeypatch.setattr(s3_store, "MIN_UPLOAD_RATE", 64 * MiB)
    monkeypatch.setattr(s3_store, "RETRY_BACKOFF_ALLOWANCE", 1.0)
    big = os.urandom(24 * MiB)

    async def main() -> None:
        store = S3Store(
            bucket,
            endpoint_url=server.endpoint,
            path_style=True,
            connect_timeout=0.5,
            read_timeout=0.5,
        )
        try:
            await store.put("k", b"before")  # a pooled connection exists, too
            server.pause()
            try:
                t0 = time.monotonic()
                results = await asyncio.gather(
                    store.get("k"),
                    store.put("k2", b"during"),
                    store.put("big", big),
                    return_exceptions=True,
                )
                elapsed = time.monotonic() - t0
            finally:
                server.resume()
            for r in results:
                assert isinstance(r, StoreUnavailable), r
                assert r.__cause__ is not None
            assert elapsed < 15, elapsed
            assert await store.get("k") == b"before"  # the same store recovers
        finally:
            await store.close()

    asyncio.run(main())


def test_s3_refused_connection_is_unavailable() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def main() -> None:
        store = S3Store("strata-test-nowhere", endpoint_url=endpoint, path_style=True)
        try:
            t0 = time.monotonic()
            results = await asyncio.gather(
                store.put("k", b"v"), store.list(""), open_store(store), return_exceptions=True
            )
            assert time.monotonic() - t0 < 12
            for r in results:
                assert isinstance(r, StoreUnavailable), r
                assert r.__cause__ is not None
        finally:
            await store.close()

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        asyncio.run(main())


# -- URLs ----------------------------------------------------------------------------------


def test_store_from_url() -> None:
    kw: dict[str, Any] = {"endpoint": None, "region": "us-east-1", "path_style": False}
    local = store_from_url("file:///var/lib/strata/objects", **kw)
    assert isinstance(local, LocalDirectoryStore)
    assert local.root == Path("/var/lib/strata/objects")
    assert local.describe() == "file:///var/lib/strata/objects"

    plain = store_from_url("/srv/objects", **kw)
    assert isinstance(plain, LocalDirectoryStore) and plain.root == Path("/srv/objects")
    relative = store_from_url("objects", **kw)
    assert isinstance(relative, LocalDirectoryStore) and relative.root.is_absolute()

    s3 = store_from_url(
        "s3://my-bucket/clusters/a/", endpoint="http://minio:9000", region="eu-west-1",
        path_style=True,
    )  # fmt: skip
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.region) == (
        "my-bucket",
        "clusters/a",
        "http://minio:9000",
        "eu-west-1",
    )
    assert s3.describe() == "s3://my-bucket/clusters/a (endpoint http://minio:9000)"
    bare = store_from_url("s3://my-bucket", **kw)
    assert isinstance(bare, S3Store) and bare.prefix == ""

    for junk in [
        "",
        "   ",
        "http://example.com/bucket",
        "gs://bucket/x",
        "s3://",
        "s3:///prefix-only",
        "s3://Upper_Case",
        "s3://ab",
        "s3://key:secret@bucket/x",
        "s3://bucket/x?versionId=1",
        "file://otherhost/path",
        "file:///",
        "file:relative/path",
    ]:
        with pytest.raises(ValueError):
            store_from_url(junk, **kw)
