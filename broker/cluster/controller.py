"""The controller: one broker at a time decides who leads what.

It runs on the broker that won the election, and acts only through compare-and-swap
on partition keys, so a controller that lost its seat without knowing yet cannot undo
its successor's decisions. Each step it:

- gives every partition of every topic an assignment (the broker creating a topic
  usually did already);
- moves partitions whose leader is gone (lease expired, or released at shutdown) to
  the least-loaded live broker, opened from the old leader's catalog (a failover);
- balances each topic's leaders over the live brokers by asking leaders to hand
  partitions over (`target`), at most `max_moves` at a time, so a joining broker takes
  its share in steps rather than every client reconnecting at once;
- now and then deletes objects no broker's catalog names any more (see `sweep`), and
  compacts etcd's history so it cannot grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

import aetcd
import msgpack

from broker.cluster import assignment as asg
from broker.cluster.assignment import NONE, Assignment, Key
from broker.cluster.etcd import cancel_within, describe
from s3stream.aio import wait_event
from s3stream.store import ObjectNotFound

if TYPE_CHECKING:
    from broker.cluster.node import ClusterNode

log = logging.getLogger(__name__)

_DATA_KEY = re.compile(r"data/b(\d+)/(\d{16})\.obj")
_HANDOFF_KEY = re.compile(r"handoffs/([0-9a-f]+)-(\d+)\.msgpack")
_ETCD_COMPACT_EVERY = 30.0  # seconds between checks
_ETCD_KEEP_REVISIONS = 100  # history kept behind the head, for watches catching up
_ETCD_COMPACT_AFTER = 500  # revisions written before the history is compacted again


class Controller:
    def __init__(self, node: ClusterNode, max_moves: int, sweep_interval: float, delay: float):
        self.node = node
        self.max_moves = max(1, max_moves)
        self.sweep_interval = sweep_interval
        self.delete_delay = delay
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
            log.info("broker %d is the controller (epoch %d)", self.node.broker_id, epoch)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="controller")

    def stop(self, epoch: int = 0) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            log.info("broker %d is no longer the controller", self.node.broker_id)
        self._candidates.clear()

    async def wait_stopped(self) -> None:
        task, self._task = self._task, None
        await cancel_within(task)

    def poke(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval
        next_compact = time.monotonic() + _ETCD_COMPACT_EVERY
        while True:
            await wait_event(self._wake, 1.0)
            self._wake.clear()
            await asyncio.sleep(0.05)  # let a burst of changes settle into one step
            try:
                await self.step()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + self.sweep_interval
                    await self.sweep()
                if now >= next_compact:
                    next_compact = now + _ETCD_COMPACT_EVERY
                    await self._compact_etcd()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("controller step failed (%s); retrying", describe(e))
                await asyncio.sleep(0.5)
                self._wake.set()

    # --- assignments ------------------------------------------------------------------

    async def step(self) -> None:
        node = self.node
        live = sorted(node.membership.live())
        if not live or not self.active:
            return
        current = dict(node.assignments)
        wanted: dict[Key, str] = {
            (rec.topic_id, i): rec.name
            for rec in node.meta.topics.values()
            if rec.topic_id in node.meta.committed_ids  # not a change still in flight
            for i in range(rec.partitions)
        }
        load = Counter({b: 0 for b in live})
        for k, a in current.items():
            if k in wanted and a.leader in load:
                load[a.target if a.target in load else a.leader] += 1

        for k in sorted(set(current) - set(wanted)):
            # the topic was deleted: only per a committed document newer than the key
            # (a new topic's keys are written with it, and may arrive first)
            a = current.pop(k)
            if k[0] not in node.meta.committed_ids and a.revision < node.meta.revision:
                await asg.swap(node.client, node.keys, k, a, None)

        for k in sorted(set(wanted) - set(current)):
            leader = min(live, key=lambda b: (load[b], b))
            ok, now = await asg.swap(node.client, node.keys, k, None, Assignment(leader, 0))
            if ok:
                load[leader] += 1
            if now is not None:
                current[k] = now

        for k, a in sorted(current.items()):
            if a.leader in load:
                if a.target != NONE and a.target not in load:  # the target left: stay
                    await self._swap(k, a, replace(a, target=NONE))
                continue
            leader = min(live, key=lambda b: (load[b], b))
            # opened from the broker that stored it last (its leader may never have)
            ok, now = await self._swap(k, a, a.handed_to(leader, a.source))
            if ok:
                self.failovers += 1
                load[leader] += 1
                log.info(
                    "%s-%d: %s, broker %d leads it now (epoch %d)",
                    wanted.get(k, "?"),
                    k[1],
                    "released" if a.leader == NONE else f"leader {a.leader} is gone",
                    leader,
                    a.epoch + 1,
                )
                if now is not None:
                    current[k] = now
        await self._balance(current, wanted, live)

    async def _balance(self, current: dict[Key, Assignment], wanted: dict[Key, str], live) -> None:
        moving = sum(1 for a in current.values() if a.target != NONE)
        budget = self.max_moves - moving
        if budget <= 0 or len(live) < 2:
            return
        by_topic: dict[str, list[tuple[Key, Assignment]]] = {}
        for k, a in current.items():
            if k in wanted and a.leader in live:
                by_topic.setdefault(wanted[k], []).append((k, a))
        for topic in sorted(by_topic):
            parts = by_topic[topic]
            owner = {k: (a.target if a.target != NONE else a.leader) for k, a in parts}
            counts = Counter({b: 0 for b in live})
            counts.update(owner.values())
            while budget > 0:
                hi = max(live, key=lambda b: (counts[b], -b))
                lo = min(live, key=lambda b: (counts[b], b))
                if counts[hi] - counts[lo] <= 1:
                    break
                movable = [(k, a) for k, a in parts if a.leader == hi and a.target == NONE]
                if not movable:
                    break
                k, a = movable[len(movable) // 2]
                ok, _ = await self._swap(k, a, replace(a, target=lo))
                parts = [(kk, aa) for kk, aa in parts if kk != k]
                if ok:
                    self.moves_started += 1
                    log.info("%s-%d: moving from broker %d to broker %d", topic, k[1], hi, lo)
                    counts[hi] -= 1
                    counts[lo] += 1
                    budget -= 1

    async def _swap(self, k: Key, old: Assignment, new: Assignment):
        return await asg.swap(self.node.client, self.node.keys, k, old, new)

    # --- object garbage collection ----------------------------------------------------

    async def sweep(self) -> list[str]:
        """Delete data objects that no broker's catalog snapshot names.

        An object is a candidate when no snapshot names it and its writer's snapshot is
        newer than it (else it may be an upload not yet snapshotted); it is deleted if
        it is still a candidate a grace period later, which also covers a partition
        between two catalogs during a hand-off, and reads in flight.
        """
        store = self.node.broker.store
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
                a = self.node.assignments.get((bytes.fromhex(m[1]), int(m[2]))) if m else None
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
        got = await self.node.client.get(self.node.meta.key)
        if got is None:
            return
        head = got.header.revision
        if head - self._compacted < _ETCD_COMPACT_AFTER:
            return
        target = head - _ETCD_KEEP_REVISIONS
        self._compacted = target
        try:
            await self.node.client.compact(target)
        except aetcd.ClientError as e:  # e.g. etcd's own auto-compaction went further
            log.debug("etcd compaction to %d: %s", target, describe(e))
            return
        log.info("compacted etcd history up to revision %d", target)
