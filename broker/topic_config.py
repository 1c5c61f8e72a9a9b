"""Topic-level configuration: the keys Kafka knows, their defaults, and validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

ConfigValue = str


def _int(min_value: int) -> Callable[[str], None]:
    def check(v: str) -> None:
        n = int(v)
        if n < min_value:
            raise ValueError(f"must be >= {min_value}")

    return check


def _one_of(*allowed: str) -> Callable[[str], None]:
    def check(v: str) -> None:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")

    return check


def _cleanup_policy(v: str) -> None:
    parts = [p.strip() for p in v.split(",") if p.strip()]
    if not parts or any(p not in ("delete", "compact") for p in parts):
        raise ValueError("must be a list of delete and compact")


def _ratio(v: str) -> None:
    if not 0.0 <= float(v) <= 1.0:
        raise ValueError("must be between 0 and 1")


# Kafka's values; any but `producer` makes the broker recompress batches of another codec
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")


def _anything(v: str) -> None:
    return None


# key -> (default, validator). Defaults follow Apache Kafka's.
TOPIC_CONFIGS: dict[str, tuple[str, Callable[[str], None]]] = {
    "cleanup.policy": ("delete", _cleanup_policy),
    "compression.type": ("producer", _one_of(*COMPRESSION_TYPES)),
    "delete.retention.ms": ("86400000", _int(0)),
    "file.delete.delay.ms": ("60000", _int(0)),
    "flush.messages": ("9223372036854775807", _int(1)),
    "flush.ms": ("9223372036854775807", _int(0)),
    "follower.replication.throttled.replicas": ("", _anything),  # no followers: no effect
    "index.interval.bytes": ("4096", _int(0)),
    "leader.replication.throttled.replicas": ("", _anything),  # no followers: no effect
    "local.retention.bytes": ("-2", _int(-2)),
    "local.retention.ms": ("-2", _int(-2)),
    "max.compaction.lag.ms": ("9223372036854775807", _int(1)),
    "max.message.bytes": ("1048588", _int(0)),
    "message.timestamp.after.max.ms": ("9223372036854775807", _int(0)),
    "message.timestamp.before.max.ms": ("9223372036854775807", _int(0)),
    "message.timestamp.type": ("CreateTime", _one_of("CreateTime", "LogAppendTime")),
    "min.cleanable.dirty.ratio": ("0.5", _ratio),
    "min.compaction.lag.ms": ("0", _int(0)),
    "min.insync.replicas": ("1", _int(1)),
    "preallocate": ("false", _one_of("true", "false")),
    "remote.storage.enable": ("false", _one_of("true", "false")),
    "retention.bytes": ("-1", _int(-1)),
    "retention.ms": ("604800000", _int(-1)),
    "segment.bytes": ("1073741824", _int(14)),
    "segment.index.bytes": ("10485760", _int(4)),
    "segment.jitter.ms": ("0", _int(0)),
    "segment.ms": ("604800000", _int(1)),
    "unclean.leader.election.enable": ("false", _one_of("true", "false")),
}


class InvalidConfig(ValueError):
    pass


def validate_topic_configs(configs: dict[str, str | None]) -> dict[str, str]:
    """The explicitly set configs, checked; raises InvalidConfig naming the bad key."""
    out: dict[str, str] = {}
    for key, value in configs.items():
        spec = TOPIC_CONFIGS.get(key)
        if spec is None:
            raise InvalidConfig(f"Unknown topic config name: {key}")
        if value is None:
            raise InvalidConfig(f"Null value not supported for topic config: {key}")
        try:
            spec[1](value)
        except ValueError as e:
            raise InvalidConfig(f"Invalid value {value} for configuration {key}: {e}") from None
        out[key] = value
    return out


def effective(configs: dict[str, str], key: str) -> str:
    return configs.get(key, TOPIC_CONFIGS[key][0])


# DescribeConfigs config_source values
SOURCE_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

# The broker setting that stands in for a topic config when the topic sets none.
BROKER_SYNONYMS = {
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "cleanup.policy": "log.cleanup.policy",
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "min.insync.replicas": "min.insync.replicas",
    "compression.type": "compression.type",
}

# DescribeConfigs config_type values: BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7
_TYPES = {
    "cleanup.policy": 7,
    "follower.replication.throttled.replicas": 7,
    "leader.replication.throttled.replicas": 7,
    "compression.type": 2,
    "message.timestamp.type": 2,
    "preallocate": 1,
    "remote.storage.enable": 1,
    "unclean.leader.election.enable": 1,
    "min.cleanable.dirty.ratio": 6,
    "max.message.bytes": 3,
    "min.insync.replicas": 3,
    "segment.bytes": 3,
    "segment.index.bytes": 3,
    "index.interval.bytes": 3,
}


def describe_topic_configs(
    configs: dict[str, str],
    broker_layers: Sequence[tuple[int, Mapping[str, str]]] = (),
    keys: set[str] | None = None,
    synonyms: bool = False,
) -> list[dict]:
    """DescribeConfigs entries for a topic: each key's value, where it comes from, and
    (with `synonyms`) the chain topic > broker layers (dynamic, then static) > default
    behind it. `broker_layers` is (config_source, topic key -> value) per layer."""
    out = []
    for key, (default, _) in sorted(TOPIC_CONFIGS.items()):
        if keys is not None and key not in keys:
            continue
        chain = []
        if key in configs:
            chain.append({"name": key, "value": configs[key], "source": SOURCE_TOPIC})
        for source, layer in broker_layers:
            if key in layer:
                chain.append(
                    {"name": BROKER_SYNONYMS.get(key, key), "value": layer[key], "source": source}
                )
        chain.append(
            {"name": BROKER_SYNONYMS.get(key, key), "value": default, "source": SOURCE_DEFAULT}
        )
        out.append(
            {
                "name": key,
                "value": chain[0]["value"],
                "read_only": False,
                "config_source": chain[0]["source"],
                "is_sensitive": False,
                "synonyms": chain if synonyms else [],
                "config_type": _TYPES.get(key, 5),
                "documentation": None,
            }
        )
    return out
