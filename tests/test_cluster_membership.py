"""Cluster mode's building blocks against a real etcd: broker membership and controller
election, including etcd crashing, hanging and losing a lease under a live broker.

Each test runs its own event loop (asyncio.run) with fresh aetcd clients, one per
simulated broker, since a client is bound to the loop that first used it. Short TTLs
keep expiry quick; every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.cluster.election import ControllerElection
from broker.cluster.etcd import KeySpace, PrefixMirror, connect, parse_urls, within
from broker.cluster.membership import BrokerIdInUse, BrokerInfo, Membership
from devkit.etcd import EtcdServer, etcd_binary

pytestmark = [
    # A mark, not pytest.skip() in a fixture, so no etcd is started just to be skipped.
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (etcd-server)"),
    pytest.mark.timeout(60),
]

CLUSTER = "test"
KEYS = KeySpace(CLUSTER)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A fresh single-member etcd per test; always stopped, even after kill/pause."""
    server = EtcdServer(tmp_path / "etcd")
    try:
        yield server.start()
    finally:
        server.close()


class Node:
    """One broker's cluster side: its own client, membership and election."""

    def __init__(
        self,
        url: str,
        broker_id: int,
        *,
        ttl: float = 3.0,
        rack: str | None = None,
        elect: bool = False,
        timeout: float = 3.0,
    ) -> None:
        self.client = connect(url, timeout=timeout)
        self.info = BrokerInfo(broker_id, f"10.0.0.{broker_id}", 9092 + broker_id, rack)
        self.membership = Membership(self.client, CLUSTER, self.info, ttl=ttl, timeout=timeout)
        self.election = (
            ControllerElection(self.client, CLUSTER, broker_id, self.membership, timeout=timeout)
            if elect
            else None
        )

    async def start(self) -> Node:
        try:
            await self.membership.start()
            if self.election is not None:
                await self.election.start()
        except BaseException:
            await close(self.client)
            raise
        return self

    async def stop(self) -> None:
        if self.election is not None:
            await self.election.stop()
        await self.membership.stop()
        await close(self.client)

    def live(self) -> dict[int, BrokerInfo]:
        return self.membership.live()


async def start_node(stack: contextlib.AsyncExitStack, url: str, broker_id: int, **kw) -> Node:
    """Start a Node that is stopped when `stack` closes (stop() twice is harmless)."""
    node = await Node(url, broker_id, **kw).start()
    stack.push_async_callback(node.stop)
    return node


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll until `predicate()` holds; returns how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


@contextlib.asynccontextmanager
async def client_of(url: str):
    """A separate etcd client, closed within bounds (a gRPC channel's close can hang)."""
    client = connect(url)
    try:
        yield client
    finally:
        await close(client)


async def close(client) -> None:
    with contextlib.suppress(Exception):
        await within(client.close(), 2.0)


async def registered_ids(url: str) -> set[int]:
    """The registrations as etcd has them now, read through a separate client."""
    async with client_of(url) as client:
        return {
            BrokerInfo.decode(kv.value).broker_id for kv in await client.get_prefix(KEYS.brokers)
        }


def test_parse_urls() -> None:
    assert parse_urls("http://10.0.0.1:2379,http://10.0.0.2:2380") == [
        ("10.0.0.1", 2379),
        ("10.0.0.2", 2380),
    ]
    assert parse_urls("etcd.local") == [("etcd.local", 2379)]
    with pytest.raises(ValueError, match="only http://"):
        parse_urls("https://etcd:2379")
    with pytest.raises(ValueError):
        KeySpace("a/b")


def test_two_brokers_see_each_other_with_listeners_and_racks(etcd: EtcdServer) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            a = await start_node(stack, etcd.url, 1, rack="rack-a")
            assert a.live() == {1: a.info}  # its own registration, at once
            changes: list[dict[int, BrokerInfo]] = []
            a.membership.on_change(changes.append)
            b = await start_node(stack, etcd.url, 2)
            expected = {
                1: BrokerInfo(1, "10.0.0.1", 9093, "rack-a"),
                2: BrokerInfo(2, "10.0.0.2", 9094, None),
            }
            await eventually(lambda: a.live() == b.live() == expected, "both see both")
            assert changes == [expected]

    asyncio.run(main())


