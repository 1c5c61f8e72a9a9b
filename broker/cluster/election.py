"""Controller election: the broker that creates the `controller` key is the controller.

The key is created in a transaction only if absent, under the broker's membership
lease, so a broker that dies loses its registration and the controllership together.
The key's create_revision is the controller's epoch: etcd revisions only grow, so
every new controller gets a larger epoch than all before it, and a write guarded by
`create_revision(controller) == epoch` is refused once a successor has taken over
(a fencing token). aetcd's own `lock()` is not used: it leaks leases and can enter
the critical section without holding the lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import aetcd

from broker.cluster.etcd import (
    KeySpace,
    cancel_quietly,
    cancel_within,
    describe,
    pack,
    unpack,
    within,
)

log = logging.getLogger(__name__)

Callback = Callable[[int], None]


class LeaseSource(Protocol):
    """What Membership provides: its current lease, and until when it surely lives."""

    @property
    def lease_id(self) -> int: ...

    @property
    def lease_deadline(self) -> float: ...


class LeaseUnconfirmed(Exception):
    """The lease may have expired without this broker hearing of it."""


class ControllerElection:
    """Campaigns for `controller` until stopped, and follows who holds it.

    `lease` is best the Membership itself: it renews its lease after losing it, and
    knows until when the lease is surely alive. A controller whose lease is past that
    deadline (etcd hung, or this broker cut off from it) steps down, because etcd may
    already have expired the lease and let another broker in; so it does when its watch
    breaks. When etcd is reachable again and the key is still under its lease, it is
    the controller again, with the same epoch. A bare lease id or aetcd.Lease also
    works, without the deadline. `on_gain(epoch)` is called when this broker becomes
    the controller, `on_loss(epoch)` when it stops being it (from then on it must not
    act as one: the epoch it held is stale).
    """

    def __init__(
        self,
        client: aetcd.Client,
        cluster: str,
        broker_id: int,
        lease: LeaseSource | aetcd.Lease | int,
        *,
        retry_delay: float = 0.5,
        timeout: float = 3.0,
        on_gain: Callback | None = None,
        on_loss: Callback | None = None,
    ) -> None:
        self.client = client
        self.broker_id = broker_id
        self.keys = KeySpace(cluster)
        self.timeout = timeout
        self._lease = lease
        self._retry_delay = retry_delay
        self._key = self.keys.controller
        self._leader_id: int | None = None
        self._epoch = 0
        self._elected = asyncio.Event()
        self._on_gain: list[Callback] = [on_gain] if on_gain else []
        self._on_loss: list[Callback] = [on_loss] if on_loss else []
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self._elected.is_set()

    @property
    def leader_id(self) -> int | None:
        """The controller as last seen (None if there is none, or etcd is unreachable)."""
        return self._leader_id

    @property
    def epoch(self) -> int:
        """The current controller's epoch (its key's create_revision); 0 if unknown."""
        return self._epoch

    async def wait_elected(self) -> int:
        """Return this broker's epoch once it is the controller."""
        await self._elected.wait()
        return self._epoch

    def on_gain(self, callback: Callback) -> None:
        """Also call `callback(epoch)` when this broker becomes the controller (an
        observer added later, as tests do; the broker passes `on_gain`)."""
        self._on_gain.append(callback)

    def on_loss(self, callback: Callback) -> None:
        """Also call `callback(epoch)` when this broker stops being the controller (an
        observer added later, as tests do; the broker passes `on_loss`)."""
        self._on_loss.append(callback)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop campaigning and resign, so another broker takes over at once."""
        task, self._task = self._task, None
        await cancel_within(task)
        epoch = self._epoch if self.is_leader else 0
        self._observe(None, 0)
        if epoch:
            await self._resign(epoch)

    def _lease_id(self) -> int:
        lease = self._lease
        if isinstance(lease, aetcd.Lease):
            return lease.id
        return lease if isinstance(lease, int) else lease.lease_id

    def _check_lease(self, lease_id: int) -> float | None:
        """The loop time until which `lease_id` surely lives (None: not known); raises
        LeaseUnconfirmed if it may be gone."""
        if isinstance(self._lease, aetcd.Lease | int):
            return None
        deadline = self._lease.lease_deadline
        if self._lease.lease_id != lease_id or deadline <= asyncio.get_running_loop().time():
            raise LeaseUnconfirmed(f"broker {self.broker_id}'s lease is not confirmed alive")
        return deadline

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                lease_id = self._lease_id()
                revision = await self._campaign(lease_id)
                if failing:
                    log.info("broker %d campaigns for controller again", self.broker_id)
                    failing = False
                if self.is_leader:
                    await self._hold(revision, lease_id)
                else:
                    await self._follow(revision)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._observe(None, 0)  # cannot tell who the controller is any more
                if not failing:
                    log.warning("controller election failed (%s); retrying", describe(e))
                    failing = True
                await asyncio.sleep(self._retry_delay)

    async def _campaign(self, lease_id: int) -> int:
        """Create the key if absent; either way learn who holds it. Returns the revision
        the answer reflects, from which to watch for changes."""
        if not lease_id:
            raise LeaseUnconfirmed(f"broker {self.broker_id} has no membership lease")
        self._check_lease(lease_id)
        t = self.client.transactions
        ok, responses = await self.client.transaction(
            compare=[t.version(self._key) == 0],
            success=[t.put(self._key, pack(self.broker_id), lease=lease_id)],
            failure=[t.get(self._key)],
        )
        if ok:
            revision = responses[0].response_put.header.revision
            self._observe(self.broker_id, revision)
            return revision
        value, kv = responses[0][0]
        holder = unpack(value)
        # Ours only under the current lease: a key left by an earlier lease of this
        # broker belongs to a previous incarnation and must expire first.
        mine = holder == self.broker_id and kv.lease == lease_id
        self._observe(self.broker_id if mine else holder, kv.create_revision, mine=mine)
        return kv.header.revision

    async def _follow(self, revision: int) -> None:
        """Return when the key is deleted (or its history compacted): time to campaign."""
        watch = await self.client.watch(self._key, start_revision=revision + 1)
        try:
            async for event in watch:
                if event.kind == aetcd.EventKind.DELETE:
                    self._observe(None, 0)  # step down before campaigning, not after
                    return
                holder = unpack(event.kv.value)
                mine = holder == self.broker_id and event.kv.lease == self._lease_id()
                self._observe(holder, event.kv.create_revision, mine=mine)
        except aetcd.RevisionCompactedError:
            return
        finally:
            await cancel_quietly(watch)
        raise aetcd.ConnectionFailedError("controller watch ended")  # the client was closed

    async def _hold(self, revision: int, lease_id: int) -> None:
        """_follow() as the controller, but step down (raise) once the lease is no longer
        confirmed: a broken watch is not the only sign of being cut off."""
        follow = asyncio.ensure_future(self._follow(revision))
        guard = asyncio.ensure_future(self._guard(lease_id))
        try:
            await asyncio.wait({follow, guard}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            follow.cancel()
            guard.cancel()
            await asyncio.gather(follow, guard, return_exceptions=True)
        if follow.done() and not follow.cancelled():
            follow.result()  # returns, or raises what ended the watch
        else:
            guard.result()

    async def _guard(self, lease_id: int) -> None:
        """Raise LeaseUnconfirmed once the lease's deadline passes without renewal."""
        loop = asyncio.get_running_loop()
        while True:
            deadline = self._check_lease(lease_id)
            if deadline is None:
                await asyncio.Future()  # nothing to check: wait to be cancelled
            else:
                await asyncio.sleep(deadline - loop.time())

    def _observe(self, leader_id: int | None, epoch: int, *, mine: bool | None = None) -> None:
        if mine is None:
            mine = leader_id == self.broker_id
        was, old_epoch = self.is_leader, self._epoch
        self._leader_id, self._epoch = leader_id, epoch
        if was and (not mine or epoch != old_epoch):
            self._elected.clear()
            log.info("broker %d is no longer the controller (epoch %d)", self.broker_id, old_epoch)
            self._fire(self._on_loss, old_epoch)
        if mine and not self._elected.is_set():
            self._elected.set()
            log.info("broker %d is the controller (epoch %d)", self.broker_id, epoch)
            self._fire(self._on_gain, epoch)

    @staticmethod
    def _fire(callbacks: list[Callback], epoch: int) -> None:
        for callback in list(callbacks):
            try:
                callback(epoch)
            except Exception:
                log.exception("controller callback failed")

    async def _resign(self, epoch: int) -> None:
        """Delete the key if it is still the one this broker created."""
        t = self.client.transactions
        try:
            await within(
                self.client.transaction(
                    compare=[t.create(self._key) == epoch],
                    success=[t.delete(self._key)],
                    failure=[],
                ),
                self.timeout,
            )
            log.info("broker %d resigned as controller (epoch %d)", self.broker_id, epoch)
        except Exception as e:
            log.warning(
                "could not resign as controller (%s); the key expires with the lease", describe(e)
            )
