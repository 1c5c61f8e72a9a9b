"""One small object replaced by compare-and-set: a metadata document, a catalog manifest.

Each write carries If-Match with the ETag last seen, so a second writer of the same key
is refused instead of silently overwritten. Two things make that fragile, and this is
where both are handled once:
- a write whose caller is cancelled may still land: the write therefore runs to its
  end whatever happens to the caller, so the ETag it returns is never lost;
- a write may land although its answer was lost (a timeout, a retry inside the client):
  the next write then finds an ETag it does not know. It reads the object again; if
  the object holds a document this writer wrote, that ETag is adopted and the write
  retried. Anything else is another writer's: `ConflictingWrite`, carrying what is
  stored so the caller can reconcile, never a stale ETag left behind. An object that
  vanished is written again.
"""

from __future__ import annotations

import logging

from aio.tasks import run_to_completion
from s3stream.store import ObjectNotFound, ObjectStore, PreconditionFailed, replace_if_match

log = logging.getLogger(__name__)

_KEEP = 4  # documents written whose outcome may be unknown


class ConflictingWrite(PreconditionFailed):
    """The object holds a document this writer never wrote."""

    def __init__(self, key: str, stored: bytes, etag: str) -> None:
        super().__init__(f"{key} was changed by another writer")
        self.stored = stored
        self.etag = etag


class VersionedObject:
    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key
        self.etag: str | None = None  # None: the object does not exist yet
        self._written: list[bytes] = []

    def seen(self, data: bytes | None, etag: str | None) -> None:
        """The object as read (None, None: absent); later writes replace that version."""
        self.etag = etag
        self._written = [] if data is None else [data]

    async def write(self, data: bytes) -> None:
        """Replace the object with `data`; runs to its end even if the caller is cancelled."""
        await run_to_completion(self._write(data))

    async def _write(self, data: bytes) -> None:
        self._written = [*self._written[-(_KEEP - 1) :], data]
        try:
            self.etag = await replace_if_match(self.store, self.key, data, self.etag)
        except PreconditionFailed:
            try:
                stored, etag = await self.store.get_with_etag(self.key)
            except ObjectNotFound:
                stored, etag = None, None
            if stored is None:  # deleted under us: ours to write again, never a wedge
                log.error("%s vanished from the object store; writing it again", self.key)
                self.etag = await replace_if_match(self.store, self.key, data, None)
                self._written = [data]
                return
            if stored not in self._written:
                raise ConflictingWrite(self.key, stored, etag) from None
            log.warning("%s: a write of ours landed unseen (ETag %s); adopting it", self.key, etag)
            self.etag = await replace_if_match(self.store, self.key, data, etag)
        self._written = [data]
