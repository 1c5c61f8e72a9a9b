"""Share groups (KIP-932) on a 3-broker cluster, with confluent-kafka's ShareConsumer:
ShareFetch and ShareAcknowledge go to each partition's leader, which keeps the
share-partition state at the group's coordinator. A broker going mid-run (the coordinator,
which leads partitions too, killed with -9; or another leader stopped gracefully): its
partitions move, the new leaders read their state back, nothing acknowledged is lost or
delivered again.
"""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pytest
from confluent_kafka import Producer, ShareConsumer

from devkit.broker import scrape
from tests.cluster import Cluster, wait_for
from tests.test_cluster import TTL_MS, _create

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(etcd, s3_bucket, tmp_path: Path):
    moto, bucket = s3_bucket
    c = Cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/c", "--s3-endpoint", moto.endpoint],
        "--lease-ttl-ms",
        str(TTL_MS),
        "--durability",
        "object",
        "--upload-interval-ms",
        "200",
        # small steps through each partition, so the kill lands inside partitions
        "--group-share-partition-max-record-locks",
        "50",
    )
    yield c
    c.stop_all()


def _share_partitions(c: Cluster, group: str) -> set[str]:
    """The partitions whose share-partition some live broker serves for the group."""
    out = set()
    for bid, b in c.brokers.items():
        if not b.alive():
            continue
        try:
            samples = scrape(f"http://127.0.0.1:{c.metrics_ports[bid]}/metrics")
        except OSError:
            continue
        for name in samples:
            if name.startswith("strata_share_partition_start_offset{") and f'"{group}"' in name:
                out.add(name.split('partition="')[1].split('"')[0])
    return out


class Worker(threading.Thread):
    """A share consumer acknowledging every record it gets (explicit mode, commit_sync):
    `confirmed` holds the records whose acknowledgement the broker answered as done;
    `violations` any record delivered again after that."""

    def __init__(self, bootstrap: str, group: str, topic: str, board: Board) -> None:
        super().__init__(daemon=True)
        self.c = ShareConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "share.acknowledgement.mode": "explicit",
            }
        )
        self.c.subscribe([topic])
        self.board = board

    def run(self) -> None:
        try:
            while not self.board.stop.is_set():
                msgs = [m for m in self.c.poll(0.5) if m.error() is None]
                for m in msgs:
                    self.c.acknowledge(m)
                if not msgs:
                    continue
                try:
                    results = self.c.commit_sync(15)
                except Exception:
                    results = {}
                ok = {tp.partition for tp, e in results.items() if e is None}
                self.board.record(msgs, ok)
                time.sleep(0.2)  # a worker's pace: the kill lands mid-run
        finally:
            self.c.close()


class Board:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.confirmed: dict[tuple[int, int], int] = {}
        self.delivered = 0
        self.violations: list[tuple[int, int]] = []

    def record(self, msgs, ok_partitions: set[int]) -> None:
        with self.lock:
            for m in msgs:
                key = (m.partition(), m.offset())
                self.delivered += 1
                if key in self.confirmed:
                    self.violations.append(key)
                if m.partition() in ok_partitions:
                    self.confirmed[key] = self.confirmed.get(key, 0) + 1

    def count(self) -> int:
        with self.lock:
            return len(self.confirmed)


@pytest.mark.parametrize(
    "how", ["kill -9 of the coordinator", "graceful stop of a leader elsewhere"]
)
def test_share_consumers_on_a_cluster_lose_nothing_and_redeliver_nothing_acked_when_a_broker_goes(
    cluster, how: str
) -> None:
    for i in (1, 2, 3):
        cluster.start(i)
    topic, group, n = "tasks", "agents", 3000
    _create(cluster, topic, 6)
    assert wait_for(lambda: set(cluster.leaders(topic).values()) == {1, 2, 3}, 30), cluster.leaders(
        topic
    )
    board = Board()
    workers = [Worker(cluster.bootstrap, group, topic, board) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        # share.auto.offset.reset is latest: produce once every share-partition exists
        assert wait_for(lambda: len(_share_partitions(cluster, group)) == 6, 60), _share_partitions(
            cluster, group
        )
        p = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True})
        for i in range(n):
            p.produce(topic, value=b"%06d" % i, partition=i % 6)
        assert p.flush(30) == 0
        assert wait_for(lambda: board.count() >= n // 4, 60), board.count()
        # the group's coordinator leads partitions of the topic too
        coordinator = cluster.leaders("__consumer_offsets")[zlib.crc32(group.encode()) % 16]
        assert coordinator in cluster.leaders(topic).values()
        before = board.count()
        if how.startswith("kill"):
            victim = coordinator
            cluster.brokers[victim].kill()
        else:
            victim = min({1, 2, 3} - {coordinator})
            cluster.brokers[victim].stop()
        killed = time.monotonic()
        assert wait_for(lambda: board.count() >= n, 90), (
            f"{board.count()} of {n} acknowledged after the kill of broker {victim}"
        )
        recovered = time.monotonic() - killed
    finally:
        board.stop.set()
        for w in workers:
            w.join(30)
    assert not board.violations, f"delivered again after acknowledged: {board.violations[:10]}"
    assert len(board.confirmed) == n and set(board.confirmed.values()) == {1}
    print(
        f"{how} (broker {victim}) at {before} of {n} acknowledged; "
        f"every record acknowledged {recovered:.1f}s later "
        f"({board.delivered} deliveries of {n} records)"
    )
