"""Quotas (issue 17, acceptance 5): a client with a 1 MB/s produce quota is throttled to
within 10% of it (throttle_time_ms in its answers and a muted connection) while a client
without one runs at full speed. The quota is set and read back with Kafka's own
kafka-configs; both producers are confluent-kafka. The quota window is shortened
(11 x 0.1 s) so the first burst a full bucket allows (10 windows of quota) is spent at
once, and the rate is measured over the ten seconds after it.

Fetch quotas as Kafka (KIP-219): a fetch that would go over consumer_byte_rate is
answered with no records and throttle_time_ms, and the connection muted; confluent-kafka
and the Java client keep consuming at the quota without errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from devkit.kafka_cli import KafkaCli

QUOTA = 1024 * 1024
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


# each producer in its own process, so neither's callbacks hold the other's GIL
_PRODUCER = """
import json, sys, time
from confluent_kafka import Producer

bootstrap, client_id, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
acked, throttles = [], []
p = Producer({
    "bootstrap.servers": bootstrap,
    "client.id": client_id,
    "linger.ms": 5,
    "batch.size": 65536,  # requests small next to the quota, as Kafka's quotas assume
    "queue.buffering.max.messages": 500,
    "throttle_cb": lambda event: throttles.append(event.throttle_time),
})
value = b"x" * 10_000
end = time.monotonic() + seconds

def done(err, msg):
    if err is None:
        acked.append((time.monotonic(), len(msg.value())))

while time.monotonic() < end:
    try:
        p.produce("quota-" + client_id, value, on_delivery=done)
    except BufferError:
        p.poll(0.01)
    p.poll(0)
