"""One consumer group's membership state (broker/groups/group.py) and the subscription
parser, without a coordinator, a loop or a socket."""

from __future__ import annotations

import struct

import pytest

from broker.groups.consumer_protocol import subscription_topics
from broker.groups.group import Group, GroupState, Member

pytestmark = pytest.mark.unit


def subscription(*topics: str, version: int = 1) -> bytes:
    """Consumer-protocol subscription metadata: version, topics, then (ignored) user data."""
    out = struct.pack(">hi", version, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def member(mid: str, *protocols: str, instance: str | None = None, topics=("t",)) -> Member:
    return Member(
        member_id=mid,
        group_instance_id=instance,
        client_id="c",
        client_host="/127.0.0.1",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=30_000 if mid != "slow" else 90_000,
        protocol_type="consumer",
        protocols=[(p, subscription(*topics)) for p in protocols or ("range",)],
    )


def test_a_new_group_is_empty_and_takes_the_first_members_type_and_leadership() -> None:
    g = Group("g")
    assert g.state is GroupState.EMPTY and g.is_empty() and g.generation_id == 0
    assert g.supports("consumer", ["range"])
    assert not g.supports("", ["range"]) and not g.supports("consumer", [])
    g.add(member("a"))
    g.add(member("b"))
    assert g.protocol_type == "consumer" and g.leader_id == "a" and not g.is_empty()


def test_leadership_passes_on_when_the_leader_leaves() -> None:
    g = Group("g")
    for mid in ("a", "b", "c"):
        g.add(member(mid))
    assert g.remove("a") is not None
    assert g.leader_id == "b"
    assert g.remove("zzz") is None
    g.remove("b")
    g.remove("c")
    assert g.leader_id is None and g.is_empty()


def test_static_members_are_tracked_by_instance_id() -> None:
    g = Group("g")
    g.add(member("m1", instance="host-1"))
    assert g.static_members == {"host-1": "m1"}
    # a replacement took the instance id over: removing the old member keeps the new one
    g.add(member("m2", instance="host-1"))
    g.remove("m1")
    assert g.static_members == {"host-1": "m2"}
    g.remove("m2")
    assert g.static_members == {}


def test_joining_needs_the_same_type_and_a_protocol_in_common() -> None:
    g = Group("g")
    g.add(member("a", "range", "roundrobin"))
    g.add(member("b", "roundrobin", "sticky"))
    assert g.candidate_protocols() == {"roundrobin"}
    assert g.supports("consumer", ["roundrobin"])
    assert not g.supports("consumer", ["sticky"])
    assert not g.supports("connect", ["roundrobin"])


def test_each_member_votes_for_its_most_preferred_common_protocol() -> None:
    g = Group("g")
    g.add(member("a", "range", "roundrobin"))
    g.add(member("b", "roundrobin", "range"))
    g.add(member("c", "roundrobin", "range"))
    assert g.candidate_protocols() == {"range", "roundrobin"}
    assert g.select_protocol() == "roundrobin"


def test_all_joined_waits_for_every_member_and_pending_ids() -> None:
    g = Group("g")
    a, b = member("a"), member("b")
    g.add(a)
    g.add(b)
    assert not g.all_joined()
    a.join_waiter = b.join_waiter = object()  # type: ignore[assignment]
    assert g.all_joined()
    g.pending_members["pending-1"] = 0.0  # a KIP-394 id handed out, its join not back yet
    assert not g.all_joined()


def test_rebalance_timeout_is_the_longest_members() -> None:
    g = Group("g")
    assert g.max_rebalance_timeout_ms() == 0
    g.add(member("a"))
    g.add(member("slow"))
    assert g.max_rebalance_timeout_ms() == 90_000


def test_subscribed_topics_union_once_a_protocol_is_chosen() -> None:
    g = Group("g")
    g.add(member("a", topics=("orders", "payments")))
    g.add(member("b", topics=("orders", "audit")))
    assert g.subscribed_topics() is None  # no protocol chosen yet
    g.protocol_name = g.select_protocol()
    assert g.subscribed_topics() == {"orders", "payments", "audit"}
    g.members["b"].protocols = [("range", b"\x00\x01garbage")]
    assert g.subscribed_topics() is None  # one unreadable subscription: unknown


def test_subscribed_topics_are_unknown_for_other_protocol_types() -> None:
    g = Group("g")
    m = member("a")
    m.protocol_type = "connect"
    g.add(m)
    g.protocol_name = "range"
    assert g.subscribed_topics() is None


@pytest.mark.parametrize("version", [0, 1, 3])
def test_subscription_topics_in_every_version(version: int) -> None:
    assert subscription_topics(subscription("a", "bb", version=version)) == {"a", "bb"}
    assert subscription_topics(subscription(version=version)) == set()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01",
        struct.pack(">hi", 1, -1),
        struct.pack(">hi", 1, 1_000_000),
        struct.pack(">hih", 1, 1, 10) + b"abc",
        struct.pack(">hih", 1, 1, -2),
        struct.pack(">hih", 1, 1, 2) + b"\xff\xfe",
    ],
)
def test_subscription_topics_refuses_what_does_not_parse(raw: bytes) -> None:
    assert subscription_topics(raw) is None


def test_a_static_members_new_incarnation_changes_the_assignment_only_by_its_topics() -> None:
    from broker.groups.coordinator import _assignment_inputs_changed

    g = Group("g")
    old = member("a", "cooperative-sticky", instance="i", topics=("t", "u"))
    old.protocols = [("cooperative-sticky", subscription("t", "u") + b"owned partitions, gen 3")]
    g.add(old)
    g.add(member("b", "cooperative-sticky"))
    g.protocol_name = g.select_protocol()
    fresh = member("a2", "cooperative-sticky", instance="i", topics=("u", "t"))
    del g.members["a"]
    g.members["a2"] = fresh
    assert not _assignment_inputs_changed(g, old, fresh)
    other_topics = member("a3", "cooperative-sticky", instance="i", topics=("t", "v"))
    assert _assignment_inputs_changed(g, old, other_topics)
