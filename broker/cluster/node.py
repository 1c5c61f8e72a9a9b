"""This broker's part in a cluster: registration, following the assignments, hand-offs.

A broker leads a partition when its etcd assignment names it, and it has opened the
partition (see LogManager.adopt). It answers for the partition (takes writes, serves
reads, acknowledges) only while its lease is surely alive: once the lease deadline
passes without a confirmed refresh, etcd may already have let the controller give
the partition to another broker, so nothing it writes from then on may become visible.
After a lost lease it re-registers and confirms each partition it still holds with a
compare-and-swap, which fails if the controller moved the partition meanwhile.

Hand-off (the controller set `target`): stop taking writes, upload what the WAL holds,
snapshot the catalog, then swap the assignment to the target at epoch + 1. The target
opens the partition from this broker's catalog: only the not-yet-uploaded tail was
ever local, and it is in the bucket by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import aetcd

from aio.events import wait_event
from broker.cluster import assignment as asg
from broker.cluster.assignment import NONE, Assignment, Key
from broker.cluster.controller import Controller
from broker.cluster.election import ControllerElection
from broker.cluster.etcd import KeySpace, PrefixMirror, cancel_within, connect, describe, within
from broker.cluster.membership import BrokerIdInUse, BrokerInfo, Membership
from broker.cluster.metadata import EtcdMetadataStore
from broker.cluster.orphans import OrphanRecovery

if TYPE_CHECKING:
    from broker.app import Broker
    from broker.log.partition import Partition
    from protocol.records import BatchHeader

log = logging.getLogger(__name__)

Adoption = tuple["Partition", int, int]  # a partition to open, at this epoch, from this source


class ClusterNode:
    def __init__(self, broker: Broker) -> None:
        c = broker.config
        self.broker = broker
        self.broker_id = c.broker_id
        self.client = connect(c.etcd)
        self.keys = KeySpace(c.cluster_name)
        host, port = c.advertised
        self.info = BrokerInfo(c.broker_id, host, port, c.rack or None)
        self.membership = Membership(
            self.client,
            c.cluster_name,
            self.info,
            ttl=c.lease_ttl_ms / 1000,
            on_change=lambda _: self._changed(),
        )
        self.meta = EtcdMetadataStore(
            self.client, self.keys, new_partitions=self._initial_assignments
        )
        self.assignments: dict[Key, Assignment] = {}
        self._partitions = PrefixMirror(self.client, asg.prefix(self.keys), self._on_partitions)
        self._metadata = PrefixMirror(self.client, self.meta.key, self._on_metadata)
        self.controller = Controller(
            self.client,
            self.keys,
            self.meta,
            broker.store,
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
        # the log is built after this node (it needs `meta`): reached when called
        self.orphans = OrphanRecovery(
            self.client,
            self.keys,
            broker.store,
            broker_id=c.broker_id,
            find=self._partition,
            serves=self.serves,
            append=self._append_orphan,
            wait_acked=lambda wal_end: self.broker.logs.wait_acked(wal_end),
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._token = 0  # the lease under which this broker's leaderships are confirmed
        self.handoffs = 0
        self.adoptions = 0

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
        await self._metadata.start()

    def leads(self, topic_id: bytes, partition: int) -> int | None:
        """The epoch at which this broker leads the partition, per etcd (None: not)."""
        a = self.assignments.get((topic_id, partition))
        return a.epoch if a is not None and a.leader == self.broker_id else None

    def awaited(self, topic_id: bytes, partition: int) -> bool:
        """Whether another broker is to open the partition from this one's catalog."""
        a = self.assignments.get((topic_id, partition))
        return a is not None and a.leader != self.broker_id and a.source == self.broker_id

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="cluster")
        await self.orphans.start()
        await self.election.start()
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Leave gracefully: hand every partition back (uploaded and snapshotted, marked
        leaderless so the controller places it at once), then deregister."""
        task, self._task = self._task, None
        await cancel_within(task)
        await self.controller.wait_stopped()
        await self.election.stop()  # a successor controller places what is released next
        logs = self.broker.logs
        me = self.broker_id
        held = logs.live_partitions()
        if held and self.lease_ok():
            try:
                # leaderless at the same epoch: the controller's pick leads at epoch + 1
                await within(
                    self._release(held, lambda a: replace(a, leader=NONE, source=me, target=NONE)),
                    timeout,
                )
            except Exception as e:
                log.warning(
                    "could not hand the partitions over (%s); they move when the lease "
                    "expires, from this broker's catalog",
                    describe(e),
                )
        await self.orphans.stop()
        await self.membership.stop()
        await self._partitions.stop()
        await self._metadata.stop()
        with contextlib.suppress(Exception):
            await within(self.client.close(), 2.0)

    # --- state ------------------------------------------------------------------------

    def lease_ok(self) -> bool:
        """Whether this broker's leaderships surely still stand (see the module doc)."""
        m = self.membership
        return (
            m.lease_id != 0
            and m.lease_id == self._token
            and asyncio.get_running_loop().time() < m.lease_deadline
        )

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

    # --- the log, for orphan recovery (built after this node: reached when called) ---

    def _partition(self, topic_id: bytes, index: int) -> Partition | None:
        state = self.broker.logs.topics_by_id.get(topic_id)
        if state is None or index >= len(state.partitions):
            return None
        return state.partitions[index]

    def _append_orphan(self, p: Partition, batch: bytes, header: BatchHeader) -> int:
        logs = self.broker.logs
        return logs.append(logs.topics_by_id[p.topic_id], p, batch, header).wal_end or 0

    # --- following etcd ---------------------------------------------------------------

    def _on_partitions(self, items: dict[bytes, aetcd.KeyValue]) -> None:
        self.assignments = asg.parse_all(self.keys, items)
        self._changed()

    def _on_metadata(self, items: dict[bytes, aetcd.KeyValue]) -> None:
        kv = items.get(self.meta.key)
        if kv is not None and self.meta.apply_raw(kv.value, kv.mod_revision):
            self.broker.logs.sync_topics()
        self._changed()

    def _changed(self) -> None:
        self._wake.set()
        self.controller.poke()
        self.orphans.poke()

    async def _follow(self) -> None:
        while True:
            await wait_event(self._wake, 1.0)
            self._wake.clear()
            try:
                # cancellable (it may wait for uploads): a swap etcd committed that this
                # broker never recorded comes back through the assignment watch, and
                # the next reconcile drops or leads the partition accordingly
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("following the cluster's assignments failed (%s); retrying", e)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _reconcile(self) -> None:
        if self.membership.lease_id != self._token:
            if not self.membership.lease_id:
                return  # not registered at the moment
            await self._confirm_after_lost_lease()
        adopt, hand_off, resume = await self._sort_out()
        if resume:
            await self._resume(resume)
        if hand_off:
            me = self.broker_id
            await self._release(hand_off, lambda a: a.handed_to(a.target, me))
        if adopt and self.lease_ok():
            await self._adopt(adopt)

    async def _sort_out(self) -> tuple[list[Adoption], list[Partition], list[Partition]]:
        """Compare each partition of the log with its assignment: those to open (with
        the epoch and source), to hand over, and to lead again; drops those another
        broker took without a hand-off."""
        me = self.broker_id
        adopt: list[Adoption] = []
        hand_off: list[Partition] = []
        resume: list[Partition] = []
        for state in list(self.broker.logs.topics.values()):
            for p in state.partitions:
                a = self.assignments.get((p.topic_id, p.index))
                mine = a is not None and a.leader == me
                if p.held and (not mine or a.epoch != p.leader_epoch):
                    # taken without a hand-off (a failover while this broker was cut
                    # off); if it is ours again, it is reopened from the bucket
                    log.warning("%s: led by broker %s now; dropped here", p, a and a.leader)
                    await self._let_go(p)
                if p.held:
                    if a.target not in (NONE, me):
                        hand_off.append(p)
                    elif not p.leading:  # a hand-off that did not happen
                        resume.append(p)
                elif mine:
                    adopt.append((p, a.epoch, a.source))
        return adopt, hand_off, resume

    async def _resume(self, parts: list[Partition]) -> None:
        """Lead again partitions whose hand-off did not happen."""
        logs = self.broker.logs
        with contextlib.suppress(Exception):
            await logs.delete_handoffs(parts)
        for p in parts:
            logs.lead(p)

    async def _adopt(self, wanted: list[Adoption]) -> None:
        """Open partitions, record in etcd that their log is stored here now (so a
        failover reopens them from this broker's catalog), then lead them."""
        logs = self.broker.logs
        opened = await logs.adopt(wanted)
        led = []
        for p in opened:
            k = (p.topic_id, p.index)
            a = self.assignments.get(k)
            ok = False
            if a is not None and a.leader == self.broker_id and a.epoch == p.leader_epoch:
                ok, now = True, a
                if a.source != self.broker_id:
                    ok, now = await asg.swap(
                        self.client, self.keys, k, a, replace(a, source=self.broker_id)
                    )
                if ok and now is not None:
                    self.assignments[k] = now
            if ok:
                logs.lead(p)
                led.append(p)
            else:
                logs.drop(p)  # reassigned meanwhile: never led here
        if led:
            with contextlib.suppress(Exception):  # superseded by this broker's catalog
                await logs.delete_handoffs(led)
        self.adoptions += len(led)
        self.orphans.poke()
        log.info(
            "now leading %d partitions: %s",
            len(led),
            ", ".join(f"{p}@{p.leader_epoch}" for p in led[:20]),
        )

    async def _let_go(self, p: Partition) -> None:
        """Drop a partition another broker took without a hand-off. What this broker
        uploaded is described in a hand-off record (its next snapshot will not), and
        what it acknowledged but never uploaded is kept as orphans."""
        logs = self.broker.logs
        if p.object_entries:
            await logs.write_handoff(p, producers=False)
        await self.orphans.keep(await logs.unuploaded(p))
        logs.drop(p, lost=True)
        logs.snapshot_soon()

    async def _release(
        self, parts: list[Partition], next_of: Callable[[Assignment], Assignment]
    ) -> None:
        """Hand partitions over: fence, upload, write hand-off records, then swap each
        assignment to `next_of(assignment)`. If a swap fails or raises, the partition
        stays fenced until the next reconcile sees what etcd holds: led here still
        (it leads again) or by another broker (dropped)."""
        logs = self.broker.logs
        await logs.release(parts)
        moved = []
        for p in parts:
            k = (p.topic_id, p.index)
            a = self.assignments.get(k)
            if a is None or a.leader != self.broker_id or a.epoch != p.leader_epoch:
                continue  # changed meanwhile: the next reconcile decides
            new = next_of(a)
            if new.leader == self.broker_id:
                continue  # the move was called off meanwhile
            try:
                ok, now = await asg.swap(self.client, self.keys, k, a, new)
            except Exception as e:
                log.warning("%s: hand-off not confirmed (%s); retrying", p, describe(e))
                self._wake.set()
                continue
            if now is not None:
                self.assignments[k] = now
            if ok:
                logs.drop(p)
                moved.append(f"{p}->{new.leader}")
            else:
                self._wake.set()
        self.handoffs += len(moved)
        if moved:
            log.info("handed over %d partitions: %s", len(moved), ", ".join(moved[:20]))
        logs.snapshot_soon()

    async def _confirm_after_lost_lease(self) -> None:
        """The lease was lost and renewed: keep only the partitions whose assignment
        nobody changed meanwhile, confirmed by a swap (which also makes any stale
        decision about them by the controller fail)."""
        logs = self.broker.logs
        token = self.membership.lease_id
        kept = 0
        for p in logs.live_partitions():
            k = (p.topic_id, p.index)
            a = self.assignments.get(k)
            ok = False
            if a is not None and a.leader == self.broker_id and a.epoch == p.leader_epoch:
                ok, now = await asg.swap(self.client, self.keys, k, a, replace(a))
                if ok and now is not None:
                    self.assignments[k] = now
            if ok:
                kept += 1
            else:
                log.warning("%s: lost with the lease; dropped here", p)
                await self._let_go(p)
        self._token = token
        log.info("lease renewed: %d partitions still led here", kept)
