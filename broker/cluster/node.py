"""This broker's part in a cluster: registration, the assignments, the controller seat.

A broker leads a partition when its etcd assignment names it, and it has opened the
partition (see LogManager.adopt). It answers for the partition (takes writes, serves
reads, acknowledges) only while its lease is surely alive: once the lease deadline
passes without a confirmed refresh, etcd may already have let the controller give
the partition to another broker, so nothing it writes from then on may become visible.
After a lost lease it re-registers and confirms each partition it still holds with a
compare-and-swap, which fails if the controller moved the partition meanwhile.

What this broker does about the assignments (open, hand off, drop partitions) is
broker.cluster.follower, built after the log: the node is built before it, since the
log reads the cluster's metadata through `meta`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aetcd

from broker.cluster import assignment as asg
from broker.cluster.assignment import NONE, Assignment, Key
from broker.cluster.controller import Controller
from broker.cluster.election import ControllerElection
from broker.cluster.etcd import KeySpace, PrefixMirror, connect, within
from broker.cluster.membership import BrokerIdInUse, BrokerInfo, Membership
from broker.cluster.metadata import EtcdMetadataStore
from broker.cluster.orphans import OrphanKeeper
from broker.cluster.wakeups import Wakeups

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.log.partition import Partition
    from s3stream.store import ObjectStore

log = logging.getLogger(__name__)


class ClusterNode:
    """Registration and the lease, the assignments as etcd has them, the cluster's
    metadata document, and the controller seat; built from the configuration and the
    object store alone."""

    def __init__(self, config: BrokerConfig, store: ObjectStore) -> None:
        c = config
        self.broker_id = c.broker_id
        self.client = connect(c.etcd)
        self.keys = KeySpace(c.cluster_name)
        # one poke wakes whoever follows the cluster (follower, orphan recovery)
        self.changes = Wakeups()
        listeners = tuple(
            (lst.name, lst.advertised_host, lst.advertised_port) for lst in c.listeners()
        )
        _, host, port = listeners[0]
        self.info = BrokerInfo(c.broker_id, host, port, c.rack or None, listeners)
        self.membership = Membership(
            self.client,
            c.cluster_name,
            self.info,
            ttl=c.lease_ttl_ms / 1000,
            on_change=lambda _: self.changed(),
        )
        self.meta = EtcdMetadataStore(
            self.client, self.keys, new_partitions=self._initial_assignments
        )
        self.assignments: dict[Key, Assignment] = {}
        self._partitions = PrefixMirror(self.client, asg.prefix(self.keys), self._on_partitions)
        self.controller = Controller(
            self.client,
            self.keys,
            self.meta,
            store,
            broker_id=c.broker_id,
            live=self.membership.live,
            assignments=lambda: self.assignments,
            max_moves=c.max_partition_moves,
            sweep_interval=c.retention_check_interval_ms / 1000,
            delete_delay=c.object_delete_delay_ms / 1000,
        )
        self.election = ControllerElection(
            self.client,
            c.cluster_name,
            c.broker_id,
            lease=self.membership,
            on_gain=self.controller.start,
            on_loss=self.controller.stop,
        )
        self.orphans = OrphanKeeper(self.client, self.keys, store, broker_id=c.broker_id)
        self._token = 0  # the lease under which this broker's leaderships are confirmed

    # --- lifecycle --------------------------------------------------------------------

    async def join(self) -> None:
        """Read the cluster metadata and register; before the log is opened, so it is
        opened with the partitions this broker leads."""
        await self.meta.load()
        while True:
            try:
                await self.membership.start()
                break
            except BrokerIdInUse as e:
                # a restart faster than the old registration's expiry: wait it out
                log.warning("%s; waiting for it to expire", e)
                await asyncio.sleep(min(2.0, max(0.5, (e.expires_in or 1) / 2)))
        self._token = self.membership.lease_id
        await self._partitions.start()

    async def start(self) -> None:
        await self.election.start()
        self.changed()

    async def resign(self) -> None:
        """Give up the controller seat (a successor places what is released next)."""
        await self.controller.wait_stopped()
        await self.election.stop()

    async def stop(self) -> None:
        """Deregister and disconnect (after the follower handed the partitions back)."""
        await self.membership.stop()
        await self._partitions.stop()
        with contextlib.suppress(Exception):
            await within(self.client.close(), 2.0)

    # --- state ------------------------------------------------------------------------

    def leads(self, topic_id: bytes, partition: int) -> int | None:
        """The epoch at which this broker leads the partition, per etcd (None: not)."""
        a = self.assignments.get((topic_id, partition))
        return a.epoch if a is not None and a.leader == self.broker_id else None

    def awaited(self, topic_id: bytes, partition: int) -> bool:
        """Whether another broker is to open the partition from this one's catalog."""
        a = self.assignments.get((topic_id, partition))
        return a is not None and a.leader != self.broker_id and a.source == self.broker_id

    def lease_ok(self) -> bool:
        """Whether this broker's leaderships surely still stand (see the module doc)."""
        m = self.membership
        return (
            m.lease_id != 0
            and m.lease_id == self._token
            and asyncio.get_running_loop().time() < m.lease_deadline
        )

    def lease_changed(self) -> bool:
        """Whether the lease was lost and renewed since the leaderships were confirmed."""
        return self.membership.lease_id != self._token

    def confirm_lease(self, token: int) -> None:
        """The leaderships still held were confirmed under lease `token`."""
        self._token = token

    def serves(self, p: Partition) -> bool:
        return p.leading and self.lease_ok()

    def leader_of(self, topic_id: bytes, partition: int) -> tuple[int, int]:
        """(leader id, epoch) as etcd has it; leader -1 when it is not live."""
        a = self.assignments.get((topic_id, partition))
        if a is None:
            return NONE, 0
        if not self.membership.is_live(a.leader):
            return NONE, a.epoch
        return a.leader, a.epoch

    def live(self) -> dict[int, BrokerInfo]:
        return self.membership.live()

    def _initial_assignments(self, added: list[Key]) -> list[tuple[bytes, bytes]]:
        """Leaders for a new topic's partitions, round-robin from the least loaded live
        broker, written with the topic so it is usable at once."""
        live = sorted(self.membership.live()) or [self.broker_id]
        load = {b: 0 for b in live}
        for a in self.assignments.values():
            if a.leader in load:
                load[a.leader] += 1
        order = sorted(live, key=lambda b: (load[b], b))
        return [
            (asg.key_of(self.keys, *k), Assignment(order[i % len(order)], 0).encode())
            for i, k in enumerate(added)
        ]

    # --- following etcd ---------------------------------------------------------------

    def _on_partitions(self, items: dict[bytes, aetcd.KeyValue]) -> None:
        self.assignments = asg.parse_all(self.keys, items)
        self.changed()

    def changed(self) -> None:
        self.changes.poke()
        self.controller.poke()
