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

from devkit.broker import BrokerProcess, scrape
from devkit.procs import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SASL_PASSWORD = "mirror-secret"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from benchmarks.kafka_reference import KafkaReference
    from devkit.maven import KafkaUnavailable

    ref = KafkaReference(log_dir=tmp_path_factory.mktemp("kafka"), heap="512m")
    ref.sasl_port = free_port()  # a second listener, SASL_PLAINTEXT with PLAIN logins
    plain = f"PLAINTEXT://127.0.0.1:{ref.port}"
    sasl = f"SASL_PLAINTEXT://127.0.0.1:{ref.sasl_port}"
    ref.extra_properties.update(
        {
            "listeners": f"{plain},{sasl},CONTROLLER://127.0.0.1:{ref.controller_port}",
            "advertised.listeners": f"{plain},{sasl}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "log.cleaner.backoff.ms": "300",  # compacted topics get compacted within the test
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="admin-secret" user_admin="admin-secret" '
                f'user_mirror="{SASL_PASSWORD}";'
            ),
        }
    )
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
            "auto.offset.reset": "earliest",  # offset 0 may be gone (retention, compaction)
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
            try:
                self.producer.produce(
                    self.topic,
                    key=f"session-{i % 17}".encode(),
                    value=f"event {i}".encode() * (1 + i % 5),
                    headers=[("n", str(i).encode()), ("kind", b"agent")],
                )
            except BufferError:  # the source is down and the queue full: wait, try again
                self.producer.poll(0.2)
                continue
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


def committed_on(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in got if tp.offset >= 0}  # those it committed


def test_a_link_resumes_after_the_source_was_killed_and_down_for_30s_with_nothing_lost_or_twice(
    kafka, strata
) -> None:
    topic = "audit-trail"
    create_topic(kafka.bootstrap, topic, 3)
    produce_n(kafka.bootstrap, topic, 600)
    before = consume_group(kafka.bootstrap, topic, "auditors", 250)  # committed on Kafka
    link(
        strata,
        "create",
        "--name",
        "audit",
        "--source-bootstrap",
        kafka.bootstrap,
        "--topics",
        "audit-.*",
        "--groups",
        "auditors",
    )
    with Writer(kafka.bootstrap, topic) as w:
        wait_for(
            "mirroring while the source takes writes",
            lambda: (
                w.sent > 1500
                and sum(
                    p["mirror_end"]
                    for p in describe(strata, "audit")["topics"]
                    .get(topic, {})
                    .get("partitions", {})
                    .values()
                )
                > 1000
            ),
        )
        kafka.proc.kill()  # mid-link, while the producer writes: no controlled shutdown
        kafka.proc.wait(30)
        down_until = time.monotonic() + 30
        wait_for(
            "the link to report the source unreachable",
            lambda: (
                (d := describe(strata, "audit"))["connected"] is False
                and (d["last_error"] or "").startswith("source:")
            ),
        )
        assert scrape(strata.metrics_url)['strata_link_connected{link="audit"}'] == 0.0
        time.sleep(max(0.0, down_until - time.monotonic()))
        kafka.start()  # the same data dir, port and cluster id
        sent_at_restart = w.sent
        wait_for("the producer to go on after the restart", lambda: w.sent > sent_at_restart + 500)
    source_ends = ends(kafka.bootstrap, topic, 3)
    wait_for("the mirror to catch up", lambda: caught_up(strata, "audit", topic, source_ends), 90)
    d = describe(strata, "audit")
    assert d["connected"] is True
    assert d["topics"][topic]["lag_records"] == 0
    m = scrape(strata.metrics_url)
    assert m['strata_link_connected{link="audit"}'] == 1.0
    assert m['strata_link_state{link="audit",state="active"}'] == 1.0
    assert m[f'strata_link_topic_state{{link="audit",state="mirroring",topic="{topic}"}}'] == 1.0
    for p in range(3):
        labels = f'link="audit",partition="{p}",topic="{topic}"'
        assert m[f"strata_link_lag_records{{{labels}}}"] == 0.0
        assert m[f"strata_link_lag_bytes{{{labels}}}"] == 0.0
        assert m[f"strata_link_mirrored_records_total{{{labels}}}"] == source_ends[p]
        assert m[f"strata_link_mirrored_bytes_total{{{labels}}}"] > source_ends[p] * 10
    source = read_all(kafka.bootstrap, topic, 3)
    mirror = read_all(strata.bootstrap, topic, 3)
    assert len(source) == 600 + w.sent  # the source itself lost nothing
    assert mirror == source  # no gap, no duplicate, every record at its offset
    # the group's offsets committed on Kafka before the fault are still Strata's
    committed = {p: max(o for q, o in before if q == p) + 1 for p, _ in before}
    assert committed_on(kafka.bootstrap, "auditors", topic, 3) == committed
    assert {k: v for k, v in describe(strata, "audit")["groups"]["auditors"].items()} == {
        f"{topic}-{p}": o for p, o in committed.items()
    }
    assert committed_on(strata.bootstrap, "auditors", topic, 3) == committed


