"""The object-store interface the log is written to, and the errors every backend raises.

Two backends implement it: a local directory (the embedded default) and S3 through
aiobotocore. Callers only ever see these four operations and three errors, so the
uploader, the readers and compaction do not know which one is underneath.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ObjectStoreError(Exception):
    """Base class of the errors below."""


class ObjectNotFound(ObjectStoreError):
    """The key does not exist (or was deleted)."""


class PreconditionFailed(ObjectStoreError):
    """A conditional write lost: the key exists (If-None-Match) or changed (If-Match)."""


class StoreUnavailable(ObjectStoreError):
    """The store could not be reached or failed the request; worth retrying later."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(Protocol):
    """Keys are '/'-separated strings; values are immutable bytes."""

    async def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Store `data` under `key` and return its ETag.

        `if_none_match`: only if the key does not exist yet. `if_match`: only if the
        key's current ETag is this one. Either raises PreconditionFailed otherwise.
        """
        ...

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (to its end if `end` is None)."""
        ...

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The whole object and its ETag, for a later `put(..., if_match=etag)`."""
        ...

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every key under `prefix`, sorted by key."""
        ...

    async def delete(self, keys: list[str]) -> None:
        """Delete the keys; keys already gone are not an error."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """Where the objects live, for logs (no credentials)."""
        ...


async def replace_if_match(store: ObjectStore, key: str, data: bytes, etag: str | None) -> str:
    """Compare-and-set `key` to `data`: create it if `etag` is None, else only if it still
    has `etag`. Returns the new ETag.

    A write whose response was lost (or that a client retried internally) can land and
    still report PreconditionFailed; if the key now holds exactly `data`, that write was
    ours and its ETag is adopted. Anything else means another writer: re-raised.
    """
    try:
        if etag is None:
            return await store.put(key, data, if_none_match=True)
        return await store.put(key, data, if_match=etag)
    except PreconditionFailed:
        try:
            current, current_etag = await store.get_with_etag(key)
        except ObjectNotFound:
            raise PreconditionFailed(f"{key} vanished") from None
        if current == data:
            return current_etag
        raise
