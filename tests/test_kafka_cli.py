"""Apache Kafka's own CLI tools (Maven Central jars, run with this machine's Java) against Strata.

Acceptance: kafka-topics create/list/describe/alter/delete, the console producer and consumer,
kafka-consumer-groups describe/reset-offsets/delete, kafka-configs describe/alter and
kafka-get-offsets each work against a running Strata, checked on what the tools print, the way
an operator would read it. The jars are fetched once by devkit/kafka_cli.py and cached.

A tool that fails shows its command, exit code, output and the broker's log; rerun with
STRATA_KAFKA_CLI_DEBUG=1 to have the Kafka client log every request and response error.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from devkit.broker import BrokerProcess
from devkit.kafka_cli import (
    CONSOLE_CONSUMER,
    CONSOLE_PRODUCER,
    CONSUMER_GROUP_COMMAND,
    GET_OFFSET_SHELL,
    TOPIC_COMMAND,
    KafkaCli,
    ToolResult,
)

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

BROKER_ARGS = ("--group-initial-rebalance-delay-ms", "300")


@pytest.fixture(scope="module")
def kafka_cli() -> KafkaCli:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: the Kafka CLI tools need a JVM")
    return KafkaCli()  # fetches the jars on first use; a failed fetch fails the tests


class Cli:
    """The tools bound to one broker; every failure names the tool run and shows the broker log."""

    def __init__(self, tools: KafkaCli, broker: BrokerProcess) -> None:
        self.tools = tools
        self.broker = broker

    def run(self, main: str, *args: str, input: str | None = None, timeout: float = 60) -> str:
        """Run a tool that must exit 0; return its stdout."""
        r = self.tools.run(
            main, "--bootstrap-server", self.broker.bootstrap, *args, input=input, timeout=timeout
        )
        if r.returncode != 0:
            self.fail(r, "exited non-zero")
        return r.stdout

    def fail(self, r: ToolResult, why: str) -> None:
        log = "\n".join(self.broker.log().splitlines()[-40:])
        pytest.fail(
            f"Kafka CLI {why}:\n{r.describe()}\n--- broker log (tail) ---\n{log}\n"
            "(rerun with STRATA_KAFKA_CLI_DEBUG=1 to see the client's requests)",
            pytrace=False,
        )

    def topics(self, *args: str) -> str:
        return self.run(TOPIC_COMMAND, *args)

    def groups(self, *args: str) -> str:
        return self.run(CONSUMER_GROUP_COMMAND, *args)

    def configs(self, *args: str) -> str:
        return self.run(self.tools.config_command, *args)

    def produce(self, topic: str, lines: list[str], keyed: bool = False) -> None:
        props = ["--reader-property", "parse.key=true", "--reader-property", "key.separator=:"]
        self.run(
            CONSOLE_PRODUCER,
            "--topic",
            topic,
            *(props if keyed else []),
            # acks=all (the default) and a fresh line per record: nothing may be lost on exit.
            input="".join(line + "\n" for line in lines),
        )

    def consume(self, topic: str, n: int, *args: str) -> list[tuple[int, int, str, str]]:
        """Console-consume n records; return (partition, offset, key, value) per record."""
        out = self.run(
            CONSOLE_CONSUMER,
            "--topic",
            topic,
            "--max-messages",
            str(n),
            "--timeout-ms",
            "30000",  # give up (and print what was seen) rather than hang
            *args,
            "--formatter-property",
            "print.partition=true",
            "--formatter-property",
            "print.offset=true",
            "--formatter-property",
            "print.key=true",
            timeout=90,
        )
        records = []
        for line in out.splitlines():
            m = re.fullmatch(r"Partition:(\d+)\tOffset:(\d+)\t(.*?)\t(.*)", line)
            if m:
                records.append((int(m[1]), int(m[2]), m[3], m[4]))
        assert len(records) == n, f"console consumer printed {len(records)} of {n}:\n{out}"
        return records

    def end_offsets(self, topic: str, *args: str) -> dict[int, int]:
        """kafka-get-offsets: 'topic:partition:offset' per partition."""
        out = self.run(GET_OFFSET_SHELL, "--topic", topic, *args)
        offsets = {}
        for line in out.splitlines():
            m = re.fullmatch(rf"{re.escape(topic)}:(\d+):(-?\d+)", line.strip())
            assert m, f"unexpected GetOffsetShell line {line!r} in:\n{out}"
            offsets[int(m[1])] = int(m[2])
        return offsets


@pytest.fixture
def cli(kafka_cli: KafkaCli, broker_factory) -> Iterator[Cli]:
    yield Cli(kafka_cli, broker_factory(*BROKER_ARGS))


def describe_partitions(out: str, topic: str) -> dict[int, dict[str, str]]:
    """kafka-topics --describe partition lines: {partition: {Leader: .., Replicas: .., ...}}."""
    parts = {}
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+): (\S*)", line))
        if fields.get("Topic") == topic and "Partition" in fields:
            parts[int(fields["Partition"])] = fields
    return parts


def group_rows(out: str, group: str) -> dict[tuple[str, int], dict[str, str]]:
    """kafka-consumer-groups --describe (offsets) table rows, keyed by (topic, partition)."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    header = next((ln.split() for ln in lines if ln.split()[:2] == ["GROUP", "TOPIC"]), None)
    assert header, f"no offsets table in:\n{out}"
    rows = {}
    for ln in lines:
        cells = ln.split()
        if cells and cells[0] == group and len(cells) == len(header):
            row = dict(zip(header, cells, strict=True))
            rows[(row["TOPIC"], int(row["PARTITION"]))] = row
    return rows


