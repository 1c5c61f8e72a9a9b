"""Group-level configs of KIP-848 consumer groups and KIP-932 share groups (Kafka's
GroupConfig), for DescribeConfigs and IncrementalAlterConfigs on GROUP resources. Pure:
validation and describe entries.

`consumer.heartbeat.interval.ms` and `consumer.session.timeout.ms` override, per group, the
broker's `group.consumer.heartbeat.interval.ms` and `group.consumer.session.timeout.ms`;
the `share.*` ones the broker's `group.share.*` settings (`share.auto.offset.reset` and
`share.isolation.level` have no broker setting: `latest` and `read_uncommitted`).
"""

from __future__ import annotations

from collections.abc import Mapping

HEARTBEAT = "consumer.heartbeat.interval.ms"
SESSION = "consumer.session.timeout.ms"
SHARE_HEARTBEAT = "share.heartbeat.interval.ms"
SHARE_SESSION = "share.session.timeout.ms"
SHARE_LOCK = "share.record.lock.duration.ms"
SHARE_DELIVERY_LIMIT = "share.delivery.count.limit"
SHARE_MAX_LOCKS = "share.partition.max.record.locks"
SHARE_RESET = "share.auto.offset.reset"
SHARE_ISOLATION = "share.isolation.level"
# group config -> the broker setting it overrides
GROUP_CONFIGS = {
    HEARTBEAT: "group.consumer.heartbeat.interval.ms",
    SESSION: "group.consumer.session.timeout.ms",
    SHARE_HEARTBEAT: "group.share.heartbeat.interval.ms",
    SHARE_SESSION: "group.share.session.timeout.ms",
    SHARE_LOCK: "group.share.record.lock.duration.ms",
    SHARE_DELIVERY_LIMIT: "group.share.delivery.count.limit",
    SHARE_MAX_LOCKS: "group.share.partition.max.record.locks",
    SHARE_RESET: SHARE_RESET,
    SHARE_ISOLATION: SHARE_ISOLATION,
}
# string configs and their values (the rest are positive integers)
CHOICES = {
    SHARE_RESET: ("latest", "earliest"),
    SHARE_ISOLATION: ("read_uncommitted", "read_committed"),
}
STRING_DEFAULTS = {SHARE_RESET: "latest", SHARE_ISOLATION: "read_uncommitted"}
STRING_TYPE = 2
SOURCE_GROUP = 8  # ConfigSource.GROUP_CONFIG
SOURCE_DEFAULT = 5  # DEFAULT_CONFIG
INT_TYPE = 3


class InvalidGroupConfig(ValueError):
    pass


def validate(configs: Mapping[str, str], defaults: Mapping[str, int]) -> dict[str, str]:
    """The group's explicit configs, checked: known names, positive integers or one of the
    allowed strings, and heartbeat intervals below the session timeouts."""
    out = {}
    for name, value in configs.items():
        if name not in GROUP_CONFIGS:
            raise InvalidGroupConfig(f"Unknown group config name: {name}")
        if name in CHOICES:
            v = str(value).strip().lower()
            if v not in CHOICES[name] and not (
                name == SHARE_RESET and v.startswith("by_duration:")
            ):
                raise InvalidGroupConfig(f"{name} must be one of {CHOICES[name]}, not {value!r}")
            out[name] = v
            continue
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise InvalidGroupConfig(f"{name} must be an integer, not {value!r}") from None
        if v <= 0:
            raise InvalidGroupConfig(f"{name} must be positive")
        out[name] = str(v)
    for hb, sess in ((HEARTBEAT, SESSION), (SHARE_HEARTBEAT, SHARE_SESSION)):
        if hb not in out and sess not in out:
            continue
        heartbeat = int(out.get(hb, defaults[hb]))
        session = int(out.get(sess, defaults[sess]))
        if heartbeat >= session:
            raise InvalidGroupConfig(f"{hb} ({heartbeat}) must be below {sess} ({session})")
    if SHARE_LOCK in out and int(out[SHARE_LOCK]) < 1000:
        raise InvalidGroupConfig(f"{SHARE_LOCK} must be at least 1000")
    return out


def describe(
    configs: Mapping[str, str],
    defaults: Mapping[str, int],
    keys: set[str] | None,
    synonyms: bool,
) -> list[dict]:
    out = []
    for name, broker_name in sorted(GROUP_CONFIGS.items()):
        if keys is not None and name not in keys:
            continue
        chain = []
        if name in configs:
            chain.append({"name": name, "value": configs[name], "source": SOURCE_GROUP})
        default = STRING_DEFAULTS.get(name) or str(defaults[name])
        chain.append({"name": broker_name, "value": default, "source": SOURCE_DEFAULT})
        out.append(
            {
                "name": name,
                "value": chain[0]["value"],
                "read_only": False,
                "config_source": chain[0]["source"],
                "is_sensitive": False,
                "synonyms": chain if synonyms else [],
                "config_type": STRING_TYPE if name in CHOICES else INT_TYPE,
                "documentation": None,
            }
        )
    return out
