"""A partition's un-uploaded tail, asked of its leader (cluster mode, another broker).

The bucket has everything uploaded; only the leader has the rest, in its WAL and tail
cache. A replay served by another broker asks it with an ordinary Fetch from the first
offset the bucket lacks, through the broker's own Kafka client (broker.peers).
"""

from __future__ import annotations

import logging

from broker.leadership import Leadership
from broker.log.partition import Partition
from broker.peer_fetch import one_partition_fetch
from broker.peers import Peers, PeerUnavailable
from protocol.records import iter_headers
from protocol.versions import ApiKey

log = logging.getLogger(__name__)

FETCH_VERSION = 11  # topics by name
MAX_BYTES = 16 * 1024 * 1024
MAX_ROUNDS = 64  # a tail larger than MAX_ROUNDS * MAX_BYTES is cut (and logged)


class LeaderTail:
    def __init__(self, leadership: Leadership, peers: Peers) -> None:
        self.leadership = leadership
        self.peers = peers

    async def __call__(self, p: Partition, offset: int) -> list[bytes | memoryview]:
        """The leader's batches from `offset` to its high watermark; [] if it cannot be
        reached (the replay then has what the bucket has)."""
        leader_id, _ = self.leadership.leader_of(p)
        peer = next((b for b in self.leadership.brokers() if b.broker_id == leader_id), None)
        if peer is None:
            return []
        out: list[bytes | memoryview] = []
        for _ in range(MAX_ROUNDS):
            body = one_partition_fetch(p.topic, p.index, offset, MAX_BYTES)
            try:
                response = await self.peers.call(peer, ApiKey.FETCH, FETCH_VERSION, body)
            except PeerUnavailable as e:
                log.warning("replay of %s: the leader's tail is out of reach (%s)", p, e)
                return out
            part = response.responses[0].partitions[0]
            if int(part.error_code) != 0 or not part.records:
                return out
            view = memoryview(part.records)
            for pos, h in iter_headers(view):
                if h.last_offset >= offset:
                    out.append(view[pos : pos + h.size])
                    offset = h.last_offset + 1
            if offset >= part.high_watermark:
                return out
        log.warning("replay of %s: the leader's tail was cut at offset %d", p, offset)
        return out
