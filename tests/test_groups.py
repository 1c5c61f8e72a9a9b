"""Acceptance: consumer groups (classic protocol) with real clients and raw requests.

- confluent-kafka, kafka-python and aiokafka: three consumers share a 6-partition topic,
  commit after every batch; one leaves, one is SIGKILLed (its session times out), the
  survivor takes over from the committed offsets: nothing skipped, and the only records
  seen twice are the ones the killed consumer processed after its last commit.
- librdkafka static membership (a restarted member gets its partitions back, nobody
  else rebalances) and cooperative-sticky (a new member takes only what has to move).
- committed offsets, their metadata and leader epochs survive a broker restart.
- AdminClient list / describe / delete groups, group offsets, kcat as a group member.
- bad JoinGroup / SyncGroup / Heartbeat / OffsetCommit requests get Kafka's error codes
  and leave the group usable.
- edge cases Strata once got wrong (assertion messages starting with "BROKER BUG"
  explain each): parked SyncGroups answered when their member goes, emptied groups
  keeping their protocol type, a deleted topic's committed offsets, shutdown with a
  parked JoinGroup, a refused commit creating a group.
- auto.offset.reset earliest / latest / none for a group without commits.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devkit.broker import BrokerProcess

SESSION_MS = 6000  # the broker's default group.min.session.timeout.ms
INITIAL_DELAY_MS = 500


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the module, with a short initial rebalance delay."""
    b = BrokerProcess(
        tmp_path_factory.mktemp("groups") / "data",
        None,
        "--group-initial-rebalance-delay-ms",
        str(INITIAL_DELAY_MS),
    ).start()
    yield b
    b.stop()


def full_log(broker: BrokerProcess) -> str:
    """The whole broker log (BrokerProcess.log() keeps only its tail)."""
    return broker.log_path.read_text(errors="replace")


def group_log(broker: BrokerProcess, group: str) -> str:
    """The broker's log lines about one group, for assertion messages."""
    lines = [line for line in full_log(broker).splitlines() if f"group {group}" in line]
    return "\n".join(lines[-40:])


def rebalances(broker: BrokerProcess, group: str) -> int:
    return full_log(broker).count(f"group {group}: preparing rebalance")


def wait_until(pred: Callable[[], object], timeout: float, what: str, step=0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)


def produce(
    bootstrap: str, topic: str, n: int, tag: str, partitions: int | None = None
) -> dict[tuple[int, int], str]:
    """n keyed messages (round-robin over `partitions` if given, else by key); returns
    {(partition, offset): value} of the acknowledged ones."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked: dict[tuple[int, int], str] = {}
    errors: list[object] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = msg.value().decode()

    for i in range(n):
        while True:
            try:
                producer.produce(
                    topic,
                    f"{tag}-{i}".encode(),
                    f"k{i}".encode(),
                    on_delivery=on_delivery,
                    **({"partition": i % partitions} if partitions else {}),
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0, "producer could not deliver everything within 60s"
    assert not errors, errors[:5]
    assert len(acked) == n
    return acked


# --- consumers in subprocesses, one per member -------------------------------------------

# Each child is one group member. It prints what it does, line by line and flushed, so
# that what the parent reads is exactly what happened even if the child is SIGKILLed:
#   READY                     subscribed
#   A <p,p,...>               its assignment after a change
#   R <batch> <p:o:value>...  a batch it processed
#   C <batch> 1|0 [error]     the synchronous commit of that batch succeeded / failed
#   H <batch>                 after consuming hold_after records: it stops before committing
#   CLOSED                    after "stop" on stdin: last batch committed, consumer closed
CHILD = r"""
import asyncio, sys, threading, time

lib, bootstrap, topic, group, session_ms, hold_after = sys.argv[1:7]
session_ms, hold_after = int(session_ms), int(hold_after)
stop = threading.Event()
assigned = set()
state = {"n": 0, "batch": 0}


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def watch_stdin():
    for line in sys.stdin:
        if line.strip() == "stop":
            stop.set()


threading.Thread(target=watch_stdin, daemon=True).start()


def assign(parts):
    assigned.update(parts)
    out("A " + ",".join(map(str, sorted(assigned))))


def revoke(parts):
    assigned.difference_update(parts)
    out("A " + ",".join(map(str, sorted(assigned))))


def processed(recs):
    # "process" a batch: report it; returns (batch id, last offset per partition, hold)
    state["batch"] += 1
    state["n"] += len(recs)
    out("R %d %s" % (state["batch"], " ".join("%d:%d:%s" % r for r in recs)))
    last = {}
    for p, o, _ in recs:
        last[p] = max(o, last.get(p, -1))
    hold = hold_after > 0 and state["n"] >= hold_after
    if hold:
        out("H %d" % state["batch"])
    return state["batch"], last, hold


def confluent():
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": 500,
    })
    c.subscribe(
        [topic],
        on_assign=lambda c, ps: assign(p.partition for p in ps),
        on_revoke=lambda c, ps: revoke(p.partition for p in ps),
    )
    out("READY")
    while not stop.is_set():
        recs = []
        for m in c.consume(500, 0.2):
            if m.error():
                out("E %s" % m.error())
            else:
                recs.append((m.partition(), m.offset(), m.value().decode()))
        if not recs:
            continue
        batch, last, hold = processed(recs)
        if hold:
            time.sleep(3600)
        try:
            c.commit(
                offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()],
                asynchronous=False,
            )
            out("C %d 1" % batch)
        except Exception as e:
            out("C %d 0 %r" % (batch, e))
    c.close()
    out("CLOSED")


def kafka_python():
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            revoke(tp.partition for tp in revoked)

        def on_partitions_assigned(self, assigned):
            assign(tp.partition for tp in assigned)

    c = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=session_ms,
        heartbeat_interval_ms=500, max_poll_records=500,
    )
    c.subscribe([topic], listener=Listener())
    out("READY")
    while not stop.is_set():
        polled = c.poll(200)
        recs = [(m.partition, m.offset, m.value.decode()) for ms in polled.values() for m in ms]
        if not recs:
            continue
        batch, last, hold = processed(recs)
        if hold:
            time.sleep(3600)
        try:
            c.commit({
                TopicPartition(topic, p): OffsetAndMetadata(o + 1, "", -1)
                for p, o in last.items()
            })
            out("C %d 1" % batch)
        except Exception as e:
            out("C %d 0 %r" % (batch, e))
    c.close()
    out("CLOSED")


async def aiokafka():
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            revoke(tp.partition for tp in revoked)

        def on_partitions_assigned(self, assigned):
            assign(tp.partition for tp in assigned)

    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=session_ms,
        heartbeat_interval_ms=500,
    )
    await c.start()
    try:
        c.subscribe([topic], listener=Listener())
        out("READY")
        while not stop.is_set():
            polled = await c.getmany(timeout_ms=200, max_records=500)
            recs = [
                (m.partition, m.offset, m.value.decode()) for ms in polled.values() for m in ms
            ]
            if not recs:
                continue
            batch, last, hold = processed(recs)
            if hold:
                await asyncio.sleep(3600)
            try:
                await c.commit({TopicPartition(topic, p): o + 1 for p, o in last.items()})
                out("C %d 1" % batch)
            except Exception as e:
                out("C %d 0 %r" % (batch, e))
    finally:
        await c.stop()
    out("CLOSED")


