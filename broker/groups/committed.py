"""The committed offsets and group types this broker knows, as rebuilt from the records
of `__consumer_offsets`: a table fed by replay at start (and when an offsets partition
moves here) and by commits once durable. Built before the log, which replays into it.

Offsets committed inside a transaction (TxnOffsetCommit) arrive in transactional
batches: they wait, staged by producer id, until the transaction's marker reaches the
offsets partition; a commit marker applies them, an abort marker drops them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgpack

from protocol.record_codec import COMMIT, control_type, decode_records
from protocol.records import parse_header

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSET_KEY = 1  # record key [1, group, topic, partition]: value [offset, epoch, metadata, ts]
GROUP_KEY = 2  # record key [2, group]: value [protocol type, classic group state or None]
# record key [3, group]: value a KIP-848 consumer group's state (consumer_group.to_record)
CONSUMER_GROUP_KEY = 3
# record key [4, group]: value a share group's state (consumer_group.to_record, KIP-932)
SHARE_GROUP_KEY = 4
# record key [5, group, topic id bytes, partition]: value a share-partition's state
# (share_partition.SharePartition.to_record), Kafka's __share_group_state
SHARE_STATE_KEY = 5


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
        self.consumer_groups: dict[str, dict] = {}  # KIP-848 groups' state records
        self.share_groups: dict[str, dict] = {}  # KIP-932 share groups' state records
        # share group -> (topic id bytes, partition) -> share-partition state record
        self.share_states: dict[str, dict[tuple[bytes, int], dict]] = {}
        self.classic_groups: dict[str, dict] = {}  # classic groups' state (classic_record)
        # producer id -> group -> offsets committed in its open transaction
        self.pending: dict[int, dict[str, dict[TopicPartitionKey, CommittedOffset]]] = {}

    def replay(self, batch: bytes) -> None:
        """Apply one batch of the offsets topic (replayed from the log)."""
        try:
            h = parse_header(batch)
            if h.is_control:
                self.complete(h.producer_id, control_type(batch) == COMMIT)
                return
            for r in decode_records(batch):
                if h.is_transactional:
                    self.stage(h.producer_id, r.key, r.value)
                else:
                    self.apply(r.key, r.value)
        except Exception as e:
            log.error("skipping an unreadable batch in %s: %r", OFFSETS_TOPIC, e)

    def stage(self, producer_id: int, key: bytes | None, value: bytes | None) -> None:
        """An offset committed in a transaction, held until the transaction ends."""
        if key is None or value is None:
            return
        kind, group, *rest = msgpack.unpackb(key)
        if kind != OFFSET_KEY:
            return
        offset, epoch, metadata, ts = msgpack.unpackb(value)
        by_group = self.pending.setdefault(producer_id, {}).setdefault(group, {})
        by_group[tuple(rest)] = CommittedOffset(offset, epoch, metadata, ts)

    def complete(self, producer_id: int, commit: bool) -> None:
        """The transaction's marker reached the offsets partition."""
        for group, offsets in self.pending.pop(producer_id, {}).items():
            if commit:
                self.offsets.setdefault(group, {}).update(offsets)

    def is_pending(self, group_id: str, key: TopicPartitionKey) -> bool:
        """Whether an open transaction holds an offset for the group's partition."""
        return any(key in staged.get(group_id, ()) for staged in self.pending.values())

    def pending_groups(self) -> set[str]:
        return {g for staged in self.pending.values() for g in staged}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        kind, group, *rest = msgpack.unpackb(key)
        if kind == CONSUMER_GROUP_KEY:
            if value is None:
                self.consumer_groups.pop(group, None)
            else:
                self.consumer_groups[group] = msgpack.unpackb(value)
            return
        if kind == SHARE_GROUP_KEY:
            if value is None:
                self.share_groups.pop(group, None)
            else:
                self.share_groups[group] = msgpack.unpackb(value)
            return
        if kind == SHARE_STATE_KEY:
            topic_id, partition = rest
            states = self.share_states.setdefault(group, {})
            if value is None:
                states.pop((topic_id, partition), None)
                if not states:
                    del self.share_states[group]
            else:
                states[(topic_id, partition)] = msgpack.unpackb(value)
            return
        if kind == GROUP_KEY:
            if value is None:
                self.group_types.pop(group, None)
                self.classic_groups.pop(group, None)
            else:
                # [protocol type] or [protocol type, classic group state]
                protocol_type, *state = msgpack.unpackb(value)
                self.group_types[group] = protocol_type
                if state and state[0] is not None:
                    self.classic_groups[group] = state[0]
                else:
                    self.classic_groups.pop(group, None)
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
