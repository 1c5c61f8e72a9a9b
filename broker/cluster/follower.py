"""Following the assignments: open the partitions etcd gives this broker, hand over
those the controller moves away, drop those taken without a hand-off.

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
from broker.cluster.assignment import NONE, Assignment
from broker.cluster.etcd import PrefixMirror, cancel_within, describe, within
from broker.cluster.orphans import OrphanRecovery

if TYPE_CHECKING:
    from broker.cluster.node import ClusterNode
    from broker.log.manager import LogManager
    from broker.log.partition import Partition
    from protocol.records import BatchHeader
    from s3stream.store import ObjectStore

log = logging.getLogger(__name__)

Adoption = tuple["Partition", int, int]  # a partition to open, at this epoch, from this source


class PartitionFollower:
    """Acts on this broker's log as the node's assignments change; built after the log."""

    def __init__(self, node: ClusterNode, logs: LogManager, store: ObjectStore) -> None:
        self._node = node
        self._me = node.broker_id
        self.logs = logs
        self._wake = node.changes.listener()
        self.recovery = OrphanRecovery(
            node.client,
            node.keys,
            store,
            wake=node.changes.listener(),
            find=self._partition,
            serves=node.serves,
            append=self._append_orphan,
            wait_acked=logs.wait_acked,
        )
        self._metadata = PrefixMirror(node.client, node.meta.key, self._on_metadata)
        self._task: asyncio.Task[None] | None = None
        self.handoffs = 0
        self.adoptions = 0

    async def start(self) -> None:
        await self._metadata.start()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="cluster")
        await self.recovery.start()
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Leave gracefully: hand every partition back (uploaded and snapshotted, marked
        leaderless so the controller places it at once)."""
        task, self._task = self._task, None
        await cancel_within(task)
        await self._node.resign()
        me = self._me
        held = self.logs.live_partitions()
        if held and self._node.lease_ok():
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
        await self.recovery.stop()
        await self._metadata.stop()

    def _partition(self, topic_id: bytes, index: int) -> Partition | None:
        state = self.logs.topics_by_id.get(topic_id)
        if state is None or index >= len(state.partitions):
            return None
        return state.partitions[index]

    def _append_orphan(self, p: Partition, batch: bytes, header: BatchHeader) -> int:
        logs = self.logs
        return logs.append(logs.topics_by_id[p.topic_id], p, batch, header).wal_end or 0

    def _on_metadata(self, items: dict[bytes, aetcd.KeyValue]) -> None:
        kv = items.get(self._node.meta.key)
        if kv is not None and self._node.meta.apply_raw(kv.value, kv.mod_revision):
            self.logs.sync_topics()
        self._node.changed()

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
        if self._node.lease_changed():
            if not self._node.membership.lease_id:
                return  # not registered at the moment
            await self._confirm_after_lost_lease()
        adopt, hand_off, resume = await self._sort_out()
        if resume:
            await self._resume(resume)
        if hand_off:
            me = self._me
            await self._release(hand_off, lambda a: a.handed_to(a.target, me))
        if adopt and self._node.lease_ok():
            await self._adopt(adopt)

    async def _sort_out(self) -> tuple[list[Adoption], list[Partition], list[Partition]]:
        """Compare each partition of the log with its assignment: those to open (with
        the epoch and source), to hand over, and to lead again; drops those another
        broker took without a hand-off."""
        me = self._me
        adopt: list[Adoption] = []
        hand_off: list[Partition] = []
        resume: list[Partition] = []
        for state in list(self.logs.topics.values()):
            for p in state.partitions:
                a = self._node.assignments.get((p.topic_id, p.index))
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
        logs = self.logs
        with contextlib.suppress(Exception):
            await logs.delete_handoffs(parts)
        for p in parts:
            logs.lead(p)

    async def _adopt(self, wanted: list[Adoption]) -> None:
        """Open partitions, record in etcd that their log is stored here now (so a
        failover reopens them from this broker's catalog), then lead them."""
        logs = self.logs
        opened = await logs.adopt(wanted)
        led = []
        try:
            for p in opened:
                if await self._record_source(p):
                    logs.lead(p)
                    led.append(p)
                else:
                    logs.drop(p)  # reassigned meanwhile: never led here
        finally:
            # a swap that raised (etcd cut off) leaves etcd naming the previous source:
            # a partition held here unrecorded would, when it is dropped, overwrite that
            # source's hand-off record with its own, and the next leader, told to read
            # the previous source, would find its log described nowhere
            for p in opened:
                if p.held and not p.leading:
                    logs.drop(p)
        if led:
            with contextlib.suppress(Exception):  # superseded by this broker's catalog
                await logs.delete_handoffs(led)
        self.adoptions += len(led)
        self.recovery.poke()
        log.info(
            "now leading %d partitions: %s",
            len(led),
            ", ".join(f"{p}@{p.leader_epoch}" for p in led[:20]),
        )

    async def _record_source(self, p: Partition) -> bool:
        """Record in etcd that an adopted partition's log is stored here now; False if
        its assignment changed meanwhile."""
        k = (p.topic_id, p.index)
        a = self._node.assignments.get(k)
        if a is None or a.leader != self._me or a.epoch != p.leader_epoch:
            return False
        ok, now = True, a
        if a.source != self._me:
            ok, now = await asg.swap(
                self._node.client, self._node.keys, k, a, replace(a, source=self._me)
            )
        if ok and now is not None:
            self._node.assignments[k] = now
        return ok

    async def _let_go(self, p: Partition) -> None:
        """Drop a partition another broker took without a hand-off. What this broker
        uploaded is described in a hand-off record (its next snapshot will not), and
        what it acknowledged but never uploaded is kept as orphans. An empty partition
        gets its record too: otherwise a new leader reading after the snapshot finds
        it described nowhere and never opens it."""
        logs = self.logs
        a = self._node.assignments.get((p.topic_id, p.index))
        if a is None or a.source == self._me:
            # only the recorded source's record is read: another's would overwrite it
            await logs.write_handoff(p, producers=False)
        await self._node.orphans.keep(await logs.unuploaded(p))
        logs.drop(p, lost=True)
        logs.snapshot_soon()

    async def _release(
        self, parts: list[Partition], next_of: Callable[[Assignment], Assignment]
    ) -> None:
        """Hand partitions over: fence, upload, write hand-off records, then swap each
        assignment to `next_of(assignment)`. If a swap fails or raises, the partition
        stays fenced until the next reconcile sees what etcd holds: led here still
        (it leads again) or by another broker (dropped)."""
        logs = self.logs
        await logs.release(parts)
        moved = []
        for p in parts:
            k = (p.topic_id, p.index)
            a = self._node.assignments.get(k)
            if a is None or a.leader != self._me or a.epoch != p.leader_epoch:
                continue  # changed meanwhile: the next reconcile decides
            new = next_of(a)
            if new.leader == self._me:
                continue  # the move was called off meanwhile
            try:
                ok, now = await asg.swap(self._node.client, self._node.keys, k, a, new)
            except Exception as e:
                log.warning("%s: hand-off not confirmed (%s); retrying", p, describe(e))
                self._wake.set()
                continue
            if now is not None:
                self._node.assignments[k] = now
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
        logs = self.logs
        token = self._node.membership.lease_id
        kept = 0
        for p in logs.live_partitions():
            k = (p.topic_id, p.index)
            a = self._node.assignments.get(k)
            ok = False
            if a is not None and a.leader == self._me and a.epoch == p.leader_epoch:
                ok, now = await asg.swap(self._node.client, self._node.keys, k, a, replace(a))
                if ok and now is not None:
                    self._node.assignments[k] = now
            if ok:
                kept += 1
            else:
                log.warning("%s: lost with the lease; dropped here", p)
                await self._let_go(p)
        self._node.confirm_lease(token)
        log.info("lease renewed: %d partitions still led here", kept)