if lib == "confluent":
    confluent()
elif lib == "kafka-python":
    kafka_python()
else:
    asyncio.run(aiokafka())
"""


@dataclass
class Consumption:
    member: str
    batch: int
    partition: int
    offset: int
    value: str


@dataclass
class GroupRun:
    """What every member of a group reported: batches, commits, assignments."""

    consumed: list[Consumption] = field(default_factory=list)
    commits: dict[tuple[str, int], bool] = field(default_factory=dict)
    commit_errors: list[str] = field(default_factory=list)
    assignment: dict[str, set[int]] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, member: str) -> int:
        with self.lock:
            return sum(1 for c in self.consumed if c.member == member)

    def committed_keys(self) -> set[tuple[int, int]]:
        with self.lock:
            return {
                (c.partition, c.offset)
                for c in self.consumed
                if self.commits.get((c.member, c.batch))
            }


class Member:
    """One consumer subprocess of a given client library."""

    def __init__(
        self,
        run: GroupRun,
        name: str,
        lib: str,
        bootstrap: str,
        topic: str,
        group: str,
        log_dir: Path,
        hold_after: int = 0,
    ) -> None:
        self.run, self.name = run, name
        self.stderr_path = log_dir / f"{name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, lib, bootstrap, topic, group]
                + [str(SESSION_MS), str(hold_after)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.ready = threading.Event()
        self.closed = threading.Event()
        run.assignment[name] = set()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        run = self.run
        for raw in self.proc.stdout:
            kind, _, rest = raw.decode().rstrip("\n").partition(" ")
            with run.lock:
                if kind == "READY":
                    self.ready.set()
                elif kind == "A":
                    run.assignment[self.name] = {int(p) for p in rest.split(",") if p}
                    run.events.append(f"{time.monotonic():.2f} {self.name} assigned {rest}")
                elif kind == "R":
                    batch, _, recs = rest.partition(" ")
                    for rec in recs.split(" "):
                        p, o, v = rec.split(":", 2)
                        run.consumed.append(Consumption(self.name, int(batch), int(p), int(o), v))
                elif kind == "C":
                    batch, ok, *err = rest.split(" ", 2)
                    run.commits[(self.name, int(batch))] = ok == "1"
                    if ok != "1":
                        run.commit_errors.append(f"{self.name} batch {batch}: {err}")
                elif kind == "H":
                    run.held[self.name] = int(rest)
                elif kind == "CLOSED":
                    self.closed.set()
                else:
                    run.events.append(f"{self.name}: {raw!r}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 20.0) -> None:
        """Commit, close (LeaveGroup), exit."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        if not self.closed.wait(timeout):
            raise AssertionError(f"{self.name} did not close within {timeout}s:\n{self.stderr()}")
        self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def cleanup(self) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def check_at_least_once(
    produced: dict[tuple[int, int], str], run: GroupRun, may_repeat: set[str]
) -> None:
    """Nothing skipped; a record is seen twice only if its first reader never committed it.

    Every produced record must have been processed exactly once by a member whose
    commit of that batch succeeded. Processing without a successful commit is only
    allowed for members in `may_repeat` (the SIGKILLed one: everything after its last
    commit comes again to whoever takes its partitions).
    """
    with run.lock:
        consumed = list(run.consumed)
        commits = dict(run.commits)
    wrong = [c for c in consumed if produced.get((c.partition, c.offset)) != c.value]
    assert not wrong, f"records that were not produced or differ: {wrong[:5]}"
    per_member: dict[tuple[str, int], list[int]] = defaultdict(list)
    for c in consumed:
        per_member[(c.member, c.partition)].append(c.offset)
    for (member, p), offsets in per_member.items():
        assert offsets == sorted(set(offsets)), (
            f"{member} read partition {p} backwards or twice: offsets went "
            f"{[b for a, b in zip(offsets, offsets[1:], strict=False) if b <= a][:5]}..."
        )
    committed: dict[tuple[int, int], list[str]] = defaultdict(list)
    uncommitted: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for c in consumed:
        if commits.get((c.member, c.batch)):
            committed[(c.partition, c.offset)].append(c.member)
        else:
            uncommitted[c.member].append((c.partition, c.offset))
    seen = {(c.partition, c.offset) for c in consumed}
    never = sorted(k for k in produced if k not in seen)
    assert not never, f"{len(never)} records were never consumed (skipped), e.g. {never[:10]}"
    lost = sorted(k for k in produced if k not in committed)
    assert not lost, (
        f"{len(lost)} records were processed only by members that never committed them and "
        f"were not redelivered to the survivor, e.g. {lost[:10]}"
    )
    twice = {k: v for k, v in committed.items() if len(v) > 1}
    assert not twice, (
        f"{len(twice)} records were processed and committed more than once (a member did "
        f"not start from the committed offset), e.g. {list(twice.items())[:5]}"
    )
    unexpected = {m: v[:5] for m, v in uncommitted.items() if m not in may_repeat}
    assert not unexpected, (
        f"members other than {may_repeat} processed records they could not commit "
        f"(commit failures: {run.commit_errors[:5]}): {unexpected}"
    )


CLIENT_LIBS = ["confluent", "kafka-python", "aiokafka"]