p.purge()  # what is still queued was never sent: not waited for
p.flush(10)
print(json.dumps({"acked": acked, "throttles": throttles}))
"""


def _producers(bootstrap: str, seconds: float, *client_ids: str) -> dict[str, dict]:
    procs = {
        cid: subprocess.Popen(
            [sys.executable, "-c", _PRODUCER, bootstrap, cid, str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for cid in client_ids
    }
    out = {}
    for cid, proc in procs.items():
        stdout, _ = proc.communicate(timeout=seconds + 60)
        assert proc.returncode == 0, stdout
        out[cid] = json.loads(stdout.strip().splitlines()[-1])
    return out


def test_a_client_over_its_produce_quota_is_throttled_to_it_and_others_are_not(
    broker_factory,
) -> None:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: kafka-configs needs a JVM")
    broker = broker_factory("--quota-window-num", "11", "--quota-window-size-seconds", "0.1")
    tools = KafkaCli()

    def configs(*args: str) -> str:
        r = tools.run(tools.config_command, "--bootstrap-server", broker.bootstrap, *args)
        assert r.returncode == 0, r.describe()
        return r.stdout

    configs(
        "--alter", "--entity-type", "clients", "--entity-name", "slow",
        "--add-config", f"producer_byte_rate={QUOTA}",
    )  # fmt: skip
    described = configs("--describe", "--entity-type", "clients", "--entity-name", "slow")
    assert f"producer_byte_rate={float(QUOTA)}" in described, described

    results = _producers(broker.bootstrap, 14.0, "slow", "fast")
    slow_acks, slow_throttles = results["slow"]["acked"], results["slow"]["throttles"]
    fast_acks, fast_throttles = results["fast"]["acked"], results["fast"]["throttles"]
    start = min(ts for ts, _ in slow_acks)

    def rate(acked: list, lo: float, hi: float) -> float:
        return sum(n for ts, n in acked if start + lo <= ts < start + hi) / (hi - lo)

    slow, fast = rate(slow_acks, 3.0, 13.0), rate(fast_acks, 3.0, 13.0)
    print(f"\nslow client {slow / QUOTA:.3f} x its quota; fast {fast / 1e6:.1f} MB/s")
    assert 0.9 * QUOTA <= slow <= 1.1 * QUOTA
    assert slow_throttles and max(slow_throttles) > 0  # throttle_time_ms reached the client
    assert fast > 3 * QUOTA and not any(fast_throttles)


def test_a_consumer_over_its_fetch_quota_is_throttled_to_it_without_errors(broker_factory) -> None:
    from confluent_kafka import Consumer, Producer

    from protocol.versions import ApiKey
    from tests.wire import WireClient

    broker = broker_factory("--quota-window-num", "11", "--quota-window-size-seconds", "0.1")
    # batches small next to the quota's burst: a fetch answers at least one whole
    # batch, and one of 1 MB would arrive as a burst a second (as with Kafka)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "batch.size": 65536})
    for _ in range(600):  # 6 MB
        p.produce("quota-read", b"y" * 10_000)
        p.poll(0)
    assert p.flush(30) == 0
    with WireClient(broker.bootstrap) as w:
        w.call(
            ApiKey.ALTER_CLIENT_QUOTAS,
            1,
            {
                "entries": [
                    {
                        "entity": [{"entity_type": "client-id", "entity_name": "reader"}],
                        "ops": [{"key": "consumer_byte_rate", "value": QUOTA, "remove": False}],
                    }
                ],
                "validate_only": False,
            },
        )
    throttles: list[int] = []
    errors: list = []
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "client.id": "reader",
            "group.id": "quota-reader",
            "auto.offset.reset": "earliest",
            "max.partition.fetch.bytes": 65536,
            "fetch.max.bytes": 65536,
            "message.max.bytes": 65536,
            "throttle_cb": lambda event: throttles.append(event.throttle_time),
            "error_cb": lambda err: errors.append(err),
        }
    )
    c.subscribe(["quota-read"])
    got: list[tuple[float, int]] = []
    bad: list = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < 600 and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got.append((time.monotonic(), len(m.value())))
            elif m is not None:
                bad.append(m.error())
    finally:
        c.close()
    assert len(got) == 600
    start = got[0][0]
    after_burst = [(ts, n) for ts, n in got if ts >= start + 1.5]
    rate = sum(n for _, n in after_burst[1:]) / (after_burst[-1][0] - after_burst[0][0])
    print(f"\nconsumer {rate / QUOTA:.3f} x its quota, {len(throttles)} throttles")
    assert 0.9 * QUOTA <= rate <= 1.1 * QUOTA
    assert throttles and max(throttles) > 0  # throttle_time_ms reached the client
    assert not bad and not errors
    assert [n for _, n in got] == [10_000] * 600  # every record once, none lost or repeated


def test_a_fetch_over_the_consumer_quota_is_answered_empty_with_its_throttle_time(
    broker_factory,
) -> None:
    """KIP-219 as Kafka: the fetch that would go over consumer_byte_rate gets no records,
    only throttle_time_ms, and the connection is muted for that time; the same offset
    fetched after the throttle returns the records."""
    from confluent_kafka import Producer

    from protocol.versions import ApiKey
    from tests.wire import WireClient, fetch_body

    quota = 100_000  # a burst of 10 x 0.1 s of quota: 100 kB
    broker = broker_factory("--quota-window-num", "11", "--quota-window-size-seconds", "0.1")
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for _ in range(30):
        p.produce("quota-empty", b"z" * 10_000)
        p.flush(10)  # one batch each: no answer larger than the burst
    assert p.flush(30) == 0
    with WireClient(broker.bootstrap) as w:
        w.call(
            ApiKey.ALTER_CLIENT_QUOTAS,
            1,
            {
                "entries": [
                    {
                        "entity": [{"entity_type": "client-id", "entity_name": None}],
                        "ops": [{"key": "consumer_byte_rate", "value": quota, "remove": False}],
                    }
                ],
                "validate_only": False,
            },
        )

        def throttle_ms(r) -> float:
            t = r.throttle_time
            return t.total_seconds() * 1000 if hasattr(t, "total_seconds") else t

        def fetch(offset: int):
            started = time.monotonic()
            r = w.call(ApiKey.FETCH, 11, fetch_body("quota-empty", {0: offset}, 100, 90_000))
            return r, time.monotonic() - started

        first, _ = fetch(0)
        records = first.responses[0].partitions[0].records
        assert throttle_ms(first) == 0 and len(records) > 80_000
        for _ in range(3):  # 90 kB more than the 10 kB left
            second, _ = fetch(0)
            if throttle_ms(second) > 0:
                break
        assert throttle_ms(second) > 0, "no fetch was throttled"
        assert second.responses == () or not second.responses[0].partitions[0].records
        third, waited = fetch(0)  # muted for the throttle, then within the quota again
        print(f"\nthrottle {throttle_ms(second):.0f} ms, next fetch waited {waited * 1000:.0f} ms")
        assert waited >= 0.8 * throttle_ms(second) / 1000
        assert throttle_ms(third) == 0
        assert third.responses[0].partitions[0].records == records


@pytest.mark.skipif(shutil.which("java") is None, reason="the Java client needs a JDK")
def test_the_java_consumer_over_its_fetch_quota_is_throttled_to_it_without_errors(
    broker_factory, tmp_path
) -> None:
    """The Java client (which also waits out throttle_time_ms itself, KIP-219) reads every
    record intact at its consumer_byte_rate once the first burst is spent."""
    from devkit.javaclient import run_client_check
    from protocol.versions import ApiKey
    from tests.wire import WireClient

    quota = 400_000
    broker = broker_factory("--quota-window-num", "11", "--quota-window-size-seconds", "0.1")
    props = tmp_path / "client.properties"  # fetches small next to the burst, as above
    props.write_text("max.partition.fetch.bytes=65536\nfetch.max.bytes=65536\n")
    with WireClient(broker.bootstrap) as w:
        w.call(
            ApiKey.ALTER_CLIENT_QUOTAS,
            1,
            {
                "entries": [
                    {
                        "entity": [
                            {"entity_type": "client-id", "entity_name": "client-check-consumer"}
                        ],
                        "ops": [{"key": "consumer_byte_rate", "value": quota, "remove": False}],
                    }
                ],
                "validate_only": False,
            },
        )
    result = run_client_check(
        broker.bootstrap, "quota-java", 20_000, partitions=1, timeout=120.0, client_config=props
    )
    assert result["errors"] == []
    assert result["produced"] == result["consumed"] == 20_000
    with WireClient(broker.bootstrap) as w:  # not quotaed: the bytes the consumer read
        total = len(w.fetch("quota-java", 0, 0).records)
    burst = quota * 1.0  # 10 windows of 0.1 s
    # consume_ms also holds the consumer's start, metadata and offsets lookups and its
    # per-record checks (2.7 s for these 3 MB without a quota), so this rate is a lower
    # bound of its fetch rate (0.76-0.91 x on a busy 2-core machine): never over the
    # quota, and not far under it
    rate = (total - burst) / (result["consume_ms"] / 1000)
    took = result["consume_ms"]
    print(f"\njava consumer {rate / quota:.3f} x its quota ({total} bytes in {took} ms)")
    assert 0.6 * quota <= rate <= 1.1 * quota


_ADMIN_LOOP = """
import json, sys, time
from confluent_kafka.admin import AdminClient

