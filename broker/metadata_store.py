"""Cluster metadata of the embedded broker: cluster id, topics, producer-id blocks.

Small and rarely written, so each change rewrites one msgpack file atomically
(write, fsync, rename, fsync the directory). Cluster mode swaps this for etcd
behind the same methods.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from wal.segment import fsync_dir

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
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.cluster_id = ""
        self.topics: dict[str, TopicRecord] = {}
        self.producer_id_limit = 0  # ids below this are handed out or reserved

    def load(self) -> None:
        if not self.path.exists():
            self.cluster_id = _new_cluster_id()
            self.save()
            return
        doc = msgpack.unpackb(self.path.read_bytes(), strict_map_key=False)
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

    def save(self) -> None:
        """Blocking; callers on the event loop run it on a thread."""
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
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(msgpack.packb(doc))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def _new_cluster_id() -> str:
    """Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
