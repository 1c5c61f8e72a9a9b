"""Links from a real Apache Kafka 4.x (KRaft, started once for the module from the jars
benchmarks/kafka_reference.py fetches) into Strata: mirror topics at the source's
offsets, consumer group offsets synced, promotion (cutover), source faults; driven by
confluent-kafka and the `strata link` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import BrokerProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from benchmarks.kafka_reference import KafkaReference
    from devkit.maven import KafkaUnavailable

    ref = KafkaReference(log_dir=tmp_path_factory.mktemp("kafka"), heap="512m")
    try:
        ref.start()
    except KafkaUnavailable as e:
        pytest.skip(f"Apache Kafka is not available: {e}")
    yield ref
    ref.stop()


@pytest.fixture
def strata(tmp_path: Path) -> Iterator[BrokerProcess]:
    b = BrokerProcess(
        tmp_path / "data", None, "--group-initial-rebalance-delay-ms", "0", metrics=True
    ).start()
    yield b
    b.stop()


def api(b: BrokerProcess) -> str:
    return f"http://127.0.0.1:{b.metrics_port}"


def link(b: BrokerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`strata link ARGS --broker URL` as a user runs it."""
    r = subprocess.run(
        [sys.executable, "-m", "broker", "link", *args, "--broker", api(b)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def describe(b: BrokerProcess, name: str) -> dict:
    with urllib.request.urlopen(f"{api(b)}/v1/links/{name}", timeout=10) as r:
        return json.loads(r.read())


def wait_for(what: str, cond: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def create_topic(bootstrap: str, name: str, partitions: int, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, partitions, 1, config=configs)])
    fs[name].result(30)


def topic_config(bootstrap: str, topic: str, key: str) -> str:
    from confluent_kafka.admin import ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([res])[res].result(30)[key].value


def ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, partitions: int) -> list[tuple]:
    """Every record as (partition, offset, key, value, headers, timestamp)."""
    want = ends(bootstrap, topic, partitions)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions) if want[p]])
    out, done = [], {p for p in range(partitions) if not want[p]}
    deadline = time.monotonic() + 60
    try:
        while len(done) < partitions and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append(
                (m.partition(), m.offset(), m.key(), m.value(), m.headers(), m.timestamp()[1])
            )
            if m.offset() + 1 >= want[m.partition()]:
                done.add(m.partition())
    finally:
        c.close()
    assert len(done) == partitions, f"read {len(out)} records, partitions done {done}"
    return sorted(out)


