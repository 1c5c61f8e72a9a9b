"""Cluster metadata (topics, configs, log starts, producer-id blocks) in etcd.

One key holds the whole document, as the embedded broker's bucket object does: it is
small and rarely written. Every change is a compare-and-swap on that key's revision;
when another broker wrote first, the document is read again and the change re-applied.
Every broker follows the key with a watch, so a topic created on one is known to all.
A change may carry extra writes in the same transaction (a new topic's partition
assignments), so they can never exist without each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import aetcd
import msgpack

from broker.cluster.etcd import KeySpace
from broker.metadata_store import MetadataStore, new_cluster_id

log = logging.getLogger(__name__)

T = TypeVar("T")

# (topic id, partition) pairs a change adds -> the (key, value) writes that go with them
ExtraWrites = Callable[[list[tuple[bytes, int]]], list[tuple[bytes, bytes]]]

_MAX_ATTEMPTS = 20


class EtcdMetadataStore(MetadataStore):
    def __init__(
        self, client: aetcd.Client, keys: KeySpace, new_partitions: ExtraWrites | None = None
    ) -> None:
        super().__init__(store=None)  # type: ignore[arg-type]
        self.client = client
        self.key = keys.key("metadata")
        self.revision = 0  # mod_revision of the document this copy reflects
        self._new_partitions = new_partitions  # writes that go with new partitions
        # topic ids of the last document known to be in etcd (self.topics may also hold
        # a change in flight)
        self.committed_ids: set[bytes] = set()

    async def load(self, legacy: object = None) -> None:
        """Read the document; the first broker of a new cluster creates it."""
        self.created = False
        while True:
            got = await self.client.get(self.key)
            if got is not None:
                self.apply_raw(got.value, got.mod_revision)
                return
            self.cluster_id = new_cluster_id()
            t = self.client.transactions
            ok, responses = await self.client.transaction(
                compare=[t.version(self.key) == 0],
                success=[t.put(self.key, self.encode())],
                failure=[],
            )
            if ok:
                self.created = True
                self._committed(responses[0].response_put.header.revision)
                log.info("created cluster %s in etcd", self.cluster_id)
                return

    def apply_raw(self, raw: bytes, revision: int) -> bool:
        """Take a document seen in etcd, if newer than ours; True if it was."""
        if revision <= self.revision:
            return False
        self._apply(msgpack.unpackb(raw, strict_map_key=False))
        self._committed(revision)
        return True

    def _committed(self, revision: int) -> None:
        """The state now is etcd's document at `revision`."""
        self.revision = revision
        self.committed_ids = {t.topic_id for t in self.topics.values()}

    async def _update(self, change: Callable[[], T]) -> T:
        for _ in range(_MAX_ATTEMPTS):
            before, revision = self.document(), self.revision
            had = {(t.topic_id, i) for t in self.topics.values() for i in range(t.partitions)}
            try:
                result = change()
            except BaseException:
                self._apply(before)
                raise
            added = [
                (t.topic_id, i)
                for t in self.topics.values()
                for i in range(t.partitions)
                if (t.topic_id, i) not in had
            ]
            extra = self._new_partitions(added) if added and self._new_partitions else []
            t = self.client.transactions
            try:
                ok, responses = await self.client.transaction(
                    compare=[t.mod(self.key) == revision],
                    success=[t.put(self.key, self.encode()), *(t.put(k, v) for k, v in extra)],
                    failure=[t.get(self.key)],
                )
            except BaseException:
                if self.revision == revision:  # else the watch brought a newer document
                    self._apply(before)
                raise
            if ok:
                self._committed(responses[0].response_put.header.revision)
                return result
            # another broker wrote first: start again from its document (the watch may
            # have applied it already, over our uncommitted change)
            if responses and responses[0]:
                value, kv = responses[0][0]
                self._apply(msgpack.unpackb(value, strict_map_key=False))
                self._committed(kv.mod_revision)
            else:
                self._apply(before)
        raise RuntimeError("cluster metadata: too many conflicting writers")
