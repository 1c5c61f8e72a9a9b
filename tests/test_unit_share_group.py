"""The share group heartbeat and assignor (broker/groups/share_group.py), without a broker."""

from __future__ import annotations

import uuid

import pytest

from broker.groups.consumer_group import ConsumerSettings, HeartbeatError, HeartbeatRequest
from broker.groups.share_group import ShareGroup, share_assign, share_heartbeat
from protocol.errors import ErrorCode

pytestmark = pytest.mark.unit

T = uuid.UUID(int=7)
TOPICS = {"jobs": (T, 2)}
S = ConsumerSettings(heartbeat_interval_ms=500, session_timeout_ms=6000)


def _hb(member: str, epoch: int, topics: list[str] | None = None) -> HeartbeatRequest:
    return HeartbeatRequest(
        group_id="g",
        member_id=member,
        member_epoch=epoch,
        instance_id=None,
        rack_id=None,
        rebalance_timeout_ms=-1,
        subscribed_topic_names=tuple(topics) if topics is not None else None,
        subscribed_topic_regex=None,
        server_assignor=None,
        owned=None,
    )


def test_with_more_members_than_partitions_every_member_gets_a_shared_partition():
    subs = {m: frozenset({T}) for m in "abcd"}
    a = share_assign(subs, {T: 2})
    assert all(len(a[m][T]) == 1 for m in "abcd")
    assert sorted(p for m in "abcd" for p in a[m][T]) == [0, 0, 1, 1]


def test_with_fewer_members_than_partitions_the_partitions_are_split():
    a = share_assign({"a": frozenset({T}), "b": frozenset({T})}, {T: 5})
    assert a["a"][T] | a["b"][T] == frozenset(range(5))
    assert not a["a"][T] & a["b"][T]


def test_members_join_at_the_group_epoch_and_get_their_assignment_at_their_next_heartbeat():
    g = ShareGroup("g")
    first = share_heartbeat(g, _hb("a", 0, ["jobs"]), TOPICS, 0.0, S, "unused")
    assert first["member_epoch"] == 1
    assert first["assignment"]["topic_partitions"] == [{"topic_id": T, "partitions": [0, 1]}]
    second = share_heartbeat(g, _hb("b", 0, ["jobs"]), TOPICS, 0.0, S, "unused")
    assert second["member_epoch"] == 2
    assert len(second["assignment"]["topic_partitions"][0]["partitions"]) == 1
    # a keeps serving its old assignment at epoch 1 until it heartbeats
    assert g.members["a"].epoch == 1
    moved = share_heartbeat(g, _hb("a", 1), TOPICS, 0.1, S, "unused")
    assert moved["member_epoch"] == 2
    assert len(moved["assignment"]["topic_partitions"][0]["partitions"]) == 1
    quiet = share_heartbeat(g, _hb("a", 2), TOPICS, 0.2, S, "unused")
    assert quiet["assignment"] is None


def test_a_stale_epoch_is_fenced_an_unknown_member_refused_and_a_leave_frees_the_partitions():
    g = ShareGroup("g")
    share_heartbeat(g, _hb("a", 0, ["jobs"]), TOPICS, 0.0, S, "unused")
    share_heartbeat(g, _hb("b", 0, ["jobs"]), TOPICS, 0.0, S, "unused")
    share_heartbeat(g, _hb("a", 1), TOPICS, 0.0, S, "unused")  # a takes its half, epoch 2
    with pytest.raises(HeartbeatError) as e:
        share_heartbeat(g, _hb("b", 7), TOPICS, 0.0, S, "unused")
    assert e.value.code == ErrorCode.fenced_member_epoch
    with pytest.raises(HeartbeatError) as e:
        share_heartbeat(g, _hb("zz", 1), TOPICS, 0.0, S, "unused")
    assert e.value.code == ErrorCode.unknown_member_id
    left = share_heartbeat(g, _hb("b", -1), TOPICS, 0.0, S, "unused")
    assert left["member_epoch"] == -1 and "b" not in g.members
    back = share_heartbeat(g, _hb("a", 2), TOPICS, 0.0, S, "unused")
    assert back["assignment"]["topic_partitions"] == [{"topic_id": T, "partitions": [0, 1]}]


def test_the_share_group_configs_set_its_heartbeat_interval_and_session_timeout():
    g = ShareGroup("g", config_prefix="share")
    g.configs.update({"share.heartbeat.interval.ms": "700", "share.session.timeout.ms": "2000"})
    joined = share_heartbeat(g, _hb("a", 0, ["jobs"]), TOPICS, 0.0, S, "unused")
    assert joined["heartbeat_interval"] == 700
    assert g.expired(1.5, S) == []
    assert [mid for mid, _ in g.expired(2.5, S)] == ["a"]
