"""An ObjectStore wrapper that counts requests and bytes, for metrics and benchmarks.

Object-store bills are per request as much as per byte, so every PUT, GET, LIST and
DELETE is counted (whether it succeeded or not) along with the bytes moved.
"""

from __future__ import annotations

from collections import Counter

from s3stream.store import ObjectInfo, ObjectStore


class CountingStore:
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.bytes_up = 0
        self.bytes_down = 0

    async def _count(self, op: str, coro):
        self.requests[op] += 1
        try:
            return await coro
        except Exception:
            self.errors[op] += 1
            raise

    async def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        etag = await self._count(
            "put", self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)
        )
        self.bytes_up += len(data)
        return etag

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = await self._count("get", self.inner.get(key, start, end))
        self.bytes_down += len(data)
        return data

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data, etag = await self._count("get", self.inner.get_with_etag(key))
        self.bytes_down += len(data)
        return data, etag

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self._count("list", self.inner.list(prefix))

    async def delete(self, keys: list[str]) -> None:
        await self._count("delete", self.inner.delete(keys))

    async def open(self) -> None:
        from s3stream.open_store import open_store

        await open_store(self.inner)

    async def close(self) -> None:
        await self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()
