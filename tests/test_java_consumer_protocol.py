"""The official Kafka Java client 4.x with group.protocol=consumer (KIP-848) against Strata.

Why: with the consumer protocol the broker computes assignments and rebalances are incremental.
tests/java/GroupCheck.java's scenarios run with --group-protocol consumer: three consumers split a
12-partition topic 4/4/4 and consume 100,000 records with commitSync after every poll, each exactly
once except what the SIGKILLed member had not committed; one leaves (the other two take its share)
and the killed one is removed after the group's session timeout; in the cooperative scenario a third
member joins two and each of them gives up exactly the partitions that move, keeping the rest
(no revoke-everything); a static member restarts without the others noticing.
"""

from __future__ import annotations

import shutil

import pytest

from devkit.javaclient import ClientCheckError, run_group_check

SESSION_TIMEOUT_MS = 6000
BROKER_ARGS = (
    "--group-consumer-session-timeout-ms",
    str(SESSION_TIMEOUT_MS),
    "--group-consumer-heartbeat-interval-ms",
    "1000",
)

pytestmark = [
    pytest.mark.skipif(
        shutil.which("java") is None,
        reason="`java` is not on PATH: the Java group check needs a JDK 17+",
    ),
    pytest.mark.slow,
]


def _run(broker, scenario: str, **kwargs) -> dict:
    try:
        result = run_group_check(
            broker.bootstrap,
            scenario,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            group_protocol="consumer",
            **kwargs,
        )
    except ClientCheckError as e:
        pytest.fail(f"{e}\n--- broker log (tail) ---\n{broker.log()[-6000:]}", pytrace=False)
    assert result["client_version"].startswith("4.")
    assert "CONSUMER_GROUP_HEARTBEAT" in result["api_versions"], result["api_versions"]
    assert "JOIN_GROUP" not in result["api_versions"], result["api_versions"]
    return result


def test_three_java_consumers_split_twelve_partitions_and_survive_a_leave_and_a_kill(
    broker_factory,
) -> None:
    broker = broker_factory(*BROKER_ARGS)
    messages = 100_000
    r = _run(broker, "failover", messages=messages, partitions=12, timeout=150.0)
    assert r["consumed"] == messages and r["acked"] == messages
    assert sorted(p for ps in r["assignment_3"].values() for p in ps) == list(range(12))
    assert all(len(ps) == 4 for ps in r["assignment_3"].values())
    assert all(len(ps) == 6 for ps in r["assignment_after_leave"].values())
    assert set(r["redelivered"]) <= {"c3"}
    assert r["redelivered"].get("c3", 0) <= r["c3_at_kill"]["uncommitted"]
    # the killed member's partitions moved only once its session timed out
    assert SESSION_TIMEOUT_MS - 3000 <= r["takeover_ms"] <= SESSION_TIMEOUT_MS + 10_000


def test_a_joining_java_consumer_takes_only_what_must_move(broker_factory) -> None:
    broker = broker_factory(*BROKER_ARGS)
    r = _run(broker, "cooperative")
    before, after = r["assignment_before"], r["assignment_after"]
    assert all(len(ps) == 3 for ps in before.values())
    assert all(len(ps) == 2 for ps in after.values())
    for member in ("a1", "a2"):
        assert set(after[member]) < set(before[member])
    assert r["redelivered"] == {}


def test_a_static_java_member_restarts_without_a_rebalance(broker_factory) -> None:
    broker = broker_factory(*BROKER_ARGS)
    r = _run(broker, "static")
    gen = r["generation"]
    for member, parts in r["assignment_before"].items():
        restart = r["restarts"][f"static-{member}"]
        assert restart["partitions"] == parts
        assert restart["ms"] < SESSION_TIMEOUT_MS
        assert r["events_during_restart"][member] == [f"revoked {parts}"]
        assert r["events_during_restart"][member + "r"] == [f"gen {gen} assigned {parts}"]
    assert r["redelivered"] == {}
