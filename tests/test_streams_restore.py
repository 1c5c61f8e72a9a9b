"""Acceptance: Kafka Streams 4.x restores a keyed aggregation from its compacted changelog.

tests/java/StreamsEosCheck.java with --regroup counts the input by a new key (so Streams writes
a repartition topic, which it purges with DeleteRecords once its records are committed) into a
RocksDB store whose changelog Streams creates with cleanup.policy=compact, under
exactly_once_v2. The application is stopped, its local state directory wiped, more input
written and the application started again: it restores the store from the changelog, and the
counts continue from where they were (each group's final count is exact; no count in the
committed output ever repeats or falls).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from devkit.javaclient import STREAMS_SOURCE, JavaApp, streams_classpath
from devkit.procs import wait_for
from tests.test_java_transactions import (
    BROKER_ARGS,
    _create_topics,
    _group_offsets,
    _produce_input,
    _read_committed,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="`java` is not on PATH"),
    pytest.mark.slow,
    pytest.mark.timeout(360),
]

APP, TOPIC_IN, TOPIC_OUT = "restore-count", "restore-in", "restore-out"
PARTITIONS, KEYS, GROUPS, BATCH = 4, 1000, 100, 20_000


def _start(bootstrap: str, state_dir: Path) -> JavaApp:
    return JavaApp(
        STREAMS_SOURCE,
        "--bootstrap",
        bootstrap,
        "--application-id",
        APP,
        "--input",
        TOPIC_IN,
        "--output",
        TOPIC_OUT,
        "--state-dir",
        str(state_dir),
        "--guarantee",
        "exactly_once_v2",
        "--regroup",
        str(GROUPS),
        "--purge-interval-ms",
        "1000",
        classpath=streams_classpath(),
    )


def _committed(bootstrap: str) -> int:
    try:
        return sum(max(0, o) for o in _group_offsets(bootstrap, APP, TOPIC_IN, PARTITIONS).values())
    except Exception:  # the group is not there yet
        return 0


def _internal_topics(bootstrap: str) -> tuple[str, str]:
    """(the repartition topic, the changelog topic) Streams created."""
    names = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    repartition = [n for n in names if n.startswith(APP) and n.endswith("-repartition")]
    changelog = [n for n in names if n.startswith(APP) and n.endswith("-changelog")]
    assert len(repartition) == len(changelog) == 1, sorted(names)
    return repartition[0], changelog[0]


def _low_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lows"})
    try:
        return [
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
            for p in range(partitions)
        ]
    finally:
        c.close()


def _last_counts(bootstrap: str) -> dict[str, int]:
    """Each group's last committed count in the output."""
    return {
        k: int.from_bytes(v, "big", signed=True)  # Serdes.Long
        for k, v in _read_committed(bootstrap, TOPIC_OUT, PARTITIONS)
    }


def _run_until_counted(app: JavaApp, bootstrap: str, n: int) -> None:
    """Until the input's offsets are committed to `n` and the counts (after the repartition
    topic, a second sub-topology) add up to `n` in the committed output."""

    def done() -> bool:
        if not app.alive():
            return True
        return _committed(bootstrap) >= n and sum(_last_counts(bootstrap).values()) >= n

    assert wait_for(done, 150, interval=2), (
        f"committed {_committed(bootstrap)}, counted {sum(_last_counts(bootstrap).values())} "
        f"of {n}:\n{app.stderr[-3000:]}"
    )
    assert app.alive(), app.stderr[-3000:]


def test_streams_restores_its_store_from_the_changelog_after_the_state_dir_is_wiped(
    broker_factory, tmp_path: Path
) -> None:
    broker = broker_factory(*BROKER_ARGS)
    bootstrap = broker.bootstrap
    state_dir = tmp_path / "streams-state"
    _create_topics(bootstrap, PARTITIONS, TOPIC_IN, TOPIC_OUT)
    _produce_input(bootstrap, TOPIC_IN, BATCH, PARTITIONS, KEYS)

    app = _start(bootstrap, state_dir)
    try:
        _run_until_counted(app, bootstrap, BATCH)
        repartition, changelog = _internal_topics(bootstrap)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        res = ConfigResource(ConfigResource.Type.TOPIC, changelog)
        assert admin.describe_configs([res])[res].result(15)["cleanup.policy"].value == "compact"
        # Streams purges what it consumed from the repartition topic (DeleteRecords)
        assert wait_for(lambda: sum(_low_watermarks(bootstrap, repartition, PARTITIONS)) > 0, 30), (
            app.stderr[-3000:]
        )
        app.proc.terminate()
        app.result(60)
    finally:
        app.kill()

    shutil.rmtree(state_dir)
    _produce_input(bootstrap, TOPIC_IN, BATCH, PARTITIONS, KEYS)
    app = _start(bootstrap, state_dir)
    try:
        _run_until_counted(app, bootstrap, 2 * BATCH)
        app.proc.terminate()
        app.result(60)
    finally:
        app.kill()

    inputs = _read_committed(bootstrap, TOPIC_IN, PARTITIONS)
    assert len(inputs) == 2 * BATCH
    want = Counter(f"g{int(k[1:]) % GROUPS}" for k, _ in inputs)
    last: dict[str, int] = {}
    regressions = []
    for k, v in _read_committed(bootstrap, TOPIC_OUT, PARTITIONS):
        n = int.from_bytes(v, "big", signed=True)  # Serdes.Long
        if k in last and n <= last[k]:
            regressions.append((k, last[k], n))
        last[k] = n
    assert regressions == [], f"{len(regressions)} counts repeated or fell, e.g. {regressions[:5]}"
    # without the restore each group would count only the second half of its input
    wrong = {k: (last.get(k), n) for k, n in want.items() if last.get(k) != n}
    assert wrong == {}, f"{len(wrong)} groups wrong (got, want), e.g. {list(wrong.items())[:5]}"
