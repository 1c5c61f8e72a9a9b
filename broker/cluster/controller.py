"""The controller: one broker at a time decides who leads what.

It runs on the broker that won the election, and acts only through compare-and-swap
on partition keys, so a controller that lost its seat without knowing yet cannot undo
its successor's decisions. Each step it plans (see `placement`: new partitions,
failovers, balancing moves, keys of deleted topics) and applies the plan, one swap per
change. Now and then it also deletes objects no broker's catalog names any more (see
`sweep`), and compacts etcd's history so it cannot grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import aetcd
import msgpack

from aio.events import wait_event
from broker.cluster import assignment as asg
from broker.cluster import placement
from broker.cluster.assignment import NONE, Assignment, Key
from broker.cluster.etcd import KeySpace, cancel_within, describe
from broker.cluster.placement import Change, Kind
from s3stream.store import ObjectNotFound

if TYPE_CHECKING:
    from broker.cluster.metadata import EtcdMetadataStore
    from s3stream.store import ObjectStore

log = logging.getLogger(__name__)

_DATA_KEY = re.compile(r"data/b(\d+)/(\d{16})\.obj")
_HANDOFF_KEY = re.compile(r"handoffs/([0-9a-f]+)-(\d+)\.msgpack")
_ETCD_COMPACT_EVERY = 30.0  # seconds between checks
_ETCD_KEEP_REVISIONS = 100  # history kept behind the head, for watches catching up
_ETCD_COMPACT_AFTER = 500  # revisions written before the history is compacted again


class Controller:
    """Runs placement steps while this broker holds the controllership.

    Given what it acts on rather than the node: the etcd client and key space, the
    metadata view (topics, and the committed document's ids and revision), the object
    store (for the sweep), and callables for the live brokers and the assignments as
    this broker follows them.
    """

    def __init__(
        self,
        client: aetcd.Client,
        keys: KeySpace,
        meta: EtcdMetadataStore,
        store: ObjectStore,
        *,
        broker_id: int,
        live: Callable[[], Collection[int]],
        assignments: Callable[[], Mapping[Key, Assignment]],
        max_moves: int,
        sweep_interval: float,
        delete_delay: float,
    ) -> None:
        self.client = client
        self.keys = keys
        self.meta = meta
        self.store = store
        self.broker_id = broker_id
        self._live = live
        self._assignments = assignments
        self.max_moves = max(1, max_moves)
        self.sweep_interval = sweep_interval
        self.delete_delay = delete_delay
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._candidates: dict[str, float] = {}  # unreferenced object -> first seen
        self._compacted = 0
        self.objects_deleted = 0
        self.moves_started = 0
        self.failovers = 0

    @property
    def active(self) -> bool:
        return self._task is not None

    def start(self, epoch: int) -> None:
        if self._task is None:
            log.info("broker %d is the controller (epoch %d)", self.broker_id, epoch)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="controller")

    def stop(self, epoch: int = 0) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            log.info("broker %d is no longer the controller", self.broker_id)
        self._candidates.clear()

    async def wait_stopped(self) -> None:
        task, self._task = self._task, None
        await cancel_within(task)

    def poke(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        # the sweep waits on the object store, which may hang for as long as it is
        # unreachable: in its own task, so failovers and moves never wait for it
        sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="sweeper")
        try:
            await self._step_loop()
        finally:
            await cancel_within(sweeper)

    async def _step_loop(self) -> None:
        next_compact = time.monotonic() + _ETCD_COMPACT_EVERY
        while True:
            await wait_event(self._wake, 1.0)
            self._wake.clear()
            await asyncio.sleep(0.05)  # let a burst of changes settle into one step
            try:
                await self.step()
                now = time.monotonic()
                if now >= next_compact:
                    next_compact = now + _ETCD_COMPACT_EVERY
                    await self._compact_etcd()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("controller step failed (%s); retrying", describe(e))
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("object sweep failed (%s); retrying later", describe(e))

    # --- assignments ------------------------------------------------------------------

    async def step(self) -> None:
        """Plan from what this broker follows of etcd, then apply the plan."""
        live = self._live()
        if not live or not self.active:
            return
        meta = self.meta
        wanted = placement.wanted_partitions(
            ((t.topic_id, t.name, t.partitions) for t in meta.topics.values()),
            meta.committed_ids,
        )
        changes = placement.plan(
            live, self._assignments(), wanted, meta.committed_ids, meta.revision, self.max_moves
        )
        for change in changes:
            await self._apply(change)

    async def _apply(self, change: Change) -> None:
        """One compare-and-swap; if someone wrote first, nothing changes here: the key's
        watch brings another step, planned from what etcd holds then."""
        ok, _ = await asg.swap(self.client, self.keys, change.key, change.old, change.new)
        if not ok:
            return
        k, old, new = change.key, change.old, change.new
        if change.kind is Kind.FAILOVER:
            assert old is not None and new is not None
            self.failovers += 1
            log.info(
                "%s-%d: %s, broker %d leads it now (epoch %d)",
                change.topic,
                k[1],
                "released" if old.leader == NONE else f"leader {old.leader} is gone",
                new.leader,
                new.epoch,
            )
        elif change.kind is Kind.MOVE:
            assert old is not None and new is not None
            self.moves_started += 1
            log.info(
                "%s-%d: moving from broker %d to broker %d",
                change.topic,
                k[1],
                old.leader,
                new.target,
            )

    # --- object garbage collection ----------------------------------------------------

    async def sweep(self) -> list[str]:
        """Delete data objects that no broker's catalog snapshot names.

        An object is a candidate when no snapshot names it and its writer's snapshot is
        newer than it (else it may be an upload not yet snapshotted); it is deleted if
        it is still a candidate a grace period later, which also covers a partition
        between two catalogs during a hand-off, and reads in flight.
        """
        store = self.store
        referenced: set[str] = set()
        last_seq: dict[int, int] = {}
        for info in await store.list("manifests/"):
            doc = msgpack.unpackb(await store.get(info.key), strict_map_key=False)
            referenced.update(o[0] for o in doc["objects"])
            last_seq[doc["broker_id"]] = doc["last_seq"]
        for info in await store.list("handoffs/"):  # partitions between two catalogs
            with contextlib.suppress(ObjectNotFound):
                doc = msgpack.unpackb(await store.get(info.key), strict_map_key=False)
                m = _HANDOFF_KEY.fullmatch(info.key)
                a = self._assignments().get((bytes.fromhex(m[1]), int(m[2]))) if m else None
                if a is not None and a.source != doc["writer"]:
                    continue  # the partition was opened from elsewhere since: stale
                referenced.update(row[0] for row in doc["rows"])
        now = time.monotonic()
        seen: set[str] = set()
        doomed = []
        for info in await store.list("data/"):
            m = _DATA_KEY.fullmatch(info.key)
            if m is None or info.key in referenced:
                continue
            if int(m.group(2)) > last_seq.get(int(m.group(1)), -1):
                continue
            seen.add(info.key)
            first = self._candidates.setdefault(info.key, now)
            if now - first >= self.delete_delay:
                doomed.append(info.key)
        self._candidates = {k: t for k, t in self._candidates.items() if k in seen}
        if doomed:
            await store.delete(doomed)
            for key in doomed:
                self._candidates.pop(key, None)
            self.objects_deleted += len(doomed)
            log.info("deleted %d objects no broker's catalog names", len(doomed))
        return doomed

    async def _compact_etcd(self) -> None:
        got = await self.client.get(self.meta.key)
        if got is None:
            return
        head = got.header.revision
        if head - self._compacted < _ETCD_COMPACT_AFTER:
            return
        target = head - _ETCD_KEEP_REVISIONS
        self._compacted = target
        try:
            await self.client.compact(target)
        except aetcd.ClientError as e:  # e.g. etcd's own auto-compaction went further
            log.debug("etcd compaction to %d: %s", target, describe(e))
            return
        log.info("compacted etcd history up to revision %d", target)
