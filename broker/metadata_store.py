"""Cluster metadata of the embedded broker: cluster id, topics, producer-id blocks.

It lives in the object store beside the data, so a broker started on an empty data
directory with the same bucket finds its topics again. Small and rarely written:
each change replaces one msgpack object, with If-Match on the ETag last seen so a
second broker writing the same bucket is refused instead of silently overwriting.
Cluster mode swaps this for etcd behind the same methods.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from s3stream.store import ObjectNotFound, ObjectStore, replace_if_match

METADATA_KEY = "metadata/cluster.msgpack"
log = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000


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
        self._etag: str | None = None
        self.created = False  # load() found no metadata and started a new cluster

    async def load(self, legacy: Path | None = None) -> None:
        """Read the metadata; if the store has none, import `legacy` (the local file of
        brokers from before the object store) or start a new cluster (`created`)."""
        self.created = False
        try:
            raw, self._etag = await self.store.get_with_etag(METADATA_KEY)
        except ObjectNotFound:
            if legacy is None or not legacy.exists():
                self.cluster_id = _new_cluster_id()
                self.created = True
                await self.save()
                return
            raw = await asyncio.to_thread(legacy.read_bytes)
            self._apply(msgpack.unpackb(raw, strict_map_key=False))
            await self.save()
            log.info("imported the metadata of %s into the object store", legacy)
            return
        self._apply(msgpack.unpackb(raw, strict_map_key=False))

    def _apply(self, doc: dict) -> None:
        self.cluster_id = doc["cluster_id"]
        self.producer_id_limit = doc["producer_id_limit"]
        self.topics = {
            t["name"]: TopicRecord(
                t["name"],
                t["id"],
                t["partitions"],
                dict(t["configs"]),
                t.get("internal", False),
                {int(p): o for p, o in t.get("log_start", {}).items()},
            )
            for t in doc["topics"]
        }

    async def save(self) -> None:
        doc = {
            "version": 1,
            "cluster_id": self.cluster_id,
            "producer_id_limit": self.producer_id_limit,
            "topics": [
                {
                    "name": t.name,
                    "id": t.topic_id,
                    "partitions": t.partitions,
                    "configs": t.configs,
                    "internal": t.internal,
                    "log_start": t.log_start,
                }
                for t in self.topics.values()
            ],
        }
        data = msgpack.packb(doc)
        self._etag = await replace_if_match(self.store, METADATA_KEY, data, self._etag)


def _new_cluster_id() -> str:
    """Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
