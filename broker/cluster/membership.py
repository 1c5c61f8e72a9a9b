"""Broker membership: each live broker holds `brokers/<id>` in etcd under a lease.

The lease is what makes a registration ephemeral: a broker that stops revokes it and
the others see it leave at once; one that dies stops refreshing it and etcd deletes
the key after the TTL. Every broker follows the prefix with a watch, so `live()` is
the cluster's current view without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import aetcd

from aio.events import wait_event
from broker.cluster.etcd import (
    KeySpace,
    PrefixMirror,
    cancel_within,
    describe,
    pack,
    unpack,
    within,
)

log = logging.getLogger(__name__)

MIN_TTL = 2  # etcd's smallest lease TTL, in whole seconds


@dataclass(frozen=True)
class BrokerInfo:
    """What the other brokers need to know about one: its id, listener and rack."""

    broker_id: int
    host: str
    port: int
    rack: str | None = None
    # (listener name, advertised host, port) of each listener
    listeners: tuple[tuple[str, str, int], ...] = ()

    def encode(self) -> bytes:
        return pack(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> BrokerInfo:
        d = unpack(data)
        listeners = tuple((str(n), str(h), int(p)) for n, h, p in d.get("listeners") or ())
        return cls(int(d["broker_id"]), str(d["host"]), int(d["port"]), d.get("rack"), listeners)


class BrokerIdInUse(Exception):
    """Another live broker already holds this broker id."""

    def __init__(self, broker_id: int, holder: BrokerInfo | None, expires_in: int | None) -> None:
        where = f" ({holder.host}:{holder.port})" if holder else ""
        when = (
            f"; if that broker is gone, its registration expires in {expires_in}s"
            if expires_in is not None and expires_in > 0
            else ""
        )
        super().__init__(
            f"broker id {broker_id} is already registered by a live broker{where}{when}"
        )
        self.broker_id = broker_id
        self.holder = holder
        self.expires_in = expires_in


ChangeCallback = Callable[[dict[int, BrokerInfo]], None]


class Membership:
    """Registers this broker and follows the others.

    `ttl` (seconds, at least 2) is how long a dead broker stays listed; the lease is
    refreshed every ttl/3. `timeout` bounds the etcd calls made by `stop()`; `on_change`
    is called with the live brokers whenever they change. Pass the
    Membership as ControllerElection's `lease`, so both share one fate.
    """

    def __init__(
        self,
        client: aetcd.Client,
        cluster: str,
        info: BrokerInfo,
        ttl: float = 6.0,
        *,
        timeout: float = 3.0,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.client = client
        self.info = info
        self.keys = KeySpace(cluster)
        self.ttl = max(MIN_TTL, math.ceil(ttl))
        self.timeout = timeout
        self._key = self.keys.broker(info.broker_id)
        self._lease_id = 0
        self._deadline = 0.0
        self._live: dict[int, BrokerInfo] = {}
        self._callbacks: list[ChangeCallback] = [on_change] if on_change else []
        self._mirror = PrefixMirror(client, self.keys.brokers, self._mirror_changed)
        self._wake = asyncio.Event()
        self._keepalive_task: asyncio.Task[None] | None = None

    @property
    def lease_id(self) -> int:
        """The lease holding the registration (0 when not registered); it changes when
        the registration is renewed after the lease was lost, so read it each time."""
        return self._lease_id

    @property
    def lease_deadline(self) -> float:
        """The event-loop time until which the lease surely lives: when the last refresh
        that etcd answered was sent, plus the TTL. Past it, etcd may have expired the
        lease without this broker hearing of it (etcd hung, or out of reach)."""
        return self._deadline

    def live(self) -> dict[int, BrokerInfo]:
        """The brokers registered now, this one included, as of the last watch event."""
        return dict(self._live)

    def is_live(self, broker_id: int) -> bool:
        return broker_id in self._live

    def on_change(self, callback: ChangeCallback) -> None:
        """Also call `callback(live)` on the event loop whenever the set of brokers changes
        (an observer added later, as tests do; the broker passes `on_change`)."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Register (raises BrokerIdInUse if the id is taken) and start following."""
        sent = asyncio.get_running_loop().time()
        lease = await self.client.lease(self.ttl)
        try:
            await self._claim(lease.id)
            self._lease_id, self._deadline = lease.id, sent + lease.ttl
            await self._mirror.start()
        except BaseException:
            self._lease_id, self._deadline = 0, 0.0
            await self._revoke(lease.id)
            raise
        self._keepalive_task = asyncio.get_running_loop().create_task(self._keepalive())
        log.info(
            "broker %d registered (lease %x, ttl %ds)", self.info.broker_id, lease.id, self.ttl
        )

    async def stop(self) -> None:
        """Leave: revoke the lease so the others see it at once. Never hangs on a dead
        etcd; the registration then expires after the TTL instead."""
        task, self._keepalive_task = self._keepalive_task, None
        await cancel_within(task)
        await self._mirror.stop()
        lease_id, self._lease_id, self._deadline = self._lease_id, 0, 0.0
        if lease_id:
            await self._revoke(lease_id)
        self._live = {}

    async def _claim(self, lease_id: int) -> None:
        """Put our key under `lease_id` unless a live broker holds it; one transaction,
        so two brokers starting with the same id cannot both succeed."""
        t = self.client.transactions
        ok, responses = await self.client.transaction(
            compare=[t.version(self._key) == 0],
            success=[t.put(self._key, self.info.encode(), lease=lease_id)],
            failure=[t.get(self._key)],
        )
        if ok or not responses[0]:
            return
        value, kv = responses[0][0]
        if kv.lease == lease_id:
            return  # already ours
        try:
            holder: BrokerInfo | None = BrokerInfo.decode(value)
        except Exception:
            holder = None
        expires_in = None
        with contextlib.suppress(Exception):
            expires_in = int((await self.client.get_lease_info(kv.lease, keys=False)).TTL)
        raise BrokerIdInUse(self.info.broker_id, holder, expires_in)

    async def _keepalive(self) -> None:
        """Refresh the lease every ttl/3; re-register when it was lost or the key deleted.

        Never raises: while etcd is unreachable the registration may well be intact
        (etcd extends every lease when it comes back), so keep trying.
        """
        loop = asyncio.get_running_loop()
        down_since: float | None = None
        conflict = False
        while True:
            await wait_event(self._wake, self.ttl / 3)
            self._wake.clear()
            try:
                await self._renew()
                if down_since is not None:
                    log.info("etcd reachable again after %.1fs", loop.time() - down_since)
                    down_since = None
                if conflict:
                    log.info("broker %d registered again", self.info.broker_id)
                    conflict = False
            except BrokerIdInUse as e:
                if not conflict:
                    log.error("cannot register again: %s", e)
                    conflict = True
            except Exception as e:
                if down_since is None:
                    down_since = loop.time()
                    log.warning(
                        "etcd unreachable (%s); broker %d keeps trying to refresh its registration",
                        describe(e),
                        self.info.broker_id,
                    )

    async def _renew(self) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        reply = await self.client.refresh_lease(self._lease_id)
        if reply is None:
            raise aetcd.ConnectionFailedError("no reply to the lease keepalive")
        if reply.TTL > 0:
            self._deadline = max(self._deadline, sent + reply.TTL)
            if not self._holds_key():
                await self._claim(self._lease_id)  # the key was deleted, the lease lives on
            return
        log.warning(
            "broker %d's lease %x is gone (etcd unreachable longer than the TTL?); "
            "registering again",
            self.info.broker_id,
            self._lease_id,
        )
        sent = loop.time()
        lease = await self.client.lease(self.ttl)
        try:
            await self._claim(lease.id)
        except BaseException:
            await self._revoke(lease.id)
            raise
        self._lease_id, self._deadline = lease.id, sent + lease.ttl
        log.info("broker %d registered again (lease %x)", self.info.broker_id, lease.id)

    def _holds_key(self) -> bool:
        kv = self._mirror.items.get(self._key)
        return kv is not None and kv.lease == self._lease_id

    async def _revoke(self, lease_id: int) -> None:
        try:
            await within(self.client.revoke_lease(lease_id), self.timeout)
        except Exception as e:
            log.warning(
                "could not revoke lease %x (%s); broker %d's registration expires within %ds",
                lease_id,
                describe(e),
                self.info.broker_id,
                self.ttl,
            )

    def _mirror_changed(self, items: dict[bytes, aetcd.KeyValue]) -> None:
        live: dict[int, BrokerInfo] = {}
        for key, kv in items.items():
            try:
                info = BrokerInfo.decode(kv.value)
            except Exception:
                log.warning("ignoring a malformed registration at %r", key)
                continue
            live[info.broker_id] = info
        if self._keepalive_task is not None and not self._holds_key():
            self._wake.set()  # deleted or expired: renew now rather than at the next tick
        if live == self._live:
            return
        self._live = live
        for callback in list(self._callbacks):
            try:
                callback(dict(live))
            except Exception:
                log.exception("membership change callback failed")
