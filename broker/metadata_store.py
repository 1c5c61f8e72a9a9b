"""Cluster metadata of the embedded broker: cluster id, topics, producer-id blocks.

It lives in the object store beside the data, so a broker started on an empty data
directory with the same bucket finds its topics again. Small and rarely written:
each change replaces one msgpack object by compare-and-set (s3stream.versioned), so a
second broker writing the same bucket is refused instead of silently overwriting.
Cluster mode swaps this for etcd behind the same methods.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgpack

from aio.tasks import run_to_completion
from s3stream.store import ObjectNotFound, ObjectStore
from s3stream.versioned import ConflictingWrite, VersionedObject

METADATA_KEY = "metadata/cluster.msgpack"
log = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000
T = TypeVar("T")


class MetadataConflict(ConflictingWrite):
    """Another writer changed the stored metadata; this broker took its state."""


@dataclass
class TopicRecord:
    name: str
    topic_id: bytes
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    internal: bool = False  # the broker's own topics, such as __consumer_offsets
    log_start: dict[int, int] = field(default_factory=dict)  # partition -> DeleteRecords point

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.topic_id)


class MetadataStore:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.cluster_id = ""
        self.topics: dict[str, TopicRecord] = {}
        self.producer_id_limit = 0  # ids below this are handed out or reserved
        self._object = VersionedObject(store, METADATA_KEY)
        self._lock = asyncio.Lock()
        # dynamic broker configs by scope: "" the cluster default, "<id>" one broker
        self.broker_configs: dict[str, dict[str, str]] = {}
        self.created = False  # load() found no metadata and started a new cluster
        # security (broker.security): ACL bindings as dicts, and SCRAM credentials by
        # user and mechanism (salt, iterations, StoredKey, ServerKey; never a password)
        self.acls: list[dict] = []
        self.scram: dict[str, dict[str, dict]] = {}
        # client quotas (KIP-546): {"entity": [[type, name or None], ...], "values": {k: v}}
        self.quotas: list[dict] = []
        self.links: dict[str, dict] = {}  # topic links from other clusters (broker.links)

    async def load(self, legacy: Path | None = None) -> None:
        """Read the metadata; if the store has none, import `legacy` (the local file of
        brokers from before the object store) or start a new cluster (`created`)."""
        self.created = False
        try:
            raw, etag = await self.store.get_with_etag(METADATA_KEY)
            self._object.seen(raw, etag)
        except ObjectNotFound:
            if legacy is None or not legacy.exists():
                self.cluster_id = new_cluster_id()
                self.created = True
                await self.save()
                return
            raw = await asyncio.to_thread(legacy.read_bytes)
            self._apply(msgpack.unpackb(raw, strict_map_key=False))
            await self.save()
            log.info("imported the metadata of %s into the object store", legacy)
            return
        self._apply(msgpack.unpackb(raw, strict_map_key=False))

    async def load_read_only(self) -> None:
        """Read the stored metadata and never write (offline tools reading a bucket);
        ObjectNotFound if the bucket has none."""
        raw = await self.store.get(METADATA_KEY)
        self._apply(msgpack.unpackb(raw, strict_map_key=False))

    async def update(self, change: Callable[[], T]) -> T:
        """Apply `change` (which edits this object, and may raise to refuse) and persist
        it; if it cannot be persisted, the state before it is restored. Changes run one
        at a time, and each runs to its end even if its caller is cancelled: a write that
        lands while nobody waits for it would otherwise leave a stale ETag (refusing
        every later change) and memory rolled back under a stored document that holds
        the change. Cluster mode re-reads and re-applies the change when another broker
        wrote first."""
        async with self._lock:
            return await run_to_completion(self._update(change))

    async def _update(self, change: Callable[[], T]) -> T:
        before = self.document()
        try:
            result = change()
            await self.save()
        except MetadataConflict:
            raise  # the state is now the stored document: nothing to restore
        except BaseException:
            self._apply(before)
            raise
        return result

    def _apply(self, doc: dict) -> None:
        """Take `doc` as the state; records of topics that stay are updated in place, so
        the broker's references to them stay valid."""
        self.cluster_id = doc["cluster_id"]
        self.producer_id_limit = doc["producer_id_limit"]
        topics = {}
        for t in doc["topics"]:
            rec = self.topics.get(t["name"])
            if rec is None or rec.topic_id != t["id"]:
                rec = TopicRecord(t["name"], t["id"], 0)
            rec.partitions = t["partitions"]
            rec.configs = dict(t["configs"])
            rec.internal = t.get("internal", False)
            rec.log_start = {int(p): o for p, o in t.get("log_start", {}).items()}
            topics[rec.name] = rec
        self.topics = topics
        self.broker_configs = {
            str(scope): dict(configs) for scope, configs in doc.get("broker_configs", {}).items()
        }
        self.acls = [dict(a) for a in doc.get("acls", [])]
        self.scram = {
            str(user): {str(m): dict(c) for m, c in mechs.items()}
            for user, mechs in doc.get("scram", {}).items()
        }
        self.quotas = [
            {"entity": [list(e) for e in q["entity"]], "values": dict(q["values"])}
            for q in doc.get("quotas", [])
        ]
        self.links = copy.deepcopy(doc.get("links", {}))

    def document(self) -> dict:
        return {
            "version": 1,
            "cluster_id": self.cluster_id,
            "producer_id_limit": self.producer_id_limit,
            "topics": [
                {
                    "name": t.name,
                    "id": t.topic_id,
                    "partitions": t.partitions,
                    "configs": dict(t.configs),
                    "internal": t.internal,
                    "log_start": dict(t.log_start),
                }
                for t in self.topics.values()
            ],
            "broker_configs": {scope: dict(c) for scope, c in self.broker_configs.items()},
            "acls": [dict(a) for a in self.acls],
            "scram": {u: {m: dict(c) for m, c in ms.items()} for u, ms in self.scram.items()},
            "quotas": [
                {"entity": [list(e) for e in q["entity"]], "values": dict(q["values"])}
                for q in self.quotas
            ],
            "links": copy.deepcopy(self.links),
        }

    def encode(self) -> bytes:
        return msgpack.packb(self.document())

    async def save(self) -> None:
        try:
            await self._object.write(self.encode())
        except ConflictingWrite as e:
            log.error("%s was written by someone else; taking its state", METADATA_KEY)
            self._apply(msgpack.unpackb(e.stored, strict_map_key=False))
            self._object.seen(e.stored, e.etag)
            raise MetadataConflict(METADATA_KEY, e.stored, e.etag) from None


def new_cluster_id() -> str:
    """Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
