"""Transaction markers: the commit or abort control batch, in every partition of a
transaction, written where the partition is led.

The coordinator appends markers itself to the partitions this broker leads, and sends
WriteTxnMarkers to the leaders of the others (cluster mode). A marker counts once it
is durable by the broker's contract, like any produce. Partitions without a leader
right now are retried until they have one: a prepared transaction always finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from broker.groups.committed import OFFSETS_TOPIC
from broker.peers import PeerUnavailable
from protocol import records
from protocol.errors import ErrorCode
from protocol.record_codec import control_batch
from protocol.versions import ApiKey
from wal import WalFailure

if TYPE_CHECKING:
    from broker.groups.offset_store import OffsetStore
    from broker.leadership import Leadership
    from broker.log.manager import LogManager
    from broker.peers import Peers
    from broker.txn.state import TopicPartition

log = logging.getLogger(__name__)

_DONE = (ErrorCode.none, ErrorCode.unknown_topic_or_partition)  # a deleted topic needs none


class MarkerWriter:
    def __init__(
        self, logs: LogManager, leadership: Leadership, offsets: OffsetStore, peers: Peers
    ) -> None:
        self.logs = logs
        self.leadership = leadership
        self.offsets = offsets
        self.peers = peers

    async def write_local(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        partitions: list[TopicPartition],
    ) -> dict[TopicPartition, ErrorCode]:
        """Append the marker to partitions this broker leads and wait until durable."""
        results, appended = self.append_local(
            producer_id, producer_epoch, commit, coordinator_epoch, partitions
        )
        if not appended:
            return results
        try:
            await self.logs.wait_acked(max(a[3] for a in appended))
        except WalFailure as e:
            log.error("transaction markers not durable: %s", e)
            results.update((tp, ErrorCode.kafka_storage_error) for tp, *_ in appended)
            return results
        results.update(self.settle(producer_id, commit, appended))
        return results

    def append_local(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        partitions: list[TopicPartition],
    ) -> tuple[dict[TopicPartition, ErrorCode], list]:
        """Append the marker where this broker leads, without waiting: (errors of the
        partitions it could not append to, the appended ones for `settle`)."""
        logs = self.logs
        batch = control_batch(
            producer_id, producer_epoch, commit, coordinator_epoch, int(time.time() * 1000)
        )
        h = records.validate(batch)
        results: dict[TopicPartition, ErrorCode] = {}
        appended = []
        for topic, index in partitions:
            state = logs.topics.get(topic)
            p = state.partitions[index] if state and 0 <= index < len(state.partitions) else None
            if p is None or p.deleted:
                results[(topic, index)] = ErrorCode.unknown_topic_or_partition
            elif not self.leadership.serves(p):
                results[(topic, index)] = ErrorCode.not_leader_or_follower
            else:
                try:
                    a = logs.append(state, p, batch, h)
                except WalFailure:
                    results[(topic, index)] = ErrorCode.kafka_storage_error
                    continue
                assert a.wal_end is not None
                appended.append(((topic, index), p, p.fenced, a.wal_end))
        return results, appended

    def settle(self, producer_id: int, commit: bool, appended: list) -> dict:
        """Once the appended markers are durable: which ones count (a partition taken
        away meanwhile does not), and offsets committed in the transaction applied."""
        results: dict[TopicPartition, ErrorCode] = {}
        may_ack = self.leadership.may_ack()
        for tp, p, fenced, _ in appended:
            if not may_ack or p.fenced != fenced:
                results[tp] = ErrorCode.not_leader_or_follower
                continue
            results[tp] = ErrorCode.none
            if tp[0] == OFFSETS_TOPIC:
                self.offsets.complete_txn(producer_id, commit)
        return results

    async def write(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        partitions: frozenset[TopicPartition],
    ) -> None:
        """Every partition has the marker, durably, when this returns."""
        pending = set(partitions)
        delay = 0.05
        while pending:
            local, remote = self.by_leader(pending)
            results = await self.write_local(
                producer_id, producer_epoch, commit, coordinator_epoch, local
            )
            for broker_id, tps in remote.items():
                results.update(
                    await self._write_remote(
                        broker_id, producer_id, producer_epoch, commit, coordinator_epoch, tps
                    )
                )
            pending = {tp for tp, e in results.items() if e not in _DONE}
            if pending:
                log.info(
                    "transaction markers for producer %d: %d partitions to retry (%s)",
                    producer_id,
                    len(pending),
                    sorted({results[tp].name for tp in pending}),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def by_leader(
        self, partitions: set[TopicPartition]
    ) -> tuple[list[TopicPartition], dict[int, list[TopicPartition]]]:
        local: list[TopicPartition] = []
        remote: dict[int, list[TopicPartition]] = {}
        for topic, index in sorted(partitions):
            state = self.logs.topics.get(topic)
            if state is None or not 0 <= index < len(state.partitions):
                local.append((topic, index))  # answered as unknown: nothing to mark
                continue
            p = state.partitions[index]
            leader, _ = self.leadership.leader_of(p)
            if self.leadership.serves(p) or leader < 0:
                local.append((topic, index))
            else:
                remote.setdefault(leader, []).append((topic, index))
        return local, remote

    async def _write_remote(
        self,
        broker_id: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        partitions: list[TopicPartition],
    ) -> dict[TopicPartition, ErrorCode]:
        peer = next((b for b in self.leadership.brokers() if b.broker_id == broker_id), None)
        failed = dict.fromkeys(partitions, ErrorCode.not_leader_or_follower)
        if peer is None:
            return failed
        by_topic: dict[str, list[int]] = {}
        for topic, index in partitions:
            by_topic.setdefault(topic, []).append(index)
        body = {
            "markers": [
                {
                    "producer_id": producer_id,
                    "producer_epoch": producer_epoch,
                    "transaction_result": commit,
                    "topics": [
                        {"name": t, "partition_indexes": idx} for t, idx in by_topic.items()
                    ],
                    "coordinator_epoch": coordinator_epoch,
                }
            ]
        }
        try:
            response = await self.peers.call(peer, ApiKey.WRITE_TXN_MARKERS, 1, body)
        except PeerUnavailable as e:
            log.warning("WriteTxnMarkers to broker %d failed: %s", broker_id, e)
            return failed
        out = {}
        for m in response.markers:
            for t in m.topics:
                for part in t.partitions:
                    out[(t.name, part.partition_index)] = ErrorCode(part.error_code)
        return {**failed, **out}