def test_topics_create_list_describe_alter_delete(cli: Cli) -> None:
    out = cli.topics(
        "--create", "--topic", "cli-topic", "--partitions", "2", "--config", "retention.ms=3600000"
    )
    assert "Created topic cli-topic." in out

    listed = cli.topics("--list", "--exclude-internal").split()
    assert listed == ["cli-topic"], listed
    assert "cli-topic" in cli.topics("--list").split()

    out = cli.topics("--describe", "--topic", "cli-topic")
    header = next(ln for ln in out.splitlines() if ln.startswith("Topic: cli-topic\t"))
    assert "PartitionCount: 2" in header and "ReplicationFactor: 1" in header, out
    configs = re.search(r"Configs: (\S*)", header)
    assert configs and "retention.ms=3600000" in configs[1].split(","), out
    parts = describe_partitions(out, "cli-topic")
    assert sorted(parts) == [0, 1], out
    for p in parts.values():
        assert p["Leader"] == p["Replicas"] == p["Isr"] != "none", out

    cli.topics("--alter", "--topic", "cli-topic", "--partitions", "5")
    out = cli.topics("--describe", "--topic", "cli-topic")
    assert "PartitionCount: 5" in out, out
    assert sorted(describe_partitions(out, "cli-topic")) == [0, 1, 2, 3, 4], out

    # Only topics with an override, as operators use it to audit configs.
    out = cli.topics("--describe", "--topics-with-overrides")
    assert "Topic: cli-topic\t" in out and "retention.ms=3600000" in out, out

    cli.topics("--delete", "--topic", "cli-topic")
    assert "cli-topic" not in cli.topics("--list").split()


def test_console_producer_consumer_and_get_offsets(cli: Cli) -> None:
    cli.topics("--create", "--topic", "cli-console", "--partitions", "3")
    sent = [(f"key-{i}", f"value {i} ünïcødé") for i in range(40)]
    cli.produce("cli-console", [f"{k}:{v}" for k, v in sent], keyed=True)

    got = cli.consume("cli-console", len(sent), "--from-beginning")
    assert sorted((k, v) for _, _, k, v in got) == sorted(sent)
    by_partition: dict[int, list[int]] = {}
    for partition, offset, _key, _ in got:
        by_partition.setdefault(partition, []).append(offset)
    for partition, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), (partition, offsets)

    # kafka-get-offsets: the log end of every partition (default --time -1), then the start.
    ends = cli.end_offsets("cli-console")
    assert ends == {p: len(by_partition.get(p, [])) for p in range(3)}, (ends, by_partition)
    assert sum(ends.values()) == len(sent)
    assert cli.end_offsets("cli-console", "--time", "-2") == {0: 0, 1: 0, 2: 0}
    # One partition, by the tool's own topic:partition filter.
    out = cli.run(GET_OFFSET_SHELL, "--topic-partitions", "cli-console:1")
    assert out.split() == [f"cli-console:1:{ends[1]}"], out


