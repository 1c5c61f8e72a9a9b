"""Acceptance: Kafka Connect (Apache Kafka's connect-runtime and connect-file, unchanged) as a
distributed worker whose three internal topics (configs, offsets, statuses; compacted) and
sink consumer group live on Strata.

A FileStreamSource -> topic -> FileStreamSink pipeline, created through Connect's REST API,
delivers every line; after the worker restarts, and again after the broker restarts too, the
connectors come back from the config topic and resume from their stored offsets (the source
from the offsets topic, the sink from its committed group offsets): every line arrives once,
in order. A connector deleted through the REST API is gone, also for a restarted worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devkit.broker import BrokerProcess
from devkit.procs import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

BROKER_ARGS = ("--group-initial-rebalance-delay-ms", "300")


def _append(path: Path, start: int, n: int) -> list[str]:
    lines = [f"line {i}: agent step {i} of session {i % 7}" for i in range(start, start + n)]
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))
    return lines


def _sink_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _delivered(sink: Path, expected: list[str], worker, broker: BrokerProcess) -> None:
    ok = wait_for(lambda: len(_sink_lines(sink)) >= len(expected), timeout=90, interval=0.5)
    got = _sink_lines(sink)
    pairs = zip(got, expected, strict=False)
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(expected)))
    assert ok and got == expected, (
        f"sink has {len(got)} lines, expected {len(expected)}; first difference at {first}\n"
        f"--- worker log ---\n{worker.log()[-5000:]}\n--- broker log ---\n{broker.log_tail()}"
    )


def _policies(bootstrap: str) -> dict[str, str]:
    """cleanup.policy of Connect's internal topics, as the worker created them."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    out = {}
    for name in ("configs", "offsets", "status"):
        res = ConfigResource(ConfigResource.Type.TOPIC, f"strata-connect-{name}")
        out[res.name] = admin.describe_configs([res])[res].result(15)["cleanup.policy"].value
    return out


def test_a_file_pipeline_survives_worker_and_broker_restarts(tmp_path: Path) -> None:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH")
    from devkit.connect import ConnectWorker

    port = free_port()
    broker = BrokerProcess(tmp_path / "data", port, *BROKER_ARGS).start()
    worker = ConnectWorker(broker.bootstrap, tmp_path / "connect")
    source, sink = tmp_path / "source.txt", tmp_path / "sink.txt"
    try:
        expected = _append(source, 0, 500)
        worker.start()
        worker.request(
            "POST",
            "/connectors",
            {
                "name": "file-source",
                "config": {
                    "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                    "file": str(source),
                    "topic": "agent-lines",
                    "tasks.max": "1",
                },
            },
        )
        worker.request(
            "POST",
            "/connectors",
            {
                "name": "file-sink",
                "config": {
                    "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                    "file": str(sink),
                    "topics": "agent-lines",
                    "tasks.max": "1",
                },
            },
        )
        assert sorted(worker.request("GET", "/connectors")) == ["file-sink", "file-source"]
        _delivered(sink, expected, worker, broker)
        assert _policies(broker.bootstrap) == {
            "strata-connect-configs": "compact",
            "strata-connect-offsets": "compact",
            "strata-connect-status": "compact",
        }

        # the worker restarts: connectors from the config topic, offsets from where they were
        worker.stop()
        expected += _append(source, 500, 300)
        worker.start()
        assert sorted(worker.request("GET", "/connectors")) == ["file-sink", "file-source"]
        _delivered(sink, expected, worker, broker)

        # the broker restarts too (same data dir and port), then the worker
        worker.stop()
        broker.stop()
        broker = BrokerProcess(tmp_path / "data", port, *BROKER_ARGS).start()
        expected += _append(source, 800, 300)
        worker.start()
        _delivered(sink, expected, worker, broker)
        status = worker.request("GET", "/connectors/file-source/status")
        assert status["connector"]["state"] == "RUNNING", status

        # delete through the REST API: gone now and for the next worker
        worker.request("DELETE", "/connectors/file-source")
        assert wait_for(lambda: worker.request("GET", "/connectors") == ["file-sink"], 30)
        worker.stop()
        worker.start()
        assert worker.request("GET", "/connectors") == ["file-sink"]
    finally:
        worker.stop()
        broker.stop()
