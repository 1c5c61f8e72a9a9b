"""Group-level configs of KIP-848 consumer groups (Kafka's GroupConfig), for DescribeConfigs
and IncrementalAlterConfigs on GROUP resources. Pure: validation and describe entries.

`consumer.heartbeat.interval.ms` and `consumer.session.timeout.ms` override, per group, the
broker's `group.consumer.heartbeat.interval.ms` and `group.consumer.session.timeout.ms`.
"""

from __future__ import annotations

from collections.abc import Mapping

HEARTBEAT = "consumer.heartbeat.interval.ms"
SESSION = "consumer.session.timeout.ms"
# group config -> the broker setting it overrides
GROUP_CONFIGS = {
    HEARTBEAT: "group.consumer.heartbeat.interval.ms",
    SESSION: "group.consumer.session.timeout.ms",
}
SOURCE_GROUP = 8  # ConfigSource.GROUP_CONFIG
SOURCE_DEFAULT = 5  # DEFAULT_CONFIG
INT_TYPE = 3


class InvalidGroupConfig(ValueError):
    pass


def validate(configs: Mapping[str, str], defaults: Mapping[str, int]) -> dict[str, str]:
    """The group's explicit configs, checked: known names, positive integers, and a
    heartbeat interval below the session timeout."""
    out = {}
    for name, value in configs.items():
        if name not in GROUP_CONFIGS:
            raise InvalidGroupConfig(f"Unknown group config name: {name}")
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise InvalidGroupConfig(f"{name} must be an integer, not {value!r}") from None
        if v <= 0:
            raise InvalidGroupConfig(f"{name} must be positive")
        out[name] = str(v)
    heartbeat = int(out.get(HEARTBEAT, defaults[HEARTBEAT]))
    session = int(out.get(SESSION, defaults[SESSION]))
    if heartbeat >= session:
        raise InvalidGroupConfig(f"{HEARTBEAT} ({heartbeat}) must be below {SESSION} ({session})")
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
        chain.append({"name": broker_name, "value": str(defaults[name]), "source": SOURCE_DEFAULT})
        out.append(
            {
                "name": name,
                "value": chain[0]["value"],
                "read_only": False,
                "config_source": chain[0]["source"],
                "is_sensitive": False,
                "synonyms": chain if synonyms else [],
                "config_type": INT_TYPE,
                "documentation": None,
            }
        )
    return out