class Writer:
    """A producer writing keyed records with headers continuously, until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        self.topic = topic
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            i = self.sent
            self.producer.produce(
                self.topic,
                key=f"session-{i % 17}".encode(),
                value=f"event {i}".encode() * (1 + i % 5),
                headers=[("n", str(i).encode()), ("kind", b"agent")],
            )
            self.sent += 1
            self.producer.poll(0)
            if i % 50 == 0:
                time.sleep(0.02)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        assert self.producer.flush(30) == 0


def caught_up(b: BrokerProcess, name: str, topic: str, source_ends: dict[int, int]) -> bool:
    parts = describe(b, name)["topics"].get(topic, {}).get("partitions", {})
    return all(parts.get(str(p), {}).get("mirror_end") == e for p, e in source_ends.items())


def test_a_mirror_topic_keeps_the_source_offsets_and_is_read_only_until_promoted(
    kafka, strata
) -> None:
    topic = "agent-events"
    create_topic(kafka.bootstrap, topic, 6, **{"retention.ms": "604800000"})
    with Writer(kafka.bootstrap, topic) as w:
        wait_for("records on kafka", lambda: w.sent > 500)
        link(
            strata,
            "create",
            "--name",
            "prod",
            "--source-bootstrap",
            kafka.bootstrap,
            "--topics",
            "agent-.*",
        )
        wait_for("the mirror topic", lambda: topic in describe(strata, "prod")["topics"])
        # a produce to the mirror is refused with the documented error
        p = Producer({"bootstrap.servers": strata.bootstrap, "retries": 0, "acks": "all"})
        errors: list = []
        p.produce(topic, b"not allowed", partition=0, on_delivery=lambda e, m: errors.append(e))
        p.flush(30)
        assert errors and errors[0] is not None
        assert errors[0].name() == "INVALID_REQUEST", errors[0]
        wait_for("mirroring under load", lambda: w.sent > 3000)
    source_ends = ends(kafka.bootstrap, topic, 6)
    wait_for("the mirror to catch up", lambda: caught_up(strata, "prod", topic, source_ends))
    d = describe(strata, "prod")
    assert d["topics"][topic]["lag_records"] == 0
    assert d["topics"][topic]["state"] == "mirroring"
    assert topic_config(strata.bootstrap, topic, "retention.ms") == "604800000"  # as the source
    source = read_all(kafka.bootstrap, topic, 6)
    mirror = read_all(strata.bootstrap, topic, 6)
    assert len(source) == sum(source_ends.values()) >= 3000
    assert mirror == source  # offset, key, value, headers, timestamp of every record

    # cutover: producers stopped on Kafka; promote; the topic takes writes after the source's end
    r = link(strata, "promote", "--name", "prod", "--topic", topic)
    promoted = json.loads(r.stdout)
    assert promoted["state"] == "promoted"
    assert {int(k): v for k, v in promoted["final_offsets"].items()} == source_ends
    p = Producer({"bootstrap.servers": strata.bootstrap, "acks": "all"})
    results: list = []
    p.produce(
        topic,
        b"after cutover",
        key=b"k",
        partition=2,
        on_delivery=lambda e, m: results.append((e, m)),
    )
    p.flush(30)
    err, msg = results[0]
    assert err is None, err
    assert msg.offset() == source_ends[2]
    listed = json.loads(link(strata, "list").stdout)
    assert listed["links"][0]["name"] == "prod"
    assert describe(strata, "prod")["topics"][topic]["state"] == "promoted"


def produce_n(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(start, start + n):
        p.produce(topic, key=f"k{i % 7}".encode(), value=f"v{i}".encode())
        if i % 100 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def consume_group(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[int, int]]:
    """Consume `count` records as a member of `group`, committing each; (partition, offset)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + 90
    try:
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            got.append((m.partition(), m.offset()))
        c.commit(asynchronous=False)  # where it stopped
    finally:
        c.close()
    assert len(got) == count, f"consumed {len(got)} of {count}"
    return got


def test_a_consumer_group_moved_from_kafka_resumes_on_strata_where_it_stopped(
    kafka, strata
) -> None:
    topic = "orders-eu"
    create_topic(kafka.bootstrap, topic, 3)
    produce_n(kafka.bootstrap, topic, 900)
    before = consume_group(kafka.bootstrap, topic, "billing", 400)  # stopped on Kafka
    link(
        strata,
        "create",
        "--name",
        "eu",
        "--source-bootstrap",
        kafka.bootstrap,
        "--topics",
        "orders-.*",
        "--groups",
        "bill.*",
    )
    source_ends = ends(kafka.bootstrap, topic, 3)
    wait_for("the mirror to catch up", lambda: caught_up(strata, "eu", topic, source_ends))
    committed = {p: max(o for q, o in before if q == p) + 1 for p, _ in before}
    synced = {f"{topic}-{p}": o for p, o in committed.items()}
    wait_for(
        "the group's offsets",
        lambda: (
            {k: v for k, v in describe(strata, "eu")["groups"].get("billing", {}).items()} == synced
        ),
    )
    after = consume_group(strata.bootstrap, topic, "billing", 900 - len(before))
    everything = sorted(before + after)
    assert everything == sorted({(p, o) for p in range(3) for o in range(source_ends[p])})
    # the group moved: what it commits on Strata is never overwritten from Kafka again
    produce_n(kafka.bootstrap, topic, 30, 900)
    time.sleep(7)  # more than a refresh of the link
    c = Consumer({"bootstrap.servers": strata.bootstrap, "group.id": "billing"})
    try:
        mine = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        c.close()
    assert {tp.partition: tp.offset for tp in mine} == source_ends