def read_to_sentinel(bootstrap: str, topic: str, partitions: int, isolation: str) -> list[tuple]:
    """(partition, offset, value) of every record a consumer with `isolation` gets, up to
    the record b"end" each partition ends with."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple] = []
    done: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(done) < partitions and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.partition(), m.offset(), m.value()))
            if m.value() == b"end":
                done.add(m.partition())
    finally:
        c.close()
    assert len(done) == partitions, f"{isolation}: read {len(out)}, partitions done {done}"
    return sorted(out)


def test_transactions_mirror_with_their_markers_so_read_committed_sees_only_committed_records(
    kafka, strata
) -> None:
    topic = "ledger-tx"
    create_topic(kafka.bootstrap, topic, 2)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": "ledger-writer"})
    p.init_transactions(30)
    committed, aborted = set(), set()
    for t in range(12):
        p.begin_transaction()
        values = [f"t{t}-r{r}".encode() for r in range(20)]
        for r, v in enumerate(values):
            p.produce(topic, v, partition=r % 2)
        p.flush(30)  # on the source before the end of the transaction, aborted or not
        if t % 3 == 1:
            p.abort_transaction(30)
            aborted.update(values)
        else:
            p.commit_transaction(30)
            committed.update(values)
    p.begin_transaction()
    for part in range(2):
        p.produce(topic, b"end", partition=part)
    p.commit_transaction(30)
    link(
        strata,
        "create",
        "--name",
        "ledger",
        "--source-bootstrap",
        kafka.bootstrap,
        "--topics",
        "ledger-.*",
    )
    source_ends = ends(kafka.bootstrap, topic, 2)  # the markers count
    wait_for("the mirror to catch up", lambda: caught_up(strata, "ledger", topic, source_ends))
    on_kafka = read_to_sentinel(kafka.bootstrap, topic, 2, "read_committed")
    on_strata = read_to_sentinel(strata.bootstrap, topic, 2, "read_committed")
    assert on_strata == on_kafka  # the same records at the same offsets
    seen = {v for _, _, v in on_strata}
    assert seen == committed | {b"end"}
    assert not seen & aborted
    # the aborted records are there, at the source's offsets, for read_uncommitted
    everything = read_to_sentinel(strata.bootstrap, topic, 2, "read_uncommitted")
    assert everything == read_to_sentinel(kafka.bootstrap, topic, 2, "read_uncommitted")
    assert aborted <= {v for _, _, v in everything}


def test_a_link_logs_in_to_a_sasl_source_with_the_source_security_settings(kafka, strata) -> None:
    topic = "secure-payments"
    create_topic(kafka.bootstrap, topic, 2)
    produce_n(kafka.bootstrap, topic, 300)
    sasl = f"127.0.0.1:{kafka.sasl_port}"

    def create(name: str, password: str) -> None:
        link(
            strata,
            "create",
            "--name",
            name,
            "--source-bootstrap",
            sasl,
            "--topics",
            "secure-.*",
            "--source-security",
            "security.protocol=SASL_PLAINTEXT",
            "--source-security",
            "sasl.mechanism=PLAIN",
            "--source-security",
            "sasl.username=mirror",
            "--source-security",
            f"sasl.password={password}",
        )

    create("wrong", "not-the-password")  # refused by the source: reported, nothing mirrored
    wait_for(
        "the failed login to be reported",
        lambda: "login" in (describe(strata, "wrong")["last_error"] or ""),
    )
    assert describe(strata, "wrong")["topics"] == {}
    link(strata, "delete", "--name", "wrong")
    create("secure", SASL_PASSWORD)
    source_ends = ends(kafka.bootstrap, topic, 2)
    wait_for("the mirror to catch up", lambda: caught_up(strata, "secure", topic, source_ends))
    d = describe(strata, "secure")
    assert d["connected"] is True and d["last_error"] is None
    assert d["source_security"]["sasl.password"] == "********"
    assert SASL_PASSWORD not in link(strata, "list").stdout + json.dumps(d)
    assert read_all(strata.bootstrap, topic, 2) == read_all(kafka.bootstrap, topic, 2)


def link_metrics(b: BrokerProcess, name: str, topic: str, partition: int) -> dict[str, float]:
    """This link's per-partition samples in /metrics, by sample name (with the reason
    label for strata_link_partition_stopped)."""
    want = f'link="{name}",partition="{partition}"'
    out = {}
    for sample, value in scrape(b.metrics_url).items():
        if want in sample and f'topic="{topic}"' in sample:
            key = sample.split("{")[0]
            if "reason=" in sample:
                key += ":" + sample.split('reason="')[1].split('"')[0]
            out[key] = value
    return out


def delete_records_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.delete_records([TopicPartition(topic, partition, offset)])
    for f in fs.values():
        f.result(30)


def test_records_the_source_deleted_before_they_were_mirrored_stop_the_partition_and_are_reported(
    kafka, strata
) -> None:
    topic = "gap-orders"
    create_topic(kafka.bootstrap, topic, 1)
    produce_n(kafka.bootstrap, topic, 100)
    link(
        strata, "create", "--name", "gaps", "--source-bootstrap", kafka.bootstrap, "--topics", topic
    )
    wait_for("the mirror to catch up", lambda: caught_up(strata, "gaps", topic, {0: 100}))
    link(strata, "pause", "--name", "gaps")
    time.sleep(1.5)  # a fetch in flight when paused ends
    produce_n(kafka.bootstrap, topic, 100, start=100)
    delete_records_before(kafka.bootstrap, topic, 0, 150)  # as retention would: 100-149 lost
    link(strata, "resume", "--name", "gaps")

    def stopped() -> dict | None:
        part = describe(strata, "gaps")["topics"][topic]["partitions"].get("0", {})
        return part if part.get("state") == "stopped" else None

    part = wait_for("the partition to stop at the gap", stopped)
    assert part["stopped"] == "source_gap"
    assert part["gap"] == [100, 150]
    assert part["lost_records"] == 50
    assert part["mirror_end"] == 100 and part["source_start"] == 150
    assert "offsets 100 to 149 were deleted on the source" in part["error"]
    d = describe(strata, "gaps")
    assert d["topics"][topic]["stopped_partitions"] == [0]
    assert "100 to 149" in d["last_error"]
    assert "100 to 149 were deleted on the source" in strata.log()  # the warning line
    m = link_metrics(strata, "gaps", topic, 0)
    assert m["strata_link_partition_stopped:source_gap"] == 1.0
    assert m["strata_link_source_lost_records"] == 50.0
    time.sleep(2)  # stopped means stopped: nothing past the gap is fetched
    assert ends(strata.bootstrap, topic, 1) == {0: 100}

    # the operator accepts the gap: the mirror goes on from the source's start, gap kept
    link(strata, "resume", "--name", "gaps", "--accept-gaps")
    wait_for("the mirror to go on past the gap", lambda: caught_up(strata, "gaps", topic, {0: 200}))
    part = describe(strata, "gaps")["topics"][topic]["partitions"]["0"]
    assert part["state"] == "mirroring" and part["skipped"] == [[100, 150]]
    assert part["lost_records"] == 50
    m = link_metrics(strata, "gaps", topic, 0)
    assert m["strata_link_partition_stopped:source_gap"] == 0.0
    # the mirror's log starts where the source's does: its readers see what Kafka's see
    assert read_all(strata.bootstrap, topic, 1) == read_all(kafka.bootstrap, topic, 1)
    assert [r[1] for r in read_all(strata.bootstrap, topic, 1)] == list(range(150, 200))
    link(strata, "delete", "--name", "gaps")


def test_a_link_created_to_continue_past_source_gaps_reports_them_and_goes_on(
    kafka, strata
) -> None:
    topic = "gap-clicks"
    create_topic(kafka.bootstrap, topic, 1)
    produce_n(kafka.bootstrap, topic, 60)
    delete_records_before(kafka.bootstrap, topic, 0, 40)  # gone before the link starts
    link(
        strata,
        "create",
        "--name",
        "lossy",
        "--source-bootstrap",
        kafka.bootstrap,
        "--topics",
        topic,
        "--on-source-gap",
        "continue",
    )
    wait_for("the mirror to catch up", lambda: caught_up(strata, "lossy", topic, {0: 60}))
    d = describe(strata, "lossy")
    assert d["on_source_gap"] == "continue"
    part = d["topics"][topic]["partitions"]["0"]
    assert part["skipped"] == [[0, 40]] and part["lost_records"] == 40
    assert "offsets 0 to 39 were lost on the source" in strata.log()
    assert link_metrics(strata, "lossy", topic, 0)["strata_link_source_lost_records"] == 40.0
    assert [r[1] for r in read_all(strata.bootstrap, topic, 1)] == list(range(40, 60))
    link(strata, "delete", "--name", "lossy")


def test_a_source_topic_deleted_on_kafka_stops_its_partitions_and_is_reported(
    kafka, strata
) -> None:
    topic = "doomed-events"
    create_topic(kafka.bootstrap, topic, 2)
    produce_n(kafka.bootstrap, topic, 80)
    source_ends = ends(kafka.bootstrap, topic, 2)
    link(
        strata,
        "create",
        "--name",
        "doomed",
        "--source-bootstrap",
        kafka.bootstrap,
        "--topics",
        topic,
    )
    wait_for("the mirror to catch up", lambda: caught_up(strata, "doomed", topic, source_ends))
    before = read_all(strata.bootstrap, topic, 2)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.delete_topics([topic])[topic].result(30)

    def both_stopped() -> dict | None:
        t = describe(strata, "doomed")["topics"][topic]
        return t if t["stopped_partitions"] == [0, 1] else None

    t = wait_for("both partitions to stop", both_stopped, timeout=30)
    for i in (0, 1):
        part = t["partitions"][str(i)]
        assert part["stopped"] == "source_topic_gone"
        assert "the source topic was deleted" in part["error"]
        assert part["mirror_end"] == source_ends[i]
        assert (
            link_metrics(strata, "doomed", topic, i)[
                "strata_link_partition_stopped:source_topic_gone"
            ]
            == 1.0
        )
    assert f"source topic {topic} is gone" in describe(strata, "doomed")["last_error"]
    assert "the source topic was deleted" in strata.log()
    assert read_all(strata.bootstrap, topic, 2) == before  # the mirror keeps what it had
    link(strata, "delete", "--name", "doomed")


def test_a_compacted_source_topic_mirrors_with_its_gaps_and_is_compacted_on_strata(
    kafka, strata
) -> None:
    topic = "compacted-accounts"
    create_topic(
        kafka.bootstrap,
        topic,
        1,
        **{
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "100",
        },
    )
    p = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0})
    for i in range(300):
        key = f"acct-{i % 10}" if i % 3 else f"once-{i}"  # kept ones between overwritten ones
        p.produce(topic, key=key.encode(), value=f"balance-{i}".encode())
        if i % 30 == 29:
            p.flush(10)
            time.sleep(0.15)  # a segment rolls (segment.ms) so the cleaner has work
    assert p.flush(30) == 0

    def compacted() -> list | None:
        p.produce(topic, key=b"roll", value=b"x")  # rolls the active segment once more
        p.flush(10)
        got = read_all(kafka.bootstrap, topic, 1)
        offsets = [r[1] for r in got]
        gaps = sum(b - a > 1 for a, b in zip(offsets, offsets[1:], strict=False))
        return got if gaps >= 10 else None  # the cleaner ran over a few segments

    wait_for("Kafka's cleaner to compact the topic", compacted, timeout=60)
    end = ends(kafka.bootstrap, topic, 1)
    link(
        strata,
        "create",
        "--name",
        "compact",
        "--source-bootstrap",
        kafka.bootstrap,
        "--topics",
        topic,
    )
    wait_for("the mirror to catch up", lambda: caught_up(strata, "compact", topic, end))
    source = [r for r in read_all(kafka.bootstrap, topic, 1) if r[1] < end[0]]
    mirror = read_all(strata.bootstrap, topic, 1)
    assert [r[:4] for r in mirror] == [r[:4] for r in source]  # offset, key, value: gaps kept
    assert topic_config(strata.bootstrap, topic, "cleanup.policy") == "compact"
    part = describe(strata, "compact")["topics"][topic]["partitions"]["0"]
    assert part["state"] == "mirroring" and part["lost_records"] == 0  # gaps are not losses
    link(strata, "delete", "--name", "compact")
