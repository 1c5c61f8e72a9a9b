"""The `strata` command: help, and settings from a config file and the environment."""

from __future__ import annotations

import os
import subprocess
import sys

from devkit.broker import BrokerProcess
from devkit.procs import free_port
from tests.wire import WireClient


def test_help_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--data-dir", "--listen", "--advertised-listener", "--config", "--num-partitions"):
        assert flag in out
    assert "STRATA_DATA_DIR" in out


def _partitions_of_auto_created(bootstrap: str) -> tuple[int, str, int]:
    with WireClient(bootstrap) as c:
        md = c.call(
            3,
            9,
            {
                "topics": [{"name": "auto"}],
                "allow_auto_topic_creation": True,
                "include_cluster_authorized_operations": False,
                "include_topic_authorized_operations": False,
            },
        )
    return len(md.topics[0].partitions), md.brokers[0].host, md.brokers[0].port


def test_config_file_env_and_flags_layer(tmp_path, monkeypatch) -> None:
    port = free_port()
    config = tmp_path / "strata.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        "num_partitions = 4\n"
        'advertised_listener = "kafka.example.internal:19092"\n'
    )
    monkeypatch.setenv("STRATA_CONFIG", str(config))
    monkeypatch.setenv("STRATA_NUM_PARTITIONS", "5")  # environment beats the file
    b = BrokerProcess(tmp_path / "data", port)
    b.start()
    try:
        assert _partitions_of_auto_created(b.bootstrap) == (5, "kafka.example.internal", 19092)
    finally:
        b.stop()
    assert os.path.isdir(tmp_path / "data" / "wal")


def test_bad_setting_is_a_clear_error(tmp_path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--num-partitions",
            "lots",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "num_partitions" in r.stderr or "lots" in r.stderr


def test_json_logs_with_per_logger_levels(tmp_path) -> None:
    """One JSON object per line; a quieted logger stays quiet, others keep INFO."""
    import json

    b = BrokerProcess(
        tmp_path / "data",
        None,
        "--log-format",
        "json",
        "--log-levels",
        "broker.log=WARNING",
    )
    b.start()
    try:
        with WireClient(b.bootstrap) as c:
            c.create_topic("logged", 1)  # broker.log.topics logs this at INFO
    finally:
        b.stop()
    events = [json.loads(line) for line in b.log().splitlines() if line.startswith("{")]
    assert events, b.log()
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)
    assert any(e["logger"] == "broker.app" and "listening" in e["msg"] for e in events)
    assert not any(e["logger"].startswith("broker.log.") for e in events)


def test_help_names_each_default_once_and_version() -> None:
    """`strata serve --help` never shows an empty or a second "(default: ...)"."""
    out = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "1000"},  # one line per flag
    ).stdout
    flags = [ln for ln in out.splitlines() if ln.strip().startswith("--")]
    assert len(flags) > 30
    for line in flags:
        assert "(default: ;" not in line and "(default: )" not in line, line
        assert line.count("default:") <= 1, line
    assert (
        "HOST:PORT to accept Kafka clients on (default: 127.0.0.1:9092; env STRATA_LISTEN)" in out
    )
    version = subprocess.run(
        [sys.executable, "-m", "broker", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("strata ")