@pytest.mark.parametrize("lib", CLIENT_LIBS)
def test_three_consumers_share_commit_and_take_over(
    group_broker: BrokerProcess, tmp_path: Path, lib: str
) -> None:
    """30,000 records, 3 members; one leaves, one is SIGKILLed; the survivor finishes."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    bootstrap = group_broker.bootstrap
    topic, group = _name(f"share-{lib}"), _name(f"g-{lib}")
    create_topic(bootstrap, topic, 6)
    run = GroupRun()

    def member(name: str, hold_after: int = 0) -> Member:
        return Member(run, name, lib, bootstrap, topic, group, tmp_path, hold_after)

    members: list[Member] = []
    try:
        # "victim" stops before committing once it has processed 1,000 records, and is
        # then SIGKILLed; "leaver" closes (LeaveGroup); "survivor" ends up with everything.
        members = [member("victim", hold_after=1000), member("leaver"), member("survivor")]
        for m in members:
            assert m.ready.wait(30), f"{m.name} did not start:\n{m.stderr()}"
        victim, leaver, survivor = members

        def split() -> bool:
            with run.lock:
                sets = list(run.assignment.values())
            return all(len(s) == 2 for s in sets) and set().union(*sets) == set(range(6))

        wait_until(
            split, 30, f"3 members with 2 partitions each:\n{group_log(group_broker, group)}"
        )

        produced = produce(bootstrap, topic, 15_000, "before")
        wait_until(
            lambda: "victim" in run.held and run.count("leaver") >= 1000,
            30,
            f"all three members consuming ({run.assignment}, held {run.held}, "
            f"{len(run.consumed)} consumed)",
        )
        held_batch = run.held["victim"]
        with run.lock:
            in_flight = [c for c in run.consumed if c.member == "victim" and c.batch == held_batch]
        assert in_flight, "the victim's last batch before it was killed is empty"
        victim.kill()  # its session now times out: no LeaveGroup
        killed_at = time.monotonic()
        leaver.stop()

        produced |= produce(bootstrap, topic, 15_000, "after")
        wait_until(
            lambda: len(run.committed_keys()) >= len(produced),
            60,
            f"the survivor to process and commit everything ({len(run.committed_keys())} of "
            f"{len(produced)}; assignment {run.assignment}):\n{group_log(group_broker, group)}",
        )
        took_over = time.monotonic() - killed_at
        assert run.assignment["survivor"] == set(range(6))
        survivor.stop()

        check_at_least_once(produced, run, may_repeat={"victim"})
        # precisely: the only records read twice are the victim's batch after its last commit
        with run.lock:
            consumed = [(c.partition, c.offset) for c in run.consumed]
            victim_commits = [ok for (name, _), ok in run.commits.items() if name == "victim"]
        assert victim_commits and all(victim_commits), "the victim never committed before"
        assert len(consumed) - len(set(consumed)) == len(in_flight), (
            f"{len(consumed) - len(set(consumed))} records were read twice, but only the "
            f"victim's {len(in_flight)} uncommitted ones may be"
        )
        log = group_log(group_broker, group)
        assert "expired (no heartbeat within the session timeout)" in log, log
        assert "left the group" in log, log

        admin = AdminClient({"bootstrap.servers": bootstrap})
        [result] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
        committed = {tp.partition: tp.offset for tp in result.result(15).topic_partitions}
        ends = defaultdict(int)
        for p, o in produced:
            ends[p] = max(ends[p], o + 1)
        assert committed == dict(ends), "committed offsets are not the log end offsets"
        print(
            f"{lib}: survivor finished {took_over:.1f}s after the kill, "
            f"{len(in_flight)} records redelivered"
        )
    finally:
        for m in members:
            m.cleanup()


# --- librdkafka in-process: static membership and cooperative-sticky ---------------------


class CkMember:
    """A confluent-kafka group member polled by the test, recording its rebalance callbacks."""

    def __init__(
        self, run: GroupRun, name: str, bootstrap: str, topic: str, group: str, **conf
    ) -> None:
        from confluent_kafka import Consumer

        self.run, self.name, self.topic = run, name, topic
        self.assigned: set[int] = set()
        self.callbacks: list[tuple[str, frozenset[int]]] = []  # ("assign"|"revoke", parts)
        self.batch = 0
        self.closed = False
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 500,
                **conf,
            }
        )
        run.assignment[name] = self.assigned
        self.consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _on_assign(self, _consumer, parts) -> None:
        got = frozenset(p.partition for p in parts)
        self.callbacks.append(("assign", got))
        self.assigned |= got

    def _on_revoke(self, _consumer, parts) -> None:
        gone = frozenset(p.partition for p in parts)
        self.callbacks.append(("revoke", gone))
        self.assigned -= gone

    def _on_lost(self, _consumer, parts) -> None:
        gone = frozenset(p.partition for p in parts)
        self.callbacks.append(("lost", gone))
        self.assigned -= gone

    def poll(self, timeout: float = 0.02) -> None:
        """One consume call; the batch is processed, then committed synchronously."""
        from confluent_kafka import KafkaException, TopicPartition

        msgs = self.consumer.consume(200, timeout)
        recs = [m for m in msgs if m.error() is None]
        assert len(recs) == len(msgs), [m.error() for m in msgs if m.error()]
        if not recs:
            return
        self.batch += 1
        last: dict[int, int] = {}
        with self.run.lock:
            for m in recs:
                self.run.consumed.append(
                    Consumption(
                        self.name, self.batch, m.partition(), m.offset(), m.value().decode()
                    )
                )
                last[m.partition()] = max(m.offset(), last.get(m.partition(), -1))
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
                asynchronous=False,
            )
            ok = True
        except KafkaException as e:
            ok = False
            self.run.commit_errors.append(f"{self.name} batch {self.batch}: {e}")
        with self.run.lock:
            self.run.commits[(self.name, self.batch)] = ok

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_until(
    members: list[CkMember], pred: Callable[[], object], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.poll()
        if pred():
            return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def settle(members: list[CkMember], quiet: float = 2.0, timeout: float = 20) -> None:
    """Poll until no member has seen a rebalance callback for `quiet` seconds. A cooperative
    rebalance ends with a second round whose (often empty) assign reaches each member on its
    own poll, after the partition counts already look final."""
    deadline = time.monotonic() + timeout
    counts = [len(m.callbacks) for m in members]
    calm_since = time.monotonic()
    while time.monotonic() < deadline:
        for m in members:
            m.poll()
        now = [len(m.callbacks) for m in members]
        if now != counts:
            counts, calm_since = now, time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return
    raise AssertionError(f"the group still rebalanced after {timeout}s")


def leader_of(broker: BrokerProcess, group: str) -> str:
    found = re.findall(
        rf"group {re.escape(group)}: generation \d+ .* leader (\S+)", full_log(broker)
    )
    assert found, f"no generation line for {group} in the broker log"
    return found[-1]


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_static_member_restart_keeps_assignment(group_broker: BrokerProcess, assignor: str) -> None:
    """KIP-345: a static member closes (no LeaveGroup) and comes back with the same
    group.instance.id within the session timeout: it gets its partitions back, the other
    members see no revocation and the group does not rebalance. Follower, then leader."""
    bootstrap = group_broker.bootstrap
    topic, group = _name("static"), _name("g-static")
    create_topic(bootstrap, topic, 6)
    produced = produce(bootstrap, topic, 1200, "p1")
    run = GroupRun()

    def member(instance: int, incarnation: int) -> CkMember:
        return CkMember(
            run,
            f"inst-{instance}#{incarnation}",
            bootstrap,
            topic,
            group,
            **{
                "group.instance.id": f"inst-{instance}",
                "partition.assignment.strategy": assignor,
            },
        )

    # Two members first, then the third: the group rebalances again, so every member's
    # protocol metadata now carries what it owns (cooperative-sticky) and a fresh incarnation
    # of a static member differs from its old self in those bytes, not in its subscription.
    members = [member(i, 1) for i in range(2)]
    try:
        poll_until(
            members,
            lambda: all(len(m.assigned) == 3 for m in members),
            30,
            f"2 static members with 3 partitions each:\n{group_log(group_broker, group)}",
        )
        members.append(member(2, 1))
        poll_until(
            members,
            lambda: (
                all(len(m.assigned) == 2 for m in members)
                and len(run.committed_keys()) == len(produced)
            ),
            30,
            f"3 static members with 2 partitions each:\n{group_log(group_broker, group)}",
        )
        leader = leader_of(group_broker, group)
        by_id = {m.consumer.memberid(): i for i, m in enumerate(members)}
        assert leader in by_id, f"leader {leader} is none of {list(by_id)}"
        follower = next(i for i in range(3) if i != by_id[leader])
        for round_, instance in enumerate([follower, by_id[leader]], start=2):
            settle(members)
            before = [set(m.assigned) for m in members]
            seen = [len(m.callbacks) for m in members]
            rebalances_before = rebalances(group_broker, group)
            old_id = members[instance].consumer.memberid()
            members[instance].close()  # static: librdkafka sends no LeaveGroup
            members[instance] = member(instance, round_)
            poll_until(
                members,
                lambda i=instance: len(members[i].assigned) == 2,
                15,
                f"restarted inst-{instance} to get its partitions back:\n"
                f"{group_log(group_broker, group)}",
            )
            # give a (wrong) rebalance time to show up before checking nobody saw one
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                for m in members:
                    m.poll()
            log = group_log(group_broker, group)
            assert f"static member inst-{instance} rejoined" in log, log
            assert f"member {old_id} left the group" not in log, "a static member's close left"
            assert members[instance].assigned == before[instance], (
                f"inst-{instance} came back with {members[instance].assigned}, "
                f"had {before[instance]}"
            )
            for i, m in enumerate(members):
                if i != instance:
                    assert m.callbacks[seen[i] :] == [], (
                        f"inst-{i} saw {m.callbacks[seen[i] :]} when inst-{instance} restarted:"
                        f"\n{log}"
                    )
                    assert m.assigned == before[i]
            assert rebalances(group_broker, group) == rebalances_before, (
                f"the group rebalanced when static inst-{instance} restarted:\n{log}"
            )
            produced |= produce(bootstrap, topic, 600, f"p{round_}")
            total = len(produced)
            poll_until(
                members,
                lambda total=total: len(run.committed_keys()) >= total,
                20,
                f"the restarted group to consume everything ({len(run.committed_keys())} of "
                f"{len(produced)})",
            )
        check_at_least_once(produced, run, may_repeat=set())
    finally:
        for m in members:
            m.close()


def test_cooperative_sticky_moves_only_what_must_move(group_broker: BrokerProcess) -> None:
    """A third cooperative-sticky member takes one partition from each of the other two;
    they keep the rest throughout (no revoke-everything) and nothing is read twice."""
    bootstrap = group_broker.bootstrap
    topic, group = _name("coop"), _name("g-coop")
    create_topic(bootstrap, topic, 6)
    produced = produce(bootstrap, topic, 1200, "p1")
    run = GroupRun()

    def member(name: str) -> CkMember:
        return CkMember(
            run,
            name,
            bootstrap,
            topic,
            group,
            **{"partition.assignment.strategy": "cooperative-sticky"},
        )

    members = [member("c0"), member("c1")]
    try:
        poll_until(
            members,
            lambda: (
                all(len(m.assigned) == 3 for m in members)
                and len(run.committed_keys()) == len(produced)
            ),
            30,
            f"2 members with 3 partitions each:\n{group_log(group_broker, group)}",
        )
        assert "protocol cooperative-sticky" in group_log(group_broker, group)
        before = [set(m.assigned) for m in members]
        seen = [len(m.callbacks) for m in members]
        members.append(member("c2"))
        poll_until(
            members,
            lambda: [len(m.assigned) for m in members] == [2, 2, 2],
            30,
            f"the third member to get 2 partitions ({[m.assigned for m in members]}):\n"
            f"{group_log(group_broker, group)}",
        )
        moved: set[int] = set()
        for i in range(2):
            m = members[i]
            events = m.callbacks[seen[i] :]
            revoked = {p for kind, parts in events if kind == "revoke" for p in parts}
            assert not [e for e in events if e[0] == "lost"], events
            assert len(revoked) == 1 and revoked < before[i], (
                f"{m.name} had {before[i]}, callbacks {events}: a cooperative rebalance "
                "should revoke exactly the one partition that moves"
            )
            assert m.assigned == before[i] - revoked
            moved |= revoked
        assert members[2].assigned == moved
        produced |= produce(bootstrap, topic, 1200, "p2")
        poll_until(
            members,
            lambda: len(run.committed_keys()) >= len(produced),
            20,
            f"all records after the rebalance ({len(run.committed_keys())} of {len(produced)})",
        )
        check_at_least_once(produced, run, may_repeat=set())
    finally:
        for m in members:
            m.close()


# --- committed offsets across a broker restart -------------------------------------------


def offset_fetch(bootstrap: str, groups: list[str]) -> dict[str, dict[tuple[str, int], tuple]]:
    """OffsetFetch v8, every partition of each group: {(topic, p): (offset, epoch, metadata)}."""
    from tests.wire import WireClient

    with WireClient(bootstrap) as w:
        r = w.call(
            9,
            8,
            {"groups": [{"group_id": g, "topics": None} for g in groups], "require_stable": False},
        )
    out: dict[str, dict[tuple[str, int], tuple]] = {}
    for g in r.groups:
        assert g.error_code == 0, (g.group_id, g.error_code)
        out[g.group_id] = {
            # confluent-kafka-python sends metadata with its C string's NUL terminator
            # (metadata_size = strlen + 1, seen on the wire); the broker keeps what it gets
            (t.name, p.partition_index): (
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata.removesuffix("\x00") if p.metadata is not None else None,
            )
            for t in g.topics
            for p in t.partitions
        }
    return out


def test_committed_offsets_metadata_and_epochs_survive_restart(broker_factory) -> None:
    from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTopicPartition
    from kafka.structs import OffsetAndMetadata

    from tests.wire import WireClient

    b = broker_factory("--group-initial-rebalance-delay-ms", "0")
    topic = _name("restart")
    g_ck, g_kp, g_wire, g_gone = _name("g-ck"), _name("g-kp"), _name("g-wire"), _name("g-gone")
    create_topic(b.bootstrap, topic, 3)
    produce(b.bootstrap, topic, 300, "r", partitions=3)  # 100 per partition
    meta_ck = 'ck {"owner": "agent-7", "note": "ünïcödé ✓"}'
    meta_long = "m" * 4000  # under offset.metadata.max.bytes (4096)

    # a subscribed librdkafka member commits (generation > 0) with metadata and epochs
    ck = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": g_ck,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ck.subscribe([topic])
        epochs: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(epochs) < 3 and time.monotonic() < deadline:
            for m in ck.consume(500, 0.2):
                assert m.error() is None, m.error()
                epochs[m.partition()] = m.leader_epoch()
        assert len(epochs) == 3, f"read {epochs} only:\n{group_log(b, g_ck)}"
        assert all(e is not None and e >= 0 for e in epochs.values()), epochs
        ck.commit(
            offsets=[
                TopicPartition(topic, 0, 42, metadata=meta_ck, leader_epoch=epochs[0]),
                TopicPartition(topic, 1, 100, metadata="", leader_epoch=epochs[1]),
                TopicPartition(topic, 2, 7, metadata=meta_long, leader_epoch=epochs[2]),
            ],
            asynchronous=False,
        )
    finally:
        ck.close()

    # kafka-python: a standalone consumer's commit (generation -1) with OffsetAndMetadata
    kp = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=g_kp, enable_auto_commit=False)
    try:
        kp.assign([KpTopicPartition(topic, 1)])
        kp.commit({KpTopicPartition(topic, 1): OffsetAndMetadata(10, "kp-meta", epochs[1])})
    finally:
        kp.close()

    # raw OffsetCommit v8: an epoch the clients would never send, just stored and returned
    with WireClient(b.bootstrap) as w:
        r = w.call(
            8,
            8,
            {
                "group_id": g_wire,
                "generation_id_or_member_epoch": -1,
                "member_id": "",
                "group_instance_id": None,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [
                            {
                                "partition_index": p,
                                "committed_offset": 99,
                                "committed_leader_epoch": 17,
                                "committed_metadata": None,
                            }
                            for p in (0, 2)
                        ],
                    }
                ],
            },
        )
        assert [p.error_code for p in r.topics[0].partitions] == [0, 0]
        # OffsetDelete of one partition, DeleteGroups of a whole group: both stay deleted
        r = w.call(
            47,
            0,
            {
                "group_id": g_wire,
                "topics": [{"name": topic, "partitions": [{"partition_index": 0}]}],
            },
        )
        assert (r.error_code, r.topics[0].partitions[0].error_code) == (0, 0), r
        gone = WireMember(w, g_gone, topic)
        assert gone.commit({0: 3, 1: 4}, member_id="", generation=-1) == [0, 0]
        r = w.call(42, 2, {"groups_names": [g_gone]})
        assert r.results[0].error_code == 0, r

    expected = {
        g_ck: {
            (topic, 0): (42, epochs[0], meta_ck),
            (topic, 1): (100, epochs[1], ""),
            (topic, 2): (7, epochs[2], meta_long),
        },
        g_kp: {(topic, 1): (10, epochs[1], "kp-meta")},
        g_wire: {(topic, 2): (99, 17, "")},
        g_gone: {},
    }
    assert offset_fetch(b.bootstrap, list(expected)) == expected

    b.stop()
    b = broker_factory("--group-initial-rebalance-delay-ms", "0", data_dir=b.data_dir, port=b.port)

    assert offset_fetch(b.bootstrap, list(expected)) == expected, "offsets changed over a restart"

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    listed = {g.group_id: g for g in admin.list_consumer_groups().result(15).valid}
    assert {g_ck, g_kp, g_wire} <= set(listed), f"groups with offsets are not listed: {listed}"
    assert g_gone not in listed, "a deleted group is back after the restart"
    for g in (g_ck, g_kp, g_wire):
        assert listed[g].state == ConsumerGroupState.EMPTY, (g, listed[g].state)

    # librdkafka's committed() (OffsetFetch) gives metadata and leader epoch back
    ck = Consumer({"bootstrap.servers": b.bootstrap, "group.id": g_ck})
    try:
        got = ck.committed([TopicPartition(topic, p) for p in range(3)], timeout=15)
        assert [(t.offset, t.leader_epoch, t.metadata or "") for t in got] == [
            (42, epochs[0], meta_ck),
            (100, epochs[1], ""),
            (7, epochs[2], meta_long),
        ]
    finally:
        ck.close()
    kp = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=g_kp, enable_auto_commit=False)
    try:
        assert kp.committed(KpTopicPartition(topic, 1), metadata=True) == OffsetAndMetadata(
            10, "kp-meta", epochs[1]
        )
    finally:
        kp.close()

    # OffsetForLeaderEpoch for a committed epoch: where that epoch ends (the log end here)
    with WireClient(b.bootstrap) as w:
        r = w.call(
            23,
            4,
            {
                "replica_id": -1,
                "topics": [
                    {
                        "topic": topic,
                        "partitions": [
                            {"partition": 0, "current_leader_epoch": -1, "leader_epoch": epochs[0]}
                        ],
                    }
                ],
            },
        )
        [part] = r.topics[0].partitions
        assert (part.error_code, part.leader_epoch, part.end_offset) == (0, epochs[0], 100)

    # a member of the group resumes exactly at the committed offsets (librdkafka validates
    # them with OffsetForLeaderEpoch first, since they carry an epoch)
    ck = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": g_ck,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ck.subscribe([topic])
        first: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(first) < 2 and time.monotonic() < deadline:
            for m in ck.consume(500, 0.2):
                assert m.error() is None, m.error()
                first.setdefault(m.partition(), m.offset())
        assert first == {0: 42, 2: 7}, f"resumed at {first}:\n{group_log(b, g_ck)}"
    finally:
        ck.close()


# --- AdminClient and kcat ----------------------------------------------------------------


def _kafka_error(fut, timeout: float = 15):
    """The KafkaError a future fails with (None if it succeeds)."""
    from confluent_kafka import KafkaException

    try:
        fut.result(timeout)
    except KafkaException as e:
        return e.args[0]
    return None


def test_admin_list_describe_offsets_delete(group_broker: BrokerProcess) -> None:
    from confluent_kafka import (
        ConsumerGroupState,
        ConsumerGroupTopicPartitions,
        KafkaError,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient

    bootstrap = group_broker.bootstrap
    topic, group = _name("admin"), _name("g-admin")
    create_topic(bootstrap, topic, 4)
    produced = produce(bootstrap, topic, 400, "a", partitions=4)
    run = GroupRun()
    members = [CkMember(run, f"m{i}", bootstrap, topic, group) for i in range(2)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        poll_until(
            members,
            lambda: (
                [len(m.assigned) for m in members] == [2, 2]
                and len(run.committed_keys()) == len(produced)
            ),
            30,
            f"2 members consuming everything:\n{group_log(group_broker, group)}",
        )

        listed = {g.group_id: g for g in admin.list_consumer_groups().result(15).valid}
        assert group in listed, listed
        assert listed[group].state == ConsumerGroupState.STABLE
        assert not listed[group].is_simple_consumer_group
        stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(15)
        assert group in {g.group_id for g in stable.valid}
        empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(15)
        assert group not in {g.group_id for g in empty.valid}

        desc = admin.describe_consumer_groups([group])[group].result(15)
        assert desc.state == ConsumerGroupState.STABLE
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor in ("range", "roundrobin")
        assert desc.coordinator.id == 0 and desc.coordinator.port == group_broker.port
        by_id = {m.member_id: m for m in desc.members}
        assert set(by_id) == {m.consumer.memberid() for m in members}
        for m in members:
            d = by_id[m.consumer.memberid()]
            assert d.client_id == "rdkafka" and d.host.lstrip("/") == "127.0.0.1", d
            assert {tp.partition for tp in d.assignment.topic_partitions} == m.assigned
            assert {tp.topic for tp in d.assignment.topic_partitions} == {topic}

        [fut] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
        offsets = {tp.partition: tp.offset for tp in fut.result(15).topic_partitions}
        assert offsets == {p: 100 for p in range(4)}

        err = _kafka_error(admin.delete_consumer_groups([group])[group])
        assert err is not None and err.code() == KafkaError.NON_EMPTY_GROUP, err
        # altering offsets of a group with members is refused, as Kafka does
        [fut] = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 5)])]
        ).values()
        [tp] = fut.result(15).topic_partitions
        assert tp.error is not None and tp.error.code() == KafkaError.UNKNOWN_MEMBER_ID, tp
    finally:
        for m in members:
            m.close()

    desc = admin.describe_consumer_groups([group])[group].result(15)
    assert desc.state == ConsumerGroupState.EMPTY and desc.members == [], desc
    [fut] = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 10, metadata="rewound")])]
    ).values()
    altered = fut.result(15).topic_partitions
    assert [(tp.partition, tp.offset, tp.error) for tp in altered] == [(0, 10, None)]
    [fut] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    offsets = {
        tp.partition: (tp.offset, tp.metadata or "") for tp in fut.result(15).topic_partitions
    }
    assert offsets == {0: (10, "rewound"), 1: (100, ""), 2: (100, ""), 3: (100, "")}, offsets

    assert _kafka_error(admin.delete_consumer_groups([group])[group]) is None
    listed = {g.group_id for g in admin.list_consumer_groups().result(15).valid}
    assert group not in listed, "a deleted group is still listed"
    [fut] = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(4)])]
    ).values()
    gone = [tp.offset for tp in fut.result(15).topic_partitions]
    assert gone == [-1001] * 4, f"committed offsets survived the group's deletion: {gone}"
    assert offset_fetch(bootstrap, [group]) == {group: {}}
    desc = admin.describe_consumer_groups([group])[group].result(15)
    assert desc.state == ConsumerGroupState.DEAD and desc.members == [], desc
    err = _kafka_error(admin.delete_consumer_groups([group])[group])
    assert err is not None and err.code() == KafkaError.GROUP_ID_NOT_FOUND, err


def test_empty_group_stays_a_consumer_group(broker_factory) -> None:
    """Kafka keeps an emptied group's protocol type ("consumer"), also over a restart
    (it is in the group metadata record), so AdminClient still reports a consumer group
    rather than a simple (offsets-only) one."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    b = broker_factory("--group-initial-rebalance-delay-ms", "0")
    topic, group = _name("emptied"), _name("g-emptied")
    create_topic(b.bootstrap, topic, 2)
    produced = produce(b.bootstrap, topic, 20, "e", partitions=2)
    run = GroupRun()
    m = CkMember(run, "m", b.bootstrap, topic, group)
    try:
        poll_until([m], lambda: len(run.committed_keys()) == len(produced), 20, "consumption")
    finally:
        m.close()

    def listing() -> tuple:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        found = {g.group_id: g for g in admin.list_consumer_groups().result(15).valid}
        assert group in found, f"{group} is not listed: {list(found)}"
        return found[group].state, found[group].is_simple_consumer_group

    assert listing() == (ConsumerGroupState.EMPTY, False), (
        "BROKER BUG: once its last member leaves, the group is listed with protocol_type '' "
        "(AdminClient: is_simple_consumer_group=True); Kafka keeps 'consumer' "
        "(Group.remove() clears protocol_type when the group empties)"
    )
    b.stop()
    b = broker_factory("--group-initial-rebalance-delay-ms", "0", data_dir=b.data_dir, port=b.port)
    assert listing() == (ConsumerGroupState.EMPTY, False), (
        "BROKER BUG: after a restart the group comes back with protocol_type '' "
        "(is_simple_consumer_group=True); Kafka restores 'consumer' from the group metadata"
    )


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_balanced_consumer_is_a_group_member(group_broker: BrokerProcess) -> None:
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    bootstrap = group_broker.bootstrap
    topic, group = _name("kcat"), _name("g-kcat")
    create_topic(bootstrap, topic, 3)
    produced = produce(bootstrap, topic, 300, "k1", partitions=3)

    listing = subprocess.run(
        ["kcat", "-b", bootstrap, "-L", "-t", topic],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    assert f'topic "{topic}" with 3 partitions' in listing, listing

    admin = AdminClient({"bootstrap.servers": bootstrap})
    kcat = subprocess.Popen(
        ["kcat", "-b", bootstrap, "-G", group, "-q", "-f", "%p %o %s\\n", "-c", "600"]
        + ["-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000", topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def kcat_member():
            desc = admin.describe_consumer_groups([group])[group].result(15)
            if desc.state == ConsumerGroupState.STABLE and len(desc.members) == 1:
                return desc.members[0]
            return None

        wait_until(kcat_member, 30, f"kcat in the group:\n{group_log(group_broker, group)}", 0.2)
        member = kcat_member()
        assert member.client_id == "rdkafka", member
        assert {tp.partition for tp in member.assignment.topic_partitions} == {0, 1, 2}

        produced |= produce(bootstrap, topic, 300, "k2", partitions=3)
        out, err = kcat.communicate(timeout=30)
        assert kcat.returncode == 0, err.decode()[-2000:]
    finally:
        if kcat.poll() is None:
            kcat.kill()
            kcat.communicate()
    got = {}
    for line in out.decode().splitlines():
        p, o, value = line.split(" ", 2)
        got[(int(p), int(o))] = value
    assert got == produced, f"kcat read {len(got)} records, {len(produced)} were produced"
    # kcat (librdkafka auto-commit) commits on close and leaves the group
    desc = admin.describe_consumer_groups([group])[group].result(15)
    assert desc.state == ConsumerGroupState.EMPTY, desc
    [fut] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    assert {tp.partition: tp.offset for tp in fut.result(15).topic_partitions} == {
        p: 200 for p in range(3)
    }


# --- bad requests over the wire ----------------------------------------------------------

MEMBER_ID_REQUIRED = 79
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27


def _subscription(topic: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, null user data."""
    t = topic.encode()
    return struct.pack(">hih", 0, 1, len(t)) + t + struct.pack(">i", -1)


def _assignment(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0: version, [topic, partitions], null user data."""
    t = topic.encode()
    body = struct.pack(">hih", 0, 1, len(t)) + t + struct.pack(">i", len(partitions))
    return body + b"".join(struct.pack(">i", p) for p in partitions) + struct.pack(">i", -1)


class WireMember:
    """Raw JoinGroup v5 / SyncGroup v3 / Heartbeat v3 / OffsetCommit v8 for one group."""

    def __init__(self, wire, group: str, topic: str) -> None:
        self.w, self.group, self.topic = wire, group, topic
        self.member_id, self.generation, self.leader = "", -1, ""
        self.instance: str | None = None
        self.rebalance_timeout = 10000

    def join(
        self, member_id=None, protocol_type="consumer", protocols=None, session=10000, instance=None
    ):
        if instance is not None:
            self.instance = instance
        return self.w.call(
            11,
            5,
            {
                "group_id": self.group,
                "session_timeout": session,
                "rebalance_timeout": self.rebalance_timeout,
                "member_id": self.member_id if member_id is None else member_id,
                "group_instance_id": self.instance,
                "protocol_type": protocol_type,
                "protocols": [
                    {"name": n, "metadata": m}
                    for n, m in (protocols or [("range", _subscription(self.topic))])
                ],
            },
        )

    def sync(self, member_id=None, generation=None, assignments=()):
        return self.w.call(
            14,
            3,
            {
                "group_id": self.group,
                "generation_id": self.generation if generation is None else generation,
                "member_id": self.member_id if member_id is None else member_id,
                "group_instance_id": self.instance,
                "assignments": [{"member_id": m, "assignment": a} for m, a in assignments],
            },
        )

    def heartbeat(self, member_id=None, generation=None) -> int:
        return self.w.call(
            12,
            3,
            {
                "group_id": self.group,
                "generation_id": self.generation if generation is None else generation,
                "member_id": self.member_id if member_id is None else member_id,
                "group_instance_id": None,
            },
        ).error_code

    def commit(self, offsets: dict[int, int], member_id=None, generation=None) -> list[int]:
        r = self.w.call(
            8,
            8,
            {
                "group_id": self.group,
                "generation_id_or_member_epoch": self.generation
                if generation is None
                else generation,
                "member_id": self.member_id if member_id is None else member_id,
                "group_instance_id": None,
                "topics": [
                    {
                        "name": self.topic,
                        "partitions": [
                            {
                                "partition_index": p,
                                "committed_offset": o,
                                "committed_leader_epoch": -1,
                                "committed_metadata": "wire",
                            }
                            for p, o in offsets.items()
                        ],
                    }
                ],
            },
        )
        return [p.error_code for t in r.topics for p in t.partitions]

    def join_as_leader(self, session: int = 10000) -> None:
        """(Re)join, become the only member and leader, assign every partition."""
        r = self.join(session=session)
        if r.error_code == MEMBER_ID_REQUIRED:
            self.member_id = r.member_id
            r = self.join(session=session)
        assert r.error_code == 0 and r.leader == r.member_id == self.member_id, r
        self.generation = r.generation_id
        assert [m.member_id for m in r.members] == [self.member_id]
        s = self.sync(assignments=[(self.member_id, _assignment(self.topic, [0, 1]))])
        assert s.error_code == 0 and s.assignment == _assignment(self.topic, [0, 1]), s


def test_bad_group_requests_get_kafka_errors_and_group_stays_usable(
    group_broker: BrokerProcess,
) -> None:
    from tests.wire import WireClient

    bootstrap = group_broker.bootstrap
    topic, group = _name("bad"), _name("g-bad")
    create_topic(bootstrap, topic, 2)
    produced = produce(bootstrap, topic, 100, "b", partitions=2)  # 50 per partition

    with WireClient(bootstrap) as w, WireClient(bootstrap) as other:
        me = WireMember(w, group, topic)
        me.join_as_leader()
        assert me.generation == 1
        intruder = WireMember(other, group, topic)

        def usable() -> None:
            assert me.heartbeat() == 0, "the group's member can no longer heartbeat"

        # a JoinGroup whose protocol type / protocols do not match the group's
        r = intruder.join(protocol_type="connect")
        assert r.error_code == INCONSISTENT_GROUP_PROTOCOL, r
        r = intruder.join(protocols=[("no-such-assignor", b"")])
        assert r.error_code == INCONSISTENT_GROUP_PROTOCOL, r
        usable()

        # session timeout outside [group.min, group.max].session.timeout.ms
        for session in (100, SESSION_MS - 1, 1_800_001):
            r = intruder.join(session=session)
            assert r.error_code == INVALID_SESSION_TIMEOUT, (session, r)
        usable()

        # a member id the group never handed out
        r = intruder.join(member_id="not-a-member")
        assert r.error_code == UNKNOWN_MEMBER_ID, r
        r = intruder.sync(member_id="not-a-member", generation=me.generation)
        assert r.error_code == UNKNOWN_MEMBER_ID, r
        assert me.heartbeat(member_id="not-a-member") == UNKNOWN_MEMBER_ID
        assert intruder.commit({0: 1}, member_id="not-a-member", generation=me.generation) == [
            UNKNOWN_MEMBER_ID
        ]
        # generation -1 (a standalone commit) is only for groups without members
        assert intruder.commit({0: 1}, member_id="", generation=-1) == [UNKNOWN_MEMBER_ID]
        usable()

        # a stale generation after the group moved on
        stale = me.generation
        me.join_as_leader()  # the leader rejoining starts generation 2
        assert me.generation == stale + 1
        assert me.heartbeat(generation=stale) == ILLEGAL_GENERATION
        assert me.heartbeat(generation=stale + 5) == ILLEGAL_GENERATION
        assert me.sync(generation=stale).error_code == ILLEGAL_GENERATION
        assert me.commit({0: 1}, generation=stale) == [ILLEGAL_GENERATION]
        usable()

        assert offset_fetch(bootstrap, [group]) == {group: {}}, "a refused commit was stored"
        assert me.commit({0: 20, 1: 30}) == [0, 0]
        usable()
        r = w.call(13, 3, {"group_id": group, "members": [{"member_id": me.member_id}]})
        assert [m.error_code for m in r.members] == [0], r

    # a real consumer joins the same group and resumes from the wire member's commits
    run = GroupRun()
    ck = CkMember(run, "ck", bootstrap, topic, group)
    try:
        expected = {k: v for k, v in produced.items() if k[1] >= {0: 20, 1: 30}[k[0]]}
        poll_until(
            [ck],
            lambda: len(run.committed_keys()) >= len(expected),
            20,
            f"a consumer to join after the bad requests:\n{group_log(group_broker, group)}",
        )
        check_at_least_once(expected, run, may_repeat=set())
    finally:
        ck.close()


FENCED_INSTANCE_ID = 82


def _join_pair(bootstrap: str, group: str, topic: str, instance: str | None = None):
    """Two raw members join one generation; returns (leader, follower) WireMembers."""
    from tests.wire import WireClient

    members = [WireMember(WireClient(bootstrap), group, topic) for _ in range(2)]
    errors: list[BaseException] = []

    def join(m: WireMember, inst: str | None) -> None:
        try:
            r = m.join(instance=inst)
            if r.error_code == MEMBER_ID_REQUIRED:
                m.member_id = r.member_id
                r = m.join(instance=inst)
            assert r.error_code == 0, r
            m.member_id, m.generation, m.leader = r.member_id, r.generation_id, r.leader
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [
        threading.Thread(target=join, args=(members[0], None)),
        threading.Thread(target=join, args=(members[1], instance)),
    ]
    for t in threads:
        t.start()
        time.sleep(0.1)  # both inside the initial rebalance delay: one generation
    for t in threads:
        t.join(20)
    if errors:
        for m in members:
            m.w.close()
        raise AssertionError(f"raw members could not join: {errors}")
    assert members[0].generation == members[1].generation
    leader = next(m for m in members if m.member_id == m.leader)
    return leader, next(m for m in members if m is not leader)


def _parked_sync(member: WireMember) -> tuple[threading.Thread, dict]:
    """The follower's SyncGroup, which waits for the leader's."""
    out: dict = {}

    def sync() -> None:
        try:
            out["response"] = member.sync()
        except Exception as e:  # noqa: BLE001 - the assertion reports it
            out["response"] = e

    t = threading.Thread(target=sync)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), f"the follower's SyncGroup was not parked: {out}"
    return t, out


@pytest.mark.parametrize("how", ["leave", "static-replaced"])
def test_parked_sync_is_answered_when_its_member_goes(group_broker: BrokerProcess, how) -> None:
    """A follower's SyncGroup waits for the leader's; if the follower leaves meanwhile
    (a client closing mid-rebalance) or a new incarnation of its static instance joins,
    the parked SyncGroup must still get a SyncGroup answer (UNKNOWN_MEMBER_ID /
    REBALANCE_IN_PROGRESS, or FENCED_INSTANCE_ID), not a dropped connection."""
    from tests.wire import WireClient

    bootstrap = group_broker.bootstrap
    topic, group = _name("parked"), _name("g-parked")
    create_topic(bootstrap, topic, 2)
    static = "inst-parked" if how == "static-replaced" else None
    leader, follower = _join_pair(bootstrap, group, topic, instance=static)
    assert follower.instance == static  # the first to join leads
    try:
        t, out = _parked_sync(follower)
        with WireClient(bootstrap) as w:
            if how == "leave":
                r = w.call(
                    13, 3, {"group_id": group, "members": [{"member_id": follower.member_id}]}
                )
                assert [m.error_code for m in r.members] == [0], r
                wanted = (UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS)
            else:
                newcomer = WireMember(w, group, topic)

                def rejoin() -> None:  # parks until the rebalance it starts ends
                    with contextlib.suppress(OSError):
                        newcomer.join(instance=static)

                threading.Thread(target=rejoin, daemon=True).start()
                wanted = (FENCED_INSTANCE_ID,)
            t.join(10)
        response = out.get("response")
        assert not isinstance(response, Exception), (
            f"BROKER BUG: the parked SyncGroup got no answer ({response!r}): the coordinator "
            "completes a SyncGroup waiter with a JoinGroup-shaped error (_error() instead of "
            "_sync_error()), building the response fails (KeyError 'assignment') and the "
            f"connection is closed:\n{_server_errors(group_broker)}"
        )
        assert response.error_code in wanted, response
    finally:
        with contextlib.suppress(OSError):  # end the rebalance this left pending
            leader.w.call(13, 3, {"group_id": group, "members": [{"member_id": leader.member_id}]})
        leader.w.close()
        follower.w.close()


def _server_errors(broker: BrokerProcess) -> str:
    lines = full_log(broker).splitlines()
    at = [i for i, line in enumerate(lines) if "ERROR" in line]
    return "\n".join(lines[at[-1] : at[-1] + 12]) if at else "(no ERROR in the broker log)"


def test_deleting_a_topic_drops_its_committed_offsets(group_broker: BrokerProcess) -> None:
    """Kafka removes a deleted topic's committed offsets (onPartitionsDeleted); kept, they
    make a group resume a re-created topic of the same name mid-log, skipping records."""
    from confluent_kafka.admin import AdminClient

    from tests.wire import WireClient

    bootstrap = group_broker.bootstrap
    topic, group = _name("recreated"), _name("g-recreated")
    create_topic(bootstrap, topic, 1)
    with WireClient(bootstrap) as w:
        assert WireMember(w, group, topic).commit({0: 5}, member_id="", generation=-1) == [0]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(15)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 10, "topic deletion")
    create_topic(bootstrap, topic, 1)
    produced = produce(bootstrap, topic, 10, "new")
    left = offset_fetch(bootstrap, [group])[group]
    assert left == {}, (
        f"BROKER BUG: offsets committed for a deleted topic are still returned: {left}; a "
        f"group consuming the re-created '{topic}' would start at offset 5 and skip "
        f"{sorted(o for _, o in produced)[:5]} (DeleteTopics leaves __consumer_offsets alone)"
    )


def test_shutdown_does_not_wait_for_parked_joins(broker_factory) -> None:
    """SIGTERM while a JoinGroup waits for a rebalance (up to the members' rebalance
    timeout, 5 minutes with librdkafka's defaults) must not hold the shutdown."""
    from tests.wire import WireClient

    b = broker_factory("--group-initial-rebalance-delay-ms", "0")
    topic, group = _name("shutdown"), _name("g-shutdown")
    create_topic(b.bootstrap, topic, 1)
    with WireClient(b.bootstrap) as wa, WireClient(b.bootstrap, timeout=60) as wb:
        a = WireMember(wa, group, topic)
        a.rebalance_timeout = 60000
        a.join_as_leader(session=60000)
        newcomer = WireMember(wb, group, topic)

        def join() -> None:  # parks: the rebalance waits for `a` to rejoin, for 60s
            with contextlib.suppress(OSError):
                r = newcomer.join()
                assert r.error_code == MEMBER_ID_REQUIRED, r
                newcomer.member_id = r.member_id
                newcomer.join()

        t = threading.Thread(target=join, daemon=True)
        t.start()
        wait_until(lambda: rebalances(b, group) >= 2, 10, "the second member's rebalance")
        started = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        try:
            b.proc.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "BROKER BUG: SIGTERM did not stop the broker within 5s while a JoinGroup was "
                "parked: Connection.serve() swallows the cancellation and its finally block "
                "awaits the responder, i.e. the parked handler, until the rebalance times out"
            ) from None
        finally:
            b.kill()
        assert time.monotonic() - started < 5


def test_refused_commit_creates_no_group(group_broker: BrokerProcess) -> None:
    """An OffsetCommit refused for its empty group id must not leave a group "" behind."""
    from tests.wire import WireClient

    topic = _name("nogroup")
    create_topic(group_broker.bootstrap, topic, 1)
    with WireClient(group_broker.bootstrap) as w:
        assert WireMember(w, "", topic).commit({0: 1}, member_id="", generation=-1) == [24]
        listed = [g.group_id for g in w.call(16, 4, {"states_filter": []}).groups]
    assert "" not in listed, (
        "BROKER BUG: OffsetCommit with group id '' is refused (INVALID_GROUP_ID) but "
        "GroupCoordinator.commit_error() has already created an empty group '', which "
        "ListGroups now returns"
    )


@pytest.mark.parametrize("reset", ["earliest", "latest", "none"])
def test_auto_offset_reset_without_committed_offsets(
    group_broker: BrokerProcess, reset: str
) -> None:
    """A group with no commits starts where auto.offset.reset says, as in Kafka."""
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = _name("reset")
    admin = AdminClient({"bootstrap.servers": group_broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": group_broker.bootstrap})
    for i in range(5):
        producer.produce(topic, b"before-%d" % i)
    producer.flush(10)

    consumer = Consumer(
        {
            "bootstrap.servers": group_broker.bootstrap,
            "group.id": _name("g"),
            "auto.offset.reset": "error" if reset == "none" else reset,  # librdkafka spelling
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    errors: list[int] = []
    deadline = time.monotonic() + 20
    produced_after = False
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error():
            errors.append(msg.error().code())
            if reset == "none":
                break
        elif msg is not None:
            got.append(msg.value())
        if consumer.assignment() and not produced_after:
            time.sleep(0.5)  # let "latest" resolve its position before the new record
            producer.produce(topic, b"after")
            producer.flush(10)
            produced_after = True
        if (reset == "earliest" and len(got) == 6) or (reset == "latest" and got):
            break
    consumer.close()
    if reset == "earliest":
        assert got == [b"before-%d" % i for i in range(5)] + [b"after"]
    elif reset == "latest":
        assert got == [b"after"]
    else:
        assert KafkaError._AUTO_OFFSET_RESET in errors, errors
        assert not got