bootstrap, client_id, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
throttles, errors = [], []
a = AdminClient({
    "bootstrap.servers": bootstrap,
    "client.id": client_id,
    "throttle_cb": lambda event: throttles.append(event.throttle_time),
    "error_cb": lambda err: errors.append(str(err)),
})
calls, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    a.list_topics(timeout=10)
    calls += 1
a.poll(0)
print(json.dumps({"calls": calls, "throttles": throttles, "errors": errors}))
"""


def test_a_client_over_its_request_percentage_quota_is_slowed_and_others_are_not(
    broker_factory,
) -> None:
    """request_percentage end to end: a confluent-kafka AdminClient calling Metadata in a
    loop with a 0.5% quota (5 ms of the broker's event loop a second) gets throttle_time_ms
    and makes far fewer calls than an unquotaed one running beside it, with no errors."""
    from protocol.versions import ApiKey
    from tests.wire import WireClient

    broker = broker_factory("--quota-window-num", "11", "--quota-window-size-seconds", "0.1")
    with WireClient(broker.bootstrap) as w:
        w.create_topic("quota-busy", 8)
        w.call(
            ApiKey.ALTER_CLIENT_QUOTAS,
            1,
            {
                "entries": [
                    {
                        "entity": [{"entity_type": "client-id", "entity_name": "busy"}],
                        "ops": [{"key": "request_percentage", "value": 0.5, "remove": False}],
                    }
                ],
                "validate_only": False,
            },
        )
    procs = {
        cid: subprocess.Popen(
            [sys.executable, "-c", _ADMIN_LOOP, broker.bootstrap, cid, "6"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for cid in ("busy", "free")
    }
    out = {cid: json.loads(p.communicate(timeout=60)[0]) for cid, p in procs.items()}
    busy, free = out["busy"], out["free"]
    print(f"\nMetadata calls in 6 s: {busy['calls']} at 0.5%, {free['calls']} without a quota")
    assert not busy["errors"] and not free["errors"]
    assert busy["throttles"] and max(busy["throttles"]) > 0 and not any(free["throttles"])
    assert busy["calls"] * 3 < free["calls"]
