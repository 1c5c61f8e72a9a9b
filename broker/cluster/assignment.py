"""Who leads each partition: one etcd key per partition, written by compare-and-swap.

`partitions/<topic id hex>/<partition>` holds the leader, the leader epoch, the broker
whose stored catalog the leader opens the partition from (`source`: the previous
leader), and `target` when the controller has asked the leader to hand it over. The
leader epoch grows with every change of leader, so a stale writer is recognisable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import aetcd

from broker.cluster.etcd import KeySpace, pack, unpack

NONE = -1


@dataclass(frozen=True, slots=True)
class Assignment:
    leader: int
    epoch: int
    source: int = NONE  # whose catalog holds the partition's data (-1: nobody's yet)
    target: int = NONE  # the broker the controller wants to lead it next
    revision: int = 0  # the key's mod_revision when read (not stored)

    def encode(self) -> bytes:
        return pack([self.leader, self.epoch, self.source, self.target])

    @classmethod
    def decode(cls, data: bytes, revision: int = 0) -> Assignment:
        leader, epoch, source, target = unpack(data)
        return cls(leader, epoch, source, target, revision)

    def handed_to(self, leader: int, source: int) -> Assignment:
        """The next leadership: epoch + 1, opened from `source`'s catalog."""
        return replace(self, leader=leader, epoch=self.epoch + 1, source=source, target=NONE)


Key = tuple[bytes, int]  # (topic id, partition)


def prefix(keys: KeySpace) -> bytes:
    return keys.key("partitions", "")


def key_of(keys: KeySpace, topic_id: bytes, partition: int) -> bytes:
    return keys.key("partitions", topic_id.hex(), str(partition))


def parse_key(keys: KeySpace, key: bytes) -> Key | None:
    rest = key[len(prefix(keys)) :].decode(errors="replace").split("/")
    if len(rest) != 2:
        return None
    try:
        return bytes.fromhex(rest[0]), int(rest[1])
    except ValueError:
        return None


def parse_all(keys: KeySpace, items: dict[bytes, aetcd.KeyValue]) -> dict[Key, Assignment]:
    out = {}
    for key, kv in items.items():
        k = parse_key(keys, key)
        if k is None:
            continue
        try:
            out[k] = Assignment.decode(kv.value, kv.mod_revision)
        except Exception:
            continue
    return out


async def swap(
    client: aetcd.Client, keys: KeySpace, k: Key, old: Assignment | None, new: Assignment | None
) -> tuple[bool, Assignment | None]:
    """Replace `old` (None: the key must not exist) by `new` (None: delete), if nobody
    changed it since it was read. Returns (done, the assignment now stored)."""
    t = client.transactions
    key = key_of(keys, *k)
    compare = [t.version(key) == 0] if old is None else [t.mod(key) == old.revision]
    success = [t.delete(key)] if new is None else [t.put(key, new.encode())]
    ok, responses = await client.transaction(compare=compare, success=success, failure=[t.get(key)])
    if ok:
        if new is None:
            return True, None
        return True, replace(new, revision=responses[0].response_put.header.revision)
    if responses and responses[0]:
        value, kv = responses[0][0]
        return False, Assignment.decode(value, kv.mod_revision)
    return False, None