def test_consumer_groups_describe_reset_delete(cli: Cli) -> None:
    topic, group = "cli-groups", "cli-group"
    cli.topics("--create", "--topic", topic, "--partitions", "2")
    # Keyed, so that both partitions get records (unkeyed lines may all stick to one).
    cli.produce(topic, [f"k{i}:first {i}" for i in range(20)], keyed=True)
    first = cli.consume(topic, 20, "--group", group, "--from-beginning")
    committed = {p: 0 for p in range(2)}
    for partition, offset, _, _ in first:
        committed[partition] = max(committed[partition], offset + 1)
    assert sum(committed.values()) == 20 and min(committed.values()) > 0, committed

    cli.produce(topic, [f"k{i}:second {i}" for i in range(6)], keyed=True)
    assert group in cli.groups("--list").split()

    out = cli.groups("--describe", "--group", group)
    rows = group_rows(out, group)
    assert sorted(rows) == [(topic, 0), (topic, 1)], out
    total_lag = 0
    for (_, p), row in rows.items():
        assert int(row["CURRENT-OFFSET"]) == committed[p], out
        end, lag = int(row["LOG-END-OFFSET"]), int(row["LAG"])
        assert lag == end - committed[p], out
        total_lag += lag
    assert total_lag == 6, out

    out = cli.groups("--describe", "--group", group, "--state")
    assert re.search(rf"^{group}\s+.*\bEmpty\s+0\s*$", out, re.M), out

    out = cli.groups(
        "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute"
    )
    new = {(r["TOPIC"], int(r["PARTITION"])): r["NEW-OFFSET"] for r in _table(out, "NEW-OFFSET")}
    assert new == {(topic, 0): "0", (topic, 1): "0"}, out
    rows = group_rows(cli.groups("--describe", "--group", group), group)
    assert {k: r["CURRENT-OFFSET"] for k, r in rows.items()} == new

    # The group resumes from its (reset) committed offsets: everything again, from offset 0.
    again = cli.consume(topic, 26, "--group", group)
    assert sorted(v for *_, v in again) == sorted(
        [f"first {i}" for i in range(20)] + [f"second {i}" for i in range(6)]
    )
    for p in range(2):
        offsets = [o for q, o, *_ in again if q == p]
        assert offsets == list(range(len(offsets))) and offsets, (p, again)
    rows = group_rows(cli.groups("--describe", "--group", group), group)
    assert all(r["LAG"] == "0" for r in rows.values()), rows

    out = cli.groups("--delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in out, out
    assert group not in cli.groups("--list").split()
    out = cli.groups("--describe", "--group", group)
    assert f"Consumer group '{group}' does not exist." in out, out


def _table(out: str, last_column: str) -> list[dict[str, str]]:
    lines = [ln.split() for ln in out.splitlines() if ln.strip()]
    header = next((cells for cells in lines if cells and cells[-1] == last_column), None)
    assert header, f"no table ending in {last_column} in:\n{out}"
    return [
        dict(zip(header, c, strict=True)) for c in lines if c != header and len(c) == len(header)
    ]


def test_configs_describe_alter(cli: Cli) -> None:
    topic = "cli-configs"
    cli.topics("--create", "--topic", topic, "--config", "retention.ms=123456")
    entity = ("--entity-type", "topics", "--entity-name", topic)

    def dynamic() -> dict[str, str]:
        out = cli.configs("--describe", *entity)
        assert f"Dynamic configs for topic {topic} are:" in out, out
        return dict(re.findall(r"^\s+([\w.]+)=(\S*) sensitive=", out, re.M))

    assert dynamic() == {"retention.ms": "123456"}

    out = cli.configs(
        "--alter", *entity, "--add-config", "retention.ms=86400000,max.message.bytes=2097152"
    )
    assert f"Completed updating config for topic {topic}." in out, out
    assert dynamic() == {"retention.ms": "86400000", "max.message.bytes": "2097152"}

    out = cli.configs("--alter", *entity, "--delete-config", "retention.ms")
    assert f"Completed updating config for topic {topic}." in out, out
    assert dynamic() == {"max.message.bytes": "2097152"}

    # --all: every topic config, the deleted override back at the broker default.
    out = cli.configs("--describe", "--all", *entity)
    all_configs = dict(re.findall(r"^\s+([\w.]+)=(\S*) sensitive=", out, re.M))
    assert all_configs.get("retention.ms") == "604800000", out
    assert all_configs.get("max.message.bytes") == "2097152", out
    assert re.search(r"max\.message\.bytes=2097152 .*DYNAMIC_TOPIC_CONFIG", out), out


def test_consumer_groups_describe_shows_classic_and_consumer_protocol_groups(cli: Cli) -> None:
    """kafka-consumer-groups --describe (offsets, --members, --state) of a KIP-848 group
    (ConsumerGroupDescribe) and of a classic one (DescribeGroups, after the tool finds it is not
    a consumer group), both with a live member."""
    import threading

    from confluent_kafka import Consumer

    cli.topics("--create", "--topic", "cli-kip848", "--partitions", "4")
    cli.produce("cli-kip848", [f"v{i}" for i in range(20)])
    stop = threading.Event()
    consumed: dict[str, int] = {"cli-new": 0, "cli-classic": 0}

    def member(group: str, protocol: str) -> None:
        c = Consumer(
            {
                "bootstrap.servers": cli.broker.bootstrap,
                "group.id": group,
                "group.protocol": protocol,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        c.subscribe(["cli-kip848"])
        while not stop.is_set():
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                consumed[group] += 1
                c.commit(m, asynchronous=False)
        c.close()

    threads = [
        threading.Thread(target=member, args=("cli-new", "consumer")),
        threading.Thread(target=member, args=("cli-classic", "classic")),
    ]
    for t in threads:
        t.start()
    try:
        import time

        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and min(consumed.values()) < 20:
            time.sleep(0.2)
        assert consumed == {"cli-new": 20, "cli-classic": 20}, consumed
        for group in ("cli-new", "cli-classic"):
            out = cli.groups("--describe", "--group", group)
            rows = group_rows(out, group)
            assert sorted(rows) == [("cli-kip848", p) for p in range(4)], out
            # the console producer may put every record in one partition: "-" has no commit
            committed = [r["CURRENT-OFFSET"] for r in rows.values()]
            assert sum(int(c) for c in committed if c != "-") == 20, out
            for r in rows.values():
                assert r["CURRENT-OFFSET"] == r["LOG-END-OFFSET"] or r["LOG-END-OFFSET"] == "0"
                assert r["CONSUMER-ID"] != "-", out
        state = cli.groups("--describe", "--group", "cli-new", "--state")
        assert re.search(r"cli-new\s+.*\buniform\b.*\bStable\b", state), state
        state = cli.groups("--describe", "--group", "cli-classic", "--state")
        assert re.search(r"cli-classic\s+.*\brange\b.*\bStable\b", state), state
        members = cli.groups("--describe", "--group", "cli-new", "--members", "--verbose")
        assert "cli-kip848:0,1,2,3" in members.replace(" ", ""), members
        listed = cli.groups("--list", "--type")
        assert re.search(r"cli-new\s+Consumer", listed), listed
        assert re.search(r"cli-classic\s+Classic", listed), listed
    finally:
        stop.set()
        for t in threads:
            t.join(30)
