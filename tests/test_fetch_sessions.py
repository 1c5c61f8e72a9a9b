"""Fetch sessions (KIP-227) with real clients, and their error paths over the raw protocol.

Why: a consumer of many partitions should not send and receive every partition on every
fetch. The Java client and kafka-python open a session and then send incremental fetches;
librdkafka (2.16) never asks for one (it always sends session id 0, epoch -1), so it must
keep working sessionless. Clients cannot be made to send a stale epoch or an unknown
session id, so those answers are checked with hand-built requests.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import BrokerProcess, scrape
from protocol.errors import ErrorCode
from tests.wire import WireClient, make_batch

PARTITIONS = 6
MESSAGES = 3000
FETCH_V12 = (1, 12)


@pytest.fixture(scope="module")
def sessions_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = BrokerProcess(Path(tmp_path_factory.mktemp("sessions")) / "data", metrics=True).start()
    yield b
    b.stop()


class Metrics:
    def __init__(self, broker: BrokerProcess) -> None:
        self.values = scrape(broker.metrics_url)

    def requests(self, mode: str) -> float:
        return self.values.get(f'strata_fetch_session_requests_total{{mode="{mode}"}}', 0.0)

    @property
    def created(self) -> float:
        return self.values.get("strata_fetch_sessions_created_total", 0.0)


def _topic(admin_bootstrap: str) -> str:
    topic = f"sessions-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": admin_bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(15)
    return topic


def _produce(bootstrap: str, topic: str, n: int, tag: str = "") -> set[bytes]:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    values = set()
    for i in range(n):
        v = f"{topic}-{tag}{i}".encode()
        values.add(v)
        p.produce(topic, v, partition=i % PARTITIONS)
    assert p.flush(30) == 0
    return values


def test_kafka_python_consumes_everything_through_an_incremental_fetch_session(
    sessions_broker,
) -> None:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic = _topic(sessions_broker.bootstrap)
    before = Metrics(sessions_broker)
    consumer = KafkaConsumer(
        bootstrap_servers=sessions_broker.bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=200,
        max_partition_fetch_bytes=16 * 1024,  # several fetches per partition
    )
    try:
        consumer.assign([KTP(topic, i) for i in range(PARTITIONS)])
        consumer.seek_to_beginning()
        # half before the consumer polls, half while it polls (the session is open)
        expected = _produce(sessions_broker.bootstrap, topic, MESSAGES // 2)
        got: set[bytes] = set()
        deadline = time.monotonic() + 60
        while len(got) < MESSAGES and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.update(r.value for r in records)
            if len(got) >= MESSAGES // 2 and len(expected) < MESSAGES:
                expected |= _produce(sessions_broker.bootstrap, topic, MESSAGES // 2, "late-")
    finally:
        consumer.close()
    assert got == expected
    after = Metrics(sessions_broker)
    assert after.created - before.created >= 1
    incremental = after.requests("incremental") - before.requests("incremental")
    full = after.requests("full") - before.requests("full")
    assert incremental >= 2 and incremental > full, (incremental, full)
    assert after.requests("error") == before.requests("error")


def test_librdkafka_fetches_without_a_session_and_consumes_everything(sessions_broker) -> None:
    topic = _topic(sessions_broker.bootstrap)
    expected = _produce(sessions_broker.bootstrap, topic, MESSAGES)
    before = Metrics(sessions_broker)
    c = Consumer(
        {
            "bootstrap.servers": sessions_broker.bootstrap,
            "group.id": f"g-{topic}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 200,
        }
    )
    got: set[bytes] = set()
    try:
        c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while len(got) < MESSAGES and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                assert m.error() is None, m.error()
                got.add(m.value())
    finally:
        c.close()
    assert got == expected
    after = Metrics(sessions_broker)
    assert after.requests("sessionless") - before.requests("sessionless") >= 1
    assert after.created == before.created  # librdkafka sends epoch -1: no session


def test_the_broker_reports_its_event_loop_lag_and_freezes_its_start_up_heap(
    sessions_broker,
) -> None:
    """The lag histogram fills up, and start-up's objects are frozen out of the garbage
    collector (in this module for its broker, not about sessions)."""
    first = Metrics(sessions_broker).values["strata_event_loop_lag_seconds_count"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        m = Metrics(sessions_broker).values
        if m["strata_event_loop_lag_seconds_count"] > first:
            break
    assert m["strata_event_loop_lag_seconds_count"] > first
    inf = m['strata_event_loop_lag_seconds_bucket{le="+Inf"}']
    assert inf == m["strata_event_loop_lag_seconds_count"]
    assert m["strata_gc_frozen_objects"] > 10_000


@pytest.mark.slow  # as every Java test: a JVM, and the client jars fetched once
@pytest.mark.skipif(shutil.which("java") is None, reason="`java` is not on PATH")
def test_the_java_client_consumes_everything_through_an_incremental_fetch_session(
    sessions_broker, tmp_path
) -> None:
    from devkit.javaclient import run_client_check

    config = tmp_path / "consumer.properties"
    # small fetches, so the consumer needs many of them (the other clients ignore these)
    config.write_text("max.partition.fetch.bytes=4096\nfetch.max.wait.ms=100\n")
    before = Metrics(sessions_broker)
    result = run_client_check(
        sessions_broker.bootstrap,
        f"sessions-java-{uuid.uuid4().hex[:8]}",
        MESSAGES,
        "lz4",
        partitions=PARTITIONS,
        timeout=120.0,
        client_config=config,
    )
    assert result["errors"] == []
    assert result["consumed"] == MESSAGES
    after = Metrics(sessions_broker)
    assert after.created - before.created >= 1
    assert after.requests("incremental") - before.requests("incremental") >= 1
    assert after.requests("error") == before.requests("error")


def _fetch_body(
    topic: str, offsets: dict[int, int], session_id: int, epoch: int, forgotten=()
) -> dict:
    return {
        "replica_id": -1,
        "max_wait": 50,
        "min_bytes": 1,
        "max_bytes": 50_000_000,
        "isolation_level": 0,
        "session_id": session_id,
        "session_epoch": epoch,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": p,
                        "current_leader_epoch": -1,
                        "fetch_offset": o,
                        "last_fetched_epoch": -1,
                        "log_start_offset": -1,
                        "partition_max_bytes": 1_000_000,
                    }
                    for p, o in offsets.items()
                ],
            }
        ]
        if offsets
        else [],
        "forgotten_topics_data": [{"topic": topic, "partitions": list(forgotten)}]
        if forgotten
        else [],
        "rack_id": "",
    }


def _partitions(response) -> dict[int, object]:
    return {p.partition_index: p for t in response.responses for p in t.partitions}


def test_raw_incremental_fetches_send_only_news_and_refuse_unknown_sessions_and_stale_epochs(
    sessions_broker,
) -> None:
    with WireClient(sessions_broker.bootstrap) as c:
        topic = f"raw-sessions-{uuid.uuid4().hex[:8]}"
        assert c.create_topic(topic, 2).error_code == ErrorCode.none
        assert c.produce(topic, 0, make_batch([b"a", b"b", b"c"])).error_code == ErrorCode.none

        full = c.call(*FETCH_V12, _fetch_body(topic, {0: 0, 1: 0}, 0, 0))
        assert full.error_code == ErrorCode.none
        sid = full.session_id
        assert sid != 0
        parts = _partitions(full)
        assert set(parts) == {0, 1} and parts[0].high_watermark == 3 and parts[0].records

        # p0 moves past what it read: nothing new anywhere, so the answer names nothing
        r = c.call(*FETCH_V12, _fetch_body(topic, {0: 3}, sid, 1))
        assert (r.error_code, r.session_id, _partitions(r)) == (ErrorCode.none, sid, {})

        # data on p1 (still at 0 in the session, not named in the request)
        assert c.produce(topic, 1, make_batch([b"x"])).error_code == ErrorCode.none
        r = c.call(*FETCH_V12, _fetch_body(topic, {}, sid, 2))
        assert set(_partitions(r)) == {1} and _partitions(r)[1].records

        stale = c.call(*FETCH_V12, _fetch_body(topic, {}, sid, 2))
        assert stale.error_code == ErrorCode.invalid_fetch_session_epoch
        assert stale.session_id == 0 and stale.responses == ()
        unknown = c.call(*FETCH_V12, _fetch_body(topic, {}, sid ^ 0x5A5A5A5A or 1, 1))
        assert unknown.error_code == ErrorCode.fetch_session_id_not_found

        # the session survived both errors; forgetting p1 leaves p0, now with news
        assert c.produce(topic, 0, make_batch([b"d"])).error_code == ErrorCode.none
        r = c.call(*FETCH_V12, _fetch_body(topic, {}, sid, 3, forgotten=[1]))
        assert set(_partitions(r)) == {0} and _partitions(r)[0].high_watermark == 4

        # epoch -1 closes the session: a sessionless full answer, then the id is gone
        r = c.call(*FETCH_V12, _fetch_body(topic, {0: 4, 1: 1}, sid, -1))
        assert r.session_id == 0 and set(_partitions(r)) == {0, 1}
        gone = c.call(*FETCH_V12, _fetch_body(topic, {}, sid, 4))
        assert gone.error_code == ErrorCode.fetch_session_id_not_found
