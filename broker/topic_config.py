"""Topic-level configuration: the keys Kafka knows, their defaults, and validation."""

from __future__ import annotations

from collections.abc import Callable

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
    if "compact" in parts:
        raise ValueError("log compaction (cleanup.policy=compact) is not supported by Strata yet")


def _compression(v: str) -> None:
    if v != "producer":
        raise ValueError("Strata keeps batches as the producer compressed them: only 'producer'")


def _anything(v: str) -> None:
    return None


# key -> (default, validator). Defaults follow Apache Kafka's.
TOPIC_CONFIGS: dict[str, tuple[str, Callable[[str], None]]] = {
    "cleanup.policy": ("delete", _cleanup_policy),
    "compression.type": ("producer", _compression),
    "delete.retention.ms": ("86400000", _int(0)),
    "file.delete.delay.ms": ("60000", _int(0)),
    "flush.messages": ("9223372036854775807", _int(1)),
    "flush.ms": ("9223372036854775807", _int(0)),
    "index.interval.bytes": ("4096", _int(0)),
    "local.retention.bytes": ("-2", _int(-2)),
    "local.retention.ms": ("-2", _int(-2)),
    "max.compaction.lag.ms": ("9223372036854775807", _int(1)),
    "max.message.bytes": ("1048588", _int(0)),
    "message.timestamp.after.max.ms": ("9223372036854775807", _int(0)),
    "message.timestamp.before.max.ms": ("9223372036854775807", _int(0)),
    "message.timestamp.type": ("CreateTime", _one_of("CreateTime", "LogAppendTime")),
    "min.cleanable.dirty.ratio": ("0.5", _anything),
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