def test_duplicate_broker_id_is_refused_while_the_first_is_alive(etcd: EtcdServer) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            first = await start_node(stack, etcd.url, 1)
            twin = Node(etcd.url, 1)
            with pytest.raises(BrokerIdInUse, match=r"broker id 1 .*10\.0\.0\.1:9093"):
                await twin.start()
            assert await registered_ids(etcd.url) == {1}
            assert first.live() == {1: first.info}

            # Once the first has left, the id is free again.
            await first.stop()
            await (await start_node(stack, etcd.url, 1)).stop()

            # Two brokers racing for one id: exactly one wins.
            racers = [Node(etcd.url, 7), Node(etcd.url, 7)]
            results = await asyncio.gather(*(r.start() for r in racers), return_exceptions=True)
            for r in results:
                if isinstance(r, Node):
                    stack.push_async_callback(r.stop)
            assert sorted(type(r).__name__ for r in results) == ["BrokerIdInUse", "Node"]

    asyncio.run(main())


def test_a_stopped_broker_is_gone_for_the_others_at_once(etcd: EtcdServer) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            a = await start_node(stack, etcd.url, 1, ttl=10)
            b = await start_node(stack, etcd.url, 2, ttl=10)
            await eventually(lambda: set(a.live()) == {1, 2}, "a sees b")
            await b.stop()
            took = await eventually(lambda: set(a.live()) == {1}, "b gone", timeout=9)
            assert took < 1.0, f"took {took:.2f}s: the lease was not revoked"
            assert await registered_ids(etcd.url) == {1}

    asyncio.run(main())


