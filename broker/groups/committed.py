"""The committed offsets and group types this broker knows, as rebuilt from the records
of `__consumer_offsets`: a table fed by replay at start (and when an offsets partition
moves here) and by commits once durable. Built before the log, which replays into it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgpack

from protocol.record_codec import decode_records

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSET_KEY = 1  # record key [1, group, topic, partition]: value [offset, epoch, metadata, ts]
GROUP_KEY = 2  # record key [2, group]: value [protocol type]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp: int


TopicPartitionKey = tuple[str, int]


class CommittedOffsets:
    def __init__(self) -> None:
        self.offsets: dict[str, dict[TopicPartitionKey, CommittedOffset]] = {}
        self.group_types: dict[str, str] = {}  # protocol type of groups that had members

    def replay(self, batch: bytes) -> None:
        """Apply one batch of the offsets topic (replayed from the log)."""
        try:
            for r in decode_records(batch):
                self.apply(r.key, r.value)
        except Exception as e:
            log.error("skipping an unreadable batch in %s: %r", OFFSETS_TOPIC, e)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        kind, group, *rest = msgpack.unpackb(key)
        if kind == GROUP_KEY:
            if value is None:
                self.group_types.pop(group, None)
            else:
                (self.group_types[group],) = msgpack.unpackb(value)
            return
        if kind != OFFSET_KEY:
            return
        topic, partition = rest
        table = self.offsets.setdefault(group, {})
        if value is None:
            table.pop((topic, partition), None)
            if not table:
                del self.offsets[group]
        else:
            offset, epoch, metadata, ts = msgpack.unpackb(value)
            table[(topic, partition)] = CommittedOffset(offset, epoch, metadata, ts)
