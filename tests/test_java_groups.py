"""The official Kafka Java client's consumer groups (classic protocol) against a Strata broker.

Why: acceptance requires that unmodified kafka-clients 4.x consumers using subscribe() share
a 6-partition topic through the classic group protocol: three consumers split it, 30,000 records
are each consumed once in total with commitSync after every poll, a consumer that leaves
(close()) and one that is SIGKILLed are replaced from their last committed offsets with nothing
skipped; the CooperativeStickyAssignor moves only the partitions that must move; and a static
member (group.instance.id) that restarts within its session timeout gets its partitions back
without the others noticing. tests/java/GroupCheck.java runs each scenario in one JVM (plus a
child JVM for the consumer that is killed) and does the checking; see its header for details.
"""

from __future__ import annotations

import shutil

import pytest

from devkit.javaclient import ClientCheckError, run_group_check

MESSAGES = 30_000
SESSION_TIMEOUT_MS = 6000  # the broker's group.min.session.timeout.ms: a killed member expires fast
# A short initial delay, so each scenario's first generation forms quickly.
BROKER_ARGS = ("--group-initial-rebalance-delay-ms", "300")

# A mark, not pytest.skip() in the body, so no broker is started just to be skipped.
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
            broker.bootstrap, scenario, session_timeout_ms=SESSION_TIMEOUT_MS, **kwargs
        )
    except ClientCheckError as e:
        pytest.fail(f"{e}\n--- broker log (tail) ---\n{broker.log()[-6000:]}", pytrace=False)
    assert result["client_version"].startswith("4.")
    for api in ("FIND_COORDINATOR", "JOIN_GROUP", "SYNC_GROUP", "HEARTBEAT", "OFFSET_COMMIT"):
        assert api in result["api_versions"], result["api_versions"]
    return result


def test_failover_leave_and_kill(broker_factory) -> None:
    broker = broker_factory(*BROKER_ARGS)
    r = _run(broker, "failover", messages=MESSAGES)
    assert r["consumed"] == MESSAGES
    assert r["acked"] == MESSAGES
    assert sorted(p for ps in r["assignment_3"].values() for p in ps) == list(range(6))
    assert all(len(ps) == 2 for ps in r["assignment_3"].values())
    assert all(len(ps) == 3 for ps in r["assignment_after_leave"].values())
    # Only what the killed consumer had not committed may come again, and at most that.
    assert set(r["redelivered"]) <= {"c3"}
    assert r["redelivered"].get("c3", 0) <= r["c3_at_kill"]["uncommitted"]
    # c2 resumed each of c3's partitions at the group's committed offset. SIGKILL may land
    # after c3's last OffsetCommit reached the broker but before c3 reported it to the check:
    # then the group's offset is one past what c3 last delivered, and c2 resumes exactly there.
    for part in r["c3_at_kill"]["owned"]:
        t = r["takeovers"][str(part)]
        assert t["to"] == "c2"
        resumes = {t["group_committed"]}
        if t["from_last_delivered"] is not None:
            resumes.add(t["from_last_delivered"] + 1)  # c3's last commit, unreported
        assert t["to_first_offset"] in resumes, t
    # c3's session had to expire first (counted from its last heartbeat or commit, at most a
    # heartbeat interval, 3 s, before the kill); c2 then learns of it by its next heartbeat.
    assert SESSION_TIMEOUT_MS - 3000 <= r["takeover_ms"] <= SESSION_TIMEOUT_MS + 10_000


def test_cooperative_sticky_moves_only_what_must(broker_factory) -> None:
    broker = broker_factory(*BROKER_ARGS)
    r = _run(broker, "cooperative")
    before, after = r["assignment_before"], r["assignment_after"]
    assert all(len(ps) == 3 for ps in before.values())
    assert all(len(ps) == 2 for ps in after.values())
    for member in ("a1", "a2"):
        assert set(after[member]) < set(before[member])
    assert r["redelivered"] == {}


@pytest.mark.parametrize("scenario", ["static", "static-cooperative"])
def test_static_member_restart_keeps_partitions(broker_factory, scenario: str) -> None:
    """Range (the default) and cooperative-sticky: a restarted static member costs no rebalance."""
    broker = broker_factory(*BROKER_ARGS)
    r = _run(broker, scenario)
    gen = r["generation"]
    for member, parts in r["assignment_before"].items():
        restart = r["restarts"][f"static-{member}"]
        assert restart["partitions"] == parts
        assert restart["ms"] < SESSION_TIMEOUT_MS
        # Only its own close; the restarted consumer got the same partitions, same generation.
        assert r["events_during_restart"][member] == [f"revoked {parts}"]
        assert r["events_during_restart"][member + "r"] == [f"gen {gen} assigned {parts}"]
    assert sorted(m["instance_id"] for m in r["describe"]["members"]) == [
        "static-s1",
        "static-s2",
        "static-s3",
    ]
    assert r["redelivered"] == {}
    assert "LEAVE_GROUP" not in r["api_versions"]  # a static member's close() does not leave