DOOMED_BROKER = """
import asyncio, sys
from broker.cluster.election import ControllerElection
from broker.cluster.etcd import connect
from broker.cluster.membership import BrokerInfo, Membership

async def main(url, cluster):
    client = connect(url)
    membership = Membership(client, cluster, BrokerInfo(1, "10.0.0.1", 9093), ttl=2)
    await membership.start()
    election = ControllerElection(client, cluster, 1, membership)
    await election.start()
    print("controller", await asyncio.wait_for(election.wait_elected(), 20), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_a_dead_broker_expires_after_its_ttl_and_loses_the_controller(etcd: EtcdServer) -> None:
    # Its own process, SIGKILLed: no revoke, no resign, nothing more sent to etcd.
    doomed = subprocess.Popen(
        [sys.executable, "-c", DOOMED_BROKER, etcd.url, CLUSTER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    async def main() -> None:
        assert doomed.stdout is not None
        output = b""
        while not output.endswith(b"\n") or not output.splitlines()[-1].startswith(b"controller"):
            line = await asyncio.wait_for(asyncio.to_thread(doomed.stdout.readline), 30)
            assert line, f"the doomed broker exited: {output.decode(errors='replace')}"
            output += line
        line = output.splitlines()[-1]
        old_epoch = int(line.split()[1])
        async with contextlib.AsyncExitStack() as stack:
            b = await start_node(stack, etcd.url, 2, ttl=2, elect=True)
            assert b.election is not None
            await eventually(lambda: b.election.leader_id == 1, "b sees 1 as the controller")
            assert set(b.live()) == {1, 2} and not b.election.is_leader
            assert b.election.epoch == old_epoch

            doomed.kill()
            doomed.wait()
            took = await eventually(lambda: set(b.live()) == {2}, "1 expired", timeout=10)
            assert 1.0 <= took <= 8.0, f"expired {took:.2f}s after the kill, TTL 2s"
            epoch = await asyncio.wait_for(b.election.wait_elected(), 5)
            assert epoch > old_epoch and b.election.leader_id == 2

    try:
        asyncio.run(main())
    finally:
        doomed.kill()
        doomed.wait()


def test_one_controller_and_a_higher_epoch_after_it_stops(etcd: EtcdServer) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            nodes = await asyncio.gather(
                *(start_node(stack, etcd.url, i, elect=True) for i in (1, 2))
            )
            elections = [n.election for n in nodes]
            assert all(e is not None for e in elections)
            gained: dict[int, list[int]] = {1: [], 2: []}
            lost: dict[int, list[int]] = {1: [], 2: []}
            for n, e in zip(nodes, elections, strict=True):
                e.on_gain(gained[n.info.broker_id].append)
                e.on_loss(lost[n.info.broker_id].append)
            await eventually(
                lambda: all(e.leader_id is not None for e in elections), "both know the controller"
            )
            leaders = [n for n, e in zip(nodes, elections, strict=True) if e.is_leader]
            assert len(leaders) == 1
            leader = leaders[0]
            other = nodes[1] if leader is nodes[0] else nodes[0]
            assert leader.election and other.election
            epoch = leader.election.epoch
            assert epoch > 0
            assert other.election.leader_id == leader.info.broker_id
            assert other.election.epoch == epoch
            assert not gained[other.info.broker_id]

            await leader.stop()
            new_epoch = await asyncio.wait_for(other.election.wait_elected(), 2)
            assert new_epoch > epoch
            assert gained[other.info.broker_id] == [new_epoch]
            assert lost[leader.info.broker_id] == [epoch] and not lost[other.info.broker_id]
            await eventually(lambda: set(other.live()) == {other.info.broker_id}, "leader left")

    asyncio.run(main())


def test_a_broker_whose_lease_is_lost_registers_again(etcd: EtcdServer) -> None:
    """What a broker sees if etcd expired its lease (say it was partitioned away): its
    keys are gone, so it loses the controller, then registers again under a new lease."""

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            a = await start_node(stack, etcd.url, 1, ttl=2, elect=True)
            assert a.election is not None
            first_epoch = await asyncio.wait_for(a.election.wait_elected(), 5)
            b = await start_node(stack, etcd.url, 2, ttl=2, elect=True)
            assert b.election is not None
            await eventually(lambda: b.election.leader_id == 1, "b follows a")
            old_lease = a.membership.lease_id
            lost: list[int] = []
            a.election.on_loss(lost.append)

            async with client_of(etcd.url) as admin:
                await admin.revoke_lease(old_lease)

            # a loses the controller; then either broker may win it (a re-registers
            # within milliseconds and campaigns too), but always under a new epoch
            await eventually(lambda: lost == [first_epoch], "a stepped down")
            await eventually(
                lambda: a.election.epoch > first_epoch and b.election.epoch == a.election.epoch,
                "both follow a controller with a new epoch",
            )
            assert a.election.is_leader != b.election.is_leader
            await eventually(lambda: a.membership.lease_id not in (0, old_lease), "a re-leased")
            await eventually(lambda: set(b.live()) == {1, 2}, "b sees a again")
            assert await registered_ids(etcd.url) == {1, 2}

    asyncio.run(main())


def test_registrations_and_watches_survive_an_etcd_crash(etcd: EtcdServer) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            a = await start_node(stack, etcd.url, 1, ttl=2, elect=True)
            assert a.election is not None
            epoch = await asyncio.wait_for(a.election.wait_elected(), 5)
            b = await start_node(stack, etcd.url, 2, ttl=2)
            await eventually(lambda: set(a.live()) == {1, 2}, "a sees b")

            etcd.kill()
            # Unreachable etcd: a stops claiming the controllership, nothing crashes.
            await eventually(lambda: not a.election.is_leader, "a steps down")
            await asyncio.sleep(2.5)  # an outage longer than the TTL
            await asyncio.to_thread(etcd.restart)

            # The same registrations and controller (etcd extends leases on restart)...
            assert await asyncio.wait_for(a.election.wait_elected(), 5) == epoch
            # ...and the watches resumed: a broker registered now is seen by both.
            await start_node(stack, etcd.url, 3, ttl=2)
            await eventually(lambda: set(a.live()) == set(b.live()) == {1, 2, 3}, "all see 3")
            # The keepalives resumed too: two TTLs later nobody has expired.
            await asyncio.sleep(4)
            assert await registered_ids(etcd.url) == {1, 2, 3}
            assert set(a.live()) == {1, 2, 3} and a.election.is_leader

    asyncio.run(main())


def test_a_controller_cut_off_from_etcd_steps_down_within_its_ttl(etcd: EtcdServer) -> None:
    """A hung etcd breaks no connection, so no watch fails: the lease's deadline is what
    tells the controller it may have been replaced."""

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            # A timeout longer than the TTL: what trips first must be the lease deadline.
            a = await start_node(stack, etcd.url, 1, ttl=2, elect=True, timeout=5.0)
            assert a.election is not None
            epoch = await asyncio.wait_for(a.election.wait_elected(), 5)
            lost: list[int] = []
            a.election.on_loss(lost.append)
            etcd.pause()
            try:
                took = await eventually(lambda: not a.election.is_leader, "a steps down", 5)
            finally:
                etcd.resume()
            # within the TTL of its last refresh (plus scheduling slack on a busy machine)
            assert took <= 3.0, f"stepped down {took:.2f}s after etcd hung, TTL 2s"
            assert lost == [epoch]
            # Back in reach: controller again (a new epoch if etcd expired the lease first).
            assert await asyncio.wait_for(a.election.wait_elected(), 10) >= epoch
            await eventually(lambda: set(a.live()) == {1}, "a registered")

    asyncio.run(main())


def test_stop_is_bounded_when_etcd_hangs(etcd: EtcdServer) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            a = await start_node(stack, etcd.url, 1, ttl=2, elect=True, timeout=1.0)
            assert a.election is not None
            await asyncio.wait_for(a.election.wait_elected(), 5)
            etcd.pause()
            try:
                start = time.monotonic()
                await a.stop()  # resign and revoke both time out
                took = time.monotonic() - start
            finally:
                etcd.resume()
            assert took < 4.0, f"stop() took {took:.2f}s with a 1s timeout"
            # Not revoked, so the registration expires after the TTL instead.
            deadline = time.monotonic() + 10
            while await registered_ids(etcd.url):
                assert time.monotonic() < deadline, "the registration never expired"
                await asyncio.sleep(0.1)

    asyncio.run(main())


def test_the_mirror_lists_again_when_its_history_was_compacted(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch resumes from the last revision seen; if etcd compacted it away
    meanwhile, the prefix is listed again rather than events silently lost."""
    caplog.set_level(logging.INFO, logger="broker.cluster.etcd")
    prefix = KEYS.key("mirror", "")

    async def main() -> None:
        async with client_of(etcd.url) as writer:
            await writer.put(prefix + b"k1", b"1")
            await writer.put(prefix + b"k2", b"2")
            follower = connect(etcd.url)
            views: list[set[bytes]] = []
            # retry_delay: the window in which the history is compacted under it
            mirror = PrefixMirror(
                follower, prefix, lambda items: views.append(set(items)), retry_delay=1.0
            )
            try:
                await mirror.start()
                assert views[-1] == {prefix + b"k1", prefix + b"k2"}
                await writer.delete(prefix + b"k2")
                await eventually(lambda: views[-1] == {prefix + b"k1"}, "the watch is live")
                await follower.close()  # ends its watch; it re-watches after the delay
                await writer.delete(prefix + b"k1")
                put = await writer.put(prefix + b"k3", b"3")
                await writer.compact(put.header.revision)
                await eventually(lambda: views[-1] == {prefix + b"k3"}, "the mirror relisted")
                assert mirror.revision >= put.header.revision
                await writer.put(prefix + b"k4", b"4")  # and follows again after that
                await eventually(lambda: prefix + b"k4" in views[-1], "k4 seen")
            finally:
                await mirror.stop()
                await follower.close()
        assert "history compacted" in caplog.text

    asyncio.run(main())
