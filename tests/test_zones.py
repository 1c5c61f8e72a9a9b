"""Zone-aware reads across three brokers in racks a, b and c (etcd + moto's S3).

A consumer with client.rack is sent by each partition's leader (KIP-392's preferred read
replica) to a broker of its own rack, which serves the partition's uploaded data from the
bucket although it does not lead it. Acceptance: three consumers, in racks a, b and c,
each read a 12-partition topic once it is uploaded: the bytes served across racks (from the
brokers' strata_fetch_rack_bytes) are under 5% of the bytes consumed, where a consumer
without client.rack gets about two thirds of its bytes from the other racks' leaders; every
record still comes exactly once and in order.

The same cluster also shows a KIP-848 group moving with its coordinator (a graceful stop
hands the group's `__consumer_offsets` partition over) without its members noticing.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
from confluent_kafka import Consumer, TopicPartition

from devkit.etcd import etcd_binary
from tests.cluster import Cluster, wait_for
from tests.test_cluster import _create
from tests.test_groups import produce

pytestmark = [
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
    pytest.mark.slow,
]

RACKS = {1: "a", 2: "b", 3: "c"}
PARTITIONS = 12
RECORDS = 12_000


@pytest.fixture
def racked(etcd, s3_bucket, tmp_path: Path):
    moto, bucket = s3_bucket
    c = Cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/z", "--s3-endpoint", moto.endpoint],
        "--lease-ttl-ms",
        "3000",
        "--upload-interval-ms",
        "500",
    )
    for broker_id, rack in RACKS.items():
        c.start(broker_id, "--rack", rack)
    yield c
    c.stop_all()


def _rack_bytes(c: Cluster) -> dict[tuple[str, str], float]:
    """(broker rack, client rack) -> bytes served, summed over the brokers."""
    out: dict[tuple[str, str], float] = {}
    for broker_id in RACKS:
        with urlopen(f"http://127.0.0.1:{c.metrics_ports[broker_id]}/metrics", timeout=5) as r:
            text = r.read().decode()
        for m in re.finditer(
            r'^strata_fetch_rack_bytes_total\{broker_rack="([^"]*)",client_rack="([^"]*)"\} (\S+)',
            text,
            re.M,
        ):
            key = (m[1], m[2])
            out[key] = out.get(key, 0.0) + float(m[3])
    return out


def _read_all(bootstrap: str, topic: str, rack: str | None) -> dict[int, list[int]]:
    """Every partition from the start to its end, by assignment; offsets per partition in
    the order delivered."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"zones-{rack}",
        "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if rack:
        conf["client.rack"] = rack
    c = Consumer(conf)
    got: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 90
        while sum(map(len, got.values())) < RECORDS and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                assert m.error() is None, m.error()
                got[m.partition()].append(m.offset())
    finally:
        c.close()
    return got


def _check(got: dict[int, list[int]], ends: dict[int, int]) -> None:
    for p in range(PARTITIONS):
        assert got[p] == list(range(ends[p])), f"partition {p}: not each record once, in order"


def _cross(before, after, client_racks: set[str]) -> tuple[float, float]:
    moved = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    total = sum(v for (_, cr), v in moved.items() if cr in client_racks)
    cross = sum(v for (br, cr), v in moved.items() if cr in client_racks and br != cr)
    return cross, total


def test_consumers_with_a_rack_read_from_their_own_rack(racked: Cluster) -> None:
    topic = "zoned"
    _create(racked, topic, PARTITIONS)
    assert wait_for(lambda: len(set(racked.leaders(topic).values())) == 3, 30)
    acked = produce(racked.bootstrap, topic, RECORDS, "z", partitions=PARTITIONS)
    ends = {p: 1 + max(o for (q, o) in acked if q == p) for p in range(PARTITIONS)}
    time.sleep(2.0)  # past the upload interval: everything is in the bucket

    # without client.rack, a consumer (say in rack a) reads each partition from its leader
    before = _rack_bytes(racked)
    _check(_read_all(racked.bootstrap, topic, None), ends)
    after = _rack_bytes(racked)
    served = {br: after.get((br, ""), 0) - before.get((br, ""), 0) for br in RACKS.values()}
    baseline = (served["b"] + served["c"]) / sum(served.values())
    assert 0.5 < baseline < 0.85, served

    before = _rack_bytes(racked)
    for rack in RACKS.values():
        _check(_read_all(racked.bootstrap, topic, rack), ends)
    after = _rack_bytes(racked)
    cross, total = _cross(before, after, set(RACKS.values()))
    assert total > 0.9 * 3 * sum(served.values()), (total, served)
    print(f"cross-rack: {cross / total:.1%} with client.rack, {baseline:.1%} without")
    assert cross / total < 0.05, {k: after[k] - before.get(k, 0) for k in after}


def test_a_consumer_group_moves_with_its_coordinator(racked: Cluster) -> None:
    """KIP-848 group state lives in __consumer_offsets: when the coordinator hands the
    group's offsets partition over (a graceful stop), the new coordinator carries the group
    on; its members keep their partitions at their epochs, nothing is consumed twice."""
    from tests.test_consumer_protocol import Member, poll_until
    from tests.wire import WireClient

    topic, group = "moving-group", "g-moving"
    _create(racked, topic, 4)
    first = produce(racked.bootstrap, topic, 2000, "a", partitions=4)
    members = [Member(f"m{i}", racked.bootstrap, group, [topic]) for i in range(2)]
    try:
        poll_until(
            members,
            lambda: (
                sum(len(m.delivered) for m in members) >= len(first)
                and all(len(m.owned) == 2 for m in members)
            ),
            40,
            "a 2/2 split and the first records",
        )
        owned = {m.name: set(m.owned) for m in members}
        seen = {m.name: len(m.events) for m in members}
        with WireClient(racked.brokers[1].bootstrap) as c:
            found = c.call(10, 3, {"key": group, "key_type": 0})
        coordinator = found.node_id
        assert coordinator in RACKS, found
        racked.brokers[coordinator].stop()  # hands its partitions over first
        bootstrap = racked.bootstrap
        second = produce(bootstrap, topic, 2000, "b", partitions=4)
        total = len(first) + len(second)
        poll_until(
            members,
            lambda: sum(len(m.delivered) for m in members) >= total,
            60,
            "the records produced after the move",
        )
        for m in members:
            m.poll(0.3)
        logs = "".join(b.log() for i, b in racked.brokers.items() if i != coordinator)
        assert f"consumer group {group}: restored at epoch" in logs
        consumed = [d for m in members for d in m.delivered]
        assert len(consumed) == total, "records were delivered again after the move"
        for m in members:
            assert m.owned == owned[m.name]
            assert m.events[seen[m.name] :] == [], (m.name, m.events[seen[m.name] :])
    finally:
        for m in members:
            m.close()
