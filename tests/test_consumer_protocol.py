"""Acceptance: KIP-848 consumer groups (`group.protocol=consumer`) with librdkafka and raw
requests; the Java client's runs are in tests/test_java_consumer_protocol.py.

- three consumers split a 12-partition topic; a fourth joins and one leaves, each move
  incremental (no member gives up a partition it keeps); 100,000 records each consumed
  exactly once with synchronous commits.
- a broker restart keeps the group (members carry on at their epochs, no revocation) and
  its offsets.
- a classic group and a consumer group coexist on one broker; ListGroups and
  DescribeGroups tell their types.
- a regex subscription picks up a topic created while the group runs.
- bad heartbeats (stale epoch, unknown member, invalid regex) and a classic JoinGroup to a
  consumer group get Kafka's errors and leave the group usable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devkit.broker import BrokerProcess
from protocol.errors import ErrorCode
from tests.test_groups import create_topic, produce
from tests.wire import WireClient

SESSION_MS = 6000
BROKER_ARGS = (
    "--group-consumer-session-timeout-ms",
    str(SESSION_MS),
    "--group-consumer-heartbeat-interval-ms",
    "500",
    "--group-initial-rebalance-delay-ms",
    "300",
)
HEARTBEAT = (68, 1)
JOIN_GROUP = (11, 5)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = BrokerProcess(tmp_path_factory.mktemp("kip848") / "data", None, *BROKER_ARGS).start()
    yield b
    b.stop()


class Member:
    """A librdkafka consumer with group.protocol=consumer, polled by the test: it records
    every delivery and every assignment change, and commits each batch synchronously."""

    def __init__(self, name: str, bootstrap: str, group: str, topics: list[str], **conf) -> None:
        from confluent_kafka import Consumer

        self.name = name
        self.owned: set[tuple[str, int]] = set()
        self.events: list[tuple[str, frozenset[tuple[str, int]]]] = []
        self.delivered: list[tuple[str, int, int]] = []  # topic, partition, offset
        self.commit_errors: list[str] = []
        self.closed = False
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "group.protocol": "consumer",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "topic.metadata.refresh.interval.ms": 1000,
                **conf,
            }
        )
        self.consumer.subscribe(
            topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost
        )

    def _assign(self, _c, parts) -> None:
        got = frozenset((p.topic, p.partition) for p in parts)
        self.events.append(("assign", got))
        self.owned |= got

    def _revoke(self, _c, parts) -> None:
        gone = frozenset((p.topic, p.partition) for p in parts)
        self.events.append(("revoke", gone))
        self.owned -= gone

    def _lost(self, _c, parts) -> None:
        gone = frozenset((p.topic, p.partition) for p in parts)
        self.events.append(("lost", gone))
        self.owned -= gone

    def poll(self, timeout: float = 0.02) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        msgs = [m for m in self.consumer.consume(500, timeout) if m.error() is None]
        if not msgs:
            return
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            self.delivered.append((m.topic(), m.partition(), m.offset()))
            last[(m.topic(), m.partition())] = m.offset()
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()],
                asynchronous=False,
            )
        except KafkaException as e:
            self.commit_errors.append(str(e))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_until(members: list[Member], pred: Callable[[], object], timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            if not m.closed:
                m.poll()
        if pred():
            return
    state = {m.name: sorted(p for _, p in m.owned) for m in members if not m.closed}
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; owned {state}")


def _parts(m: Member) -> set[int]:
    return {p for _, p in m.owned}


def _consumed(members: list[Member]) -> list[tuple[str, int, int]]:
    return [d for m in members for d in m.delivered]


def test_consumers_split_twelve_partitions_and_rebalance_incrementally(
    broker: BrokerProcess,
) -> None:
    topic, group = _name("kip848"), _name("g848")
    create_topic(broker.bootstrap, topic, 12)
    total = 100_000
    produced = produce(broker.bootstrap, topic, total, "r", partitions=12)
    members = [Member(f"m{i}", broker.bootstrap, group, [topic]) for i in range(3)]
    try:
        poll_until(members, lambda: all(len(m.owned) == 4 for m in members), 30, "a 4/4/4 split")
        assert set().union(*(_parts(m) for m in members)) == set(range(12))
        before = {m.name: _parts(m) for m in members}
        seen = {m.name: len(m.events) for m in members}

        members.append(Member("m3", broker.bootstrap, group, [topic]))
        poll_until(members, lambda: all(len(m.owned) == 3 for m in members), 30, "a 3/3/3/3 split")
        for m in members[:3]:
            after = _parts(m)
            assert after < before[m.name], (m.name, before[m.name], after)
            for kind, parts in m.events[seen[m.name] :]:
                # incremental: only what moves is revoked; nothing is taken away and given back
                # (librdkafka may report an empty assignment change)
                assert kind == "revoke" or not parts, (m.name, m.events[seen[m.name] :])
                assert not {p for _, p in parts} & after, (m.name, parts, after)

        before = {m.name: _parts(m) for m in members}
        seen = {m.name: len(m.events) for m in members}
        members[0].close()
        alive = members[1:]
        poll_until(alive, lambda: all(len(m.owned) == 4 for m in alive), 30, "a 4/4/4 split")
        for m in alive:
            assert _parts(m) > before[m.name]
            changes = m.events[seen[m.name] :]
            assert all(kind == "assign" or not parts for kind, parts in changes), changes

        poll_until(
            alive, lambda: len(_consumed(members)) >= total, 90, f"all {total} records consumed"
        )
        for m in alive:  # a little longer: anything delivered twice would show up now
            m.poll(0.2)
        consumed = _consumed(members)
        assert len(consumed) == total, f"{len(consumed) - total} records delivered twice"
        assert {(p, o) for _, p, o in consumed} == set(produced)
        assert all(not m.commit_errors for m in members), [m.commit_errors for m in members]
    finally:
        for m in members:
            m.close()


def test_a_restarted_coordinator_keeps_the_group_and_its_offsets(
    broker_factory, tmp_path: Path
) -> None:
    b = broker_factory(*BROKER_ARGS, data_dir=tmp_path / "data")
    topic, group = _name("kip848r"), _name("g848r")
    create_topic(b.bootstrap, topic, 4)
    first = produce(b.bootstrap, topic, 2000, "a", partitions=4)
    members = [Member(f"m{i}", b.bootstrap, group, [topic]) for i in range(2)]
    try:
        poll_until(
            members,
            lambda: len(_consumed(members)) >= len(first) and all(m.owned for m in members),
            30,
            "the first records",
        )
        owned = {m.name: set(m.owned) for m in members}
        seen = {m.name: len(m.events) for m in members}
        port = int(b.bootstrap.rsplit(":", 1)[1])
        b.stop()
        b2 = broker_factory(*BROKER_ARGS, data_dir=tmp_path / "data", port=port)
        second = produce(b2.bootstrap, topic, 2000, "b", partitions=4)
        total = len(first) + len(second)
        poll_until(members, lambda: len(_consumed(members)) >= total, 60, "the later records")
        for m in members:
            m.poll(0.3)
        log = b2.log()
        assert f"consumer group {group}: restored at epoch" in log, log[-3000:]
        consumed = _consumed(members)
        assert len(consumed) == total, "records were delivered again after the restart"
        assert {(p, o) for _, p, o in consumed} == set(first) | set(second)
        for m in members:  # the members carried on: nothing revoked, lost or reassigned
            assert m.owned == owned[m.name]
            assert m.events[seen[m.name] :] == [], (m.name, m.events[seen[m.name] :])
    finally:
        for m in members:
            m.close()


def test_a_classic_group_and_a_consumer_group_coexist(broker: BrokerProcess) -> None:
    from confluent_kafka import ConsumerGroupType
    from confluent_kafka.admin import AdminClient

    topic = _name("kip848c")
    create_topic(broker.bootstrap, topic, 3)
    produced = produce(broker.bootstrap, topic, 600, "c", partitions=3)
    new_group, classic_group = _name("g848-new"), _name("g848-classic")
    new = Member("new", broker.bootstrap, new_group, [topic])
    classic = Member(
        "classic",
        broker.bootstrap,
        classic_group,
        [topic],
        **{
            "group.protocol": "classic",
            "session.timeout.ms": SESSION_MS,
        },
    )
    try:
        poll_until(
            [new, classic],
            lambda: len(new.delivered) >= 600 and len(classic.delivered) >= 600,
            30,
            "both groups to read everything",
        )
        for m in (new, classic):
            assert {(p, o) for _, p, o in m.delivered} == set(produced)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        listed = admin.list_consumer_groups().result(15)
        types = {g.group_id: g.type for g in listed.valid}
        assert types[new_group] == ConsumerGroupType.CONSUMER
        assert types[classic_group] == ConsumerGroupType.CLASSIC
        only_new = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(15)
        assert new_group in {g.group_id for g in only_new.valid}
        assert classic_group not in {g.group_id for g in only_new.valid}
        described = admin.describe_consumer_groups([new_group, classic_group])
        d_new = described[new_group].result(15)
        d_classic = described[classic_group].result(15)
        assert d_new.type == ConsumerGroupType.CONSUMER
        assert d_classic.type == ConsumerGroupType.CLASSIC
        parts = {tp.partition for m in d_new.members for tp in m.assignment.topic_partitions}
        assert parts == {0, 1, 2}
        assert str(d_new.state).endswith("STABLE")
    finally:
        new.close()
        classic.close()


def test_a_regex_subscription_picks_up_a_new_matching_topic(broker: BrokerProcess) -> None:
    prefix = _name("rx848")
    first, later = f"{prefix}-a", f"{prefix}-b"
    create_topic(broker.bootstrap, first, 2)
    create_topic(broker.bootstrap, f"other-{prefix}", 2)  # does not match
    a = produce(broker.bootstrap, first, 200, "a", partitions=2)
    produce(broker.bootstrap, f"other-{prefix}", 50, "o", partitions=2)
    group = _name("g848-rx")
    m = Member("rx", broker.bootstrap, group, [f"^{prefix}-.*"])
    try:
        poll_until([m], lambda: len(m.delivered) >= len(a), 30, f"the records of {first}")
        create_topic(broker.bootstrap, later, 2)
        b = produce(broker.bootstrap, later, 200, "b", partitions=2)
        poll_until(
            [m],
            lambda: len(m.delivered) >= len(a) + len(b),
            45,
            f"the running group to pick up {later}",
        )
        assert {t for t, _, _ in m.delivered} == {first, later}
        with WireClient(broker.bootstrap) as c:  # the broker resolves the regex (RE2)
            d = c.call(69, 0, {"group_ids": [group], "include_authorized_operations": False})
        (member,) = d.groups[0].members
        # librdkafka sends the pattern as "(^prefix-.*)", and no topic names
        assert member.subscribed_topic_regex.strip("()") == f"^{prefix}-.*"
        assert list(member.subscribed_topic_names) == []
        assert {(t, p) for t, p in m.owned} == {(first, 0), (first, 1), (later, 0), (later, 1)}
    finally:
        m.close()


def _heartbeat(group: str, member: str, epoch: int, **fields) -> dict:
    body = {
        "group_id": group,
        "member_id": member,
        "member_epoch": epoch,
        "instance_id": None,
        "rack_id": None,
        "rebalance_timeout": -1,
        "subscribed_topic_names": None,
        "subscribed_topic_regex": None,
        "server_assignor": None,
        "topic_partitions": None,
    }
    body.update(fields)
    return body


def test_bad_heartbeats_get_kafkas_errors_and_the_group_stays_usable(
    broker: BrokerProcess,
) -> None:
    topic, group = _name("kip848e"), _name("g848e")
    create_topic(broker.bootstrap, topic, 2)
    member = uuid.uuid4().hex
    with WireClient(broker.bootstrap) as c:
        joined = c.call(
            *HEARTBEAT,
            _heartbeat(
                group,
                member,
                0,
                rebalance_timeout=30000,
                subscribed_topic_names=[topic],
                topic_partitions=[],
            ),
        )
        assert joined.error_code == ErrorCode.none and joined.member_epoch >= 1
        epoch = joined.member_epoch
        assert sorted(joined.assignment.topic_partitions[0].partitions) == [0, 1]

        stale = c.call(*HEARTBEAT, _heartbeat(group, member, epoch + 5))
        assert stale.error_code == ErrorCode.fenced_member_epoch
        unknown = c.call(*HEARTBEAT, _heartbeat(group, uuid.uuid4().hex, epoch))
        assert unknown.error_code == ErrorCode.unknown_member_id
        bad_regex = c.call(
            *HEARTBEAT,
            _heartbeat(
                group,
                uuid.uuid4().hex,
                0,
                rebalance_timeout=30000,
                subscribed_topic_regex="topic-(unclosed",
                topic_partitions=[],
            ),
        )
        assert bad_regex.error_code == ErrorCode.invalid_regular_expression
        join = c.call(
            *JOIN_GROUP,
            {
                "group_id": group,
                "session_timeout": 10000,
                "rebalance_timeout": 10000,
                "member_id": "",
                "group_instance_id": None,
                "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x00"}],
            },
        )
        assert join.error_code == ErrorCode.inconsistent_group_protocol

        # the group is untouched: the member carries on at its epoch with its partitions
        ok = c.call(
            *HEARTBEAT,
            _heartbeat(
                group,
                member,
                epoch,
                topic_partitions=[
                    {
                        "topic_id": joined.assignment.topic_partitions[0].topic_id,
                        "partitions": [0, 1],
                    }
                ],
            ),
        )
        assert ok.error_code == ErrorCode.none and ok.member_epoch == epoch
        described = c.call(69, 0, {"group_ids": [group], "include_authorized_operations": False})
        (g,) = described.groups
        assert g.error_code == ErrorCode.none and g.group_state == "Stable"
        assert [m.member_id for m in g.members] == [member]
        left = c.call(*HEARTBEAT, _heartbeat(group, member, -1))
        assert left.error_code == ErrorCode.none and left.member_epoch == -1


def test_group_configs_set_the_heartbeat_interval_and_session_timeout(
    broker: BrokerProcess,
) -> None:
    """IncrementalAlterConfigs / DescribeConfigs on a GROUP resource (type 32): the group's
    consumer.heartbeat.interval.ms is what its members are told, and a member silent for the
    group's consumer.session.timeout.ms (shorter than the broker's) is removed."""
    topic, group = _name("kip848cfg"), _name("g848cfg")
    create_topic(broker.bootstrap, topic, 1)
    alter = {
        "resources": [
            {
                "resource_type": 32,
                "resource_name": group,
                "configs": [
                    {
                        "name": "consumer.heartbeat.interval.ms",
                        "config_operation": 0,
                        "value": "700",
                    },
                    {"name": "consumer.session.timeout.ms", "config_operation": 0, "value": "2000"},
                ],
            }
        ],
        "validate_only": False,
    }
    with WireClient(broker.bootstrap) as c:
        (r,) = c.call(44, 1, alter).responses
        assert r.error_code == ErrorCode.none, r
        bad = dict(
            alter["resources"][0],
            configs=[{"name": "consumer.no.such", "config_operation": 0, "value": "1"}],
        )
        (r,) = c.call(44, 1, {"resources": [bad], "validate_only": False}).responses
        assert r.error_code == ErrorCode.invalid_config
        described = c.call(
            32,
            4,
            {
                "resources": [
                    {"resource_type": 32, "resource_name": group, "configuration_keys": None}
                ],
                "include_synonyms": False,
                "include_documentation": False,
            },
        )
        values = {e.name: e.value for e in described.results[0].configs}
        # every group config is listed, as Kafka does (the share group ones at their defaults)
        assert {k: v for k, v in values.items() if k.startswith("consumer.")} == {
            "consumer.heartbeat.interval.ms": "700",
            "consumer.session.timeout.ms": "2000",
        }
        assert values["share.auto.offset.reset"] == "latest"
        member = uuid.uuid4().hex
        joined = c.call(
            *HEARTBEAT,
            _heartbeat(
                group,
                member,
                0,
                rebalance_timeout=30000,
                subscribed_topic_names=[topic],
                topic_partitions=[],
            ),
        )
        assert joined.error_code == ErrorCode.none
        assert joined.heartbeat_interval.total_seconds() == 0.7
        time.sleep(3.0)  # silent past the group's 2 s session, within the broker's 6 s
        d = c.call(69, 0, {"group_ids": [group], "include_authorized_operations": False})
        assert list(d.groups[0].members) == [], "the member outlived the group's session timeout"
        gone = c.call(*HEARTBEAT, _heartbeat(group, member, joined.member_epoch))
        assert gone.error_code == ErrorCode.unknown_member_id


def test_an_empty_group_converts_between_the_protocols_keeping_its_offsets(
    broker: BrokerProcess,
) -> None:
    """Classic -> consumer -> classic for one group id, each time once the group is empty:
    each incarnation resumes at the offsets the previous one committed."""
    topic, group = _name("kip848conv"), _name("g848conv")
    create_topic(broker.bootstrap, topic, 2)
    produced = produce(broker.bootstrap, topic, 300, "a", partitions=2)
    classic_conf = {"group.protocol": "classic", "session.timeout.ms": SESSION_MS}
    seen: list[tuple[int, int]] = []
    for round_, (protocol, conf) in enumerate(
        [("classic", classic_conf), ("consumer", {}), ("classic", classic_conf)]
    ):
        if round_:
            produced |= produce(broker.bootstrap, topic, 300, f"r{round_}", partitions=2)
        m = Member(protocol, broker.bootstrap, group, [topic], **conf)
        new = len(produced) - len(seen)
        try:
            poll_until(
                [m],
                lambda m=m, new=new: len(m.delivered) >= new,
                30,
                f"the {protocol} incarnation to read what is new",
            )
            m.poll(0.3)
            assert not m.commit_errors, m.commit_errors
        finally:
            m.close()
        seen += [(p, o) for _, p, o in m.delivered]
    assert sorted(seen) == sorted(produced), "an incarnation re-read or skipped records"
    log = broker.log()
    assert f"group {group}: empty classic group converted to the consumer protocol" in log
    assert f"group {group}: empty consumer group converted to classic" in log
