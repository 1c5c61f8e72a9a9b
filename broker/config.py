"""Broker configuration from defaults, a TOML file, STRATA_* variables and flags.

Each setting has one name in three spellings: `--tail-cache-bytes` on the command
line, `tail_cache_bytes` in the file, `STRATA_TAIL_CACHE_BYTES` in the environment.
Later sources win: defaults < file < environment < command line.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "STRATA_"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class BrokerConfig:
    data_dir: Path = _setting(Path("strata-data"), "directory for the WAL and metadata")
    listen: str = _setting("127.0.0.1:9092", "HOST:PORT to accept Kafka clients on")
    advertised_listener: str = _setting(
        "", "HOST:PORT clients are told to connect to (default: the listen address)"
    )
    broker_id: int = _setting(0, "this broker's node id")
    auto_create_topics: bool = _setting(True, "auto.create.topics.enable")
    num_partitions: int = _setting(1, "num.partitions: partitions of auto-created topics")
    message_max_bytes: int = _setting(1048588, "message.max.bytes: default max.message.bytes")
    log_message_timestamp_type: str = _setting(
        "CreateTime", "log.message.timestamp.type: default message.timestamp.type"
    )
    group_min_session_timeout_ms: int = _setting(6000, "group.min.session.timeout.ms")
    group_max_session_timeout_ms: int = _setting(1_800_000, "group.max.session.timeout.ms")
    group_initial_rebalance_delay_ms: int = _setting(
        3000, "group.initial.rebalance.delay.ms: how long a new group waits for more members"
    )
    offsets_topic_num_partitions: int = _setting(16, "offsets.topic.num.partitions")
    retention_check_interval_ms: int = _setting(
        30_000, "log.retention.check.interval.ms: how often retention and WAL trimming run"
    )
    max_request_bytes: int = _setting(100 * 1024 * 1024, "socket.request.max.bytes")
    tail_cache_bytes: int = _setting(128 * 1024 * 1024, "memory for recently appended batches")
    wal_segment_bytes: int = _setting(64 * 1024 * 1024, "size at which a WAL segment rolls")
    max_inflight_per_connection: int = _setting(
        1024, "requests a connection may have in flight (pipelined, answered in order)"
    )
    max_inflight_bytes_per_connection: int = _setting(
        64 * 1024 * 1024, "request bytes a connection may have in flight before reads pause"
    )
    log_level: str = _setting("INFO", "logging level")
    log_format: str = _setting("text", "log line format: text or json (one object per line)")
    log_levels: str = _setting("", "per-logger levels, e.g. broker.groups=DEBUG,wal=WARNING")
    metrics_listen: str = _setting(
        "", "HOST:PORT for Prometheus /metrics, /healthz and /readyz (default: off)"
    )

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def advertised(self) -> tuple[str, int]:
        addr = self.advertised_listener or self.listen
        host, port = addr.rsplit(":", 1)
        if host in ("", "0.0.0.0", "::"):
            import socket

            host = socket.getfqdn()
        return host, int(port)

    def topic_defaults(self) -> dict[str, str]:
        """Broker settings that stand in as topic-config defaults, where set to something
        other than Kafka's default (so DescribeConfigs reports the true source)."""
        out = {}
        if self.message_max_bytes != 1048588:
            out["max.message.bytes"] = str(self.message_max_bytes)
        if self.log_message_timestamp_type != "CreateTime":
            out["message.timestamp.type"] = self.log_message_timestamp_type
        return out


def _convert(name: str, kind: Any, raw: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else kind.__name__
    if "bool" in kind_name:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if "int" in kind_name:
        return int(raw)
    if "Path" in kind_name:
        return Path(raw)
    return str(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="TOML file with settings (same names, underscores)"
    )
    for f in fields(BrokerConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        parser.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']} (default: {default}; env {ENV_PREFIX}{f.name.upper()})",
        )


def load(args: argparse.Namespace, environ: dict[str, str] | None = None) -> BrokerConfig:
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    known = {f.name: f for f in fields(BrokerConfig)}
    if config_file:
        with open(config_file, "rb") as fh:
            doc = tomllib.load(fh)
        for key, raw in doc.items():
            name = key.replace("-", "_").replace(".", "_")
            if name not in known:
                raise ValueError(f"{config_file}: unknown setting {key!r}")
            values[name] = raw
    for name in known:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = env_value
        arg_value = getattr(args, name, None)
        if arg_value is not None:
            values[name] = arg_value
    return BrokerConfig(**{n: _convert(n, known[n].type, v) for n, v in values.items()})
