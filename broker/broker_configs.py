"""The broker's settings under Kafka's names, and the broker defaults operators change live.

Tools read broker configuration by Kafka's names (`advertised.listeners`,
`log.retention.ms`), so DescribeConfigs on the BROKER resource reports every setting
that has one under it, and Strata's own settings under `strata.`. Each value comes
from the first layer that sets it, as in Kafka:

    DYNAMIC_BROKER_CONFIG (this broker's id)  >  DYNAMIC_DEFAULT_BROKER_CONFIG (name "")
    >  STATIC_BROKER_CONFIG (file, environment, flags)  >  DEFAULT_CONFIG

The dynamic layers live in the cluster metadata document (`broker_configs`), beside
the topics, so they survive a restart and every broker of a cluster sees them; they
are read at each use, so a change applies to the next produce, retention run or
auto-creation without a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from broker.config import BrokerConfig
from broker.topic_config import (
    BROKER_SYNONYMS,
    SOURCE_DEFAULT,
    SOURCE_STATIC_BROKER,
    TOPIC_CONFIGS,
    InvalidConfig,
)

if TYPE_CHECKING:
    from broker.metadata_store import MetadataStore

SOURCE_DYNAMIC_BROKER = 2
SOURCE_DYNAMIC_DEFAULT = 3

# DescribeConfigs config_type values
BOOLEAN, STRING, INT, SHORT, LONG, DOUBLE, LIST = 1, 2, 3, 4, 5, 6, 7

DEFAULT_SCOPE = ""  # the cluster-wide default (`kafka-configs --entity-default`)


class ReadOnlyConfig(InvalidConfig):
    """A setting that only changes with a restart (Kafka: INVALID_REQUEST)."""


@dataclass(frozen=True)
class Setting:
    name: str
    config_type: int
    read: Callable[[BrokerConfig], str | None]  # the value from file/env/flags
    field: str | None = None  # the BrokerConfig field behind it (None: fixed in Strata)
    check: Callable[[str], str] | None = None  # set for the live-alterable ones
    doc: str = ""


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _listener(addr: str) -> str:
    return f"PLAINTEXT://{addr}"


def _check_bool(v: str) -> str:
    if v.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return v.lower()


def _check_int(min_value: int) -> Callable[[str], str]:
    def check(v: str) -> str:
        if int(v) < min_value:
            raise ValueError(f"must be >= {min_value}")
        return str(int(v))

    return check


def _as_topic(topic_key: str) -> Callable[[str], str]:
    """The topic config's own validation, for the broker setting standing in for it."""

    def check(v: str) -> str:
        TOPIC_CONFIGS[topic_key][1](v)
        return v

    return check


def _field(name: str, kind: int, f: str, check=None, doc: str = "") -> Setting:
    def read(c: BrokerConfig) -> str | None:
        value = getattr(c, f)
        if isinstance(value, bool):
            return _bool(value)
        return str(value) if value != "" else None

    return Setting(name, kind, read, f, check, doc)


def _fixed(name: str, kind: int, value: str, check=None, doc: str = "") -> Setting:
    return Setting(name, kind, lambda c: value, None, check, doc)


_LONG_MAX = str(2**63 - 1)


def _advertised(c: BrokerConfig) -> str:
    host, port = c.advertised
    return _listener(f"{host}:{port}")


KAFKA_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "advertised.listeners",
        LIST,
        _advertised,
        "advertised_listener",
        doc="the address clients are told to connect to (--advertised-listener)",
    ),
    Setting(
        "listeners",
        LIST,
        lambda c: _listener(c.listen),
        "listen",
        doc="the address Kafka clients connect to (--listen)",
    ),
    _field(
        "auto.create.topics.enable", BOOLEAN, "auto_create_topics", _check_bool, "auto-creation"
    ),
    _field("num.partitions", INT, "num_partitions", _check_int(1), "partitions of new topics"),
    _fixed("default.replication.factor", SHORT, "1", doc="the bucket is the only replica"),
    _fixed("offsets.topic.replication.factor", SHORT, "1", doc="the bucket is the only replica"),
    _fixed("min.insync.replicas", INT, "1", doc="the bucket is the only replica"),
    _fixed("unclean.leader.election.enable", BOOLEAN, "false", doc="one replica: never unclean"),
    _field(
        "message.max.bytes",
        INT,
        "message_max_bytes",
        _as_topic("max.message.bytes"),
        "largest record batch a topic takes unless it sets max.message.bytes",
    ),
    _field(
        "log.message.timestamp.type",
        STRING,
        "log_message_timestamp_type",
        _as_topic("message.timestamp.type"),
        "message.timestamp.type of topics that set none",
    ),
    _fixed(
        "log.retention.ms",
        LONG,
        TOPIC_CONFIGS["retention.ms"][0],
        _as_topic("retention.ms"),
        "retention.ms of topics that set none",
    ),
    _fixed(
        "log.retention.bytes",
        LONG,
        TOPIC_CONFIGS["retention.bytes"][0],
        _as_topic("retention.bytes"),
        "retention.bytes of topics that set none",
    ),
    _fixed(
        "compression.type",
        STRING,
        TOPIC_CONFIGS["compression.type"][0],
        _as_topic("compression.type"),
        "compression.type of topics that set none",
    ),
    _field("log.retention.check.interval.ms", LONG, "retention_check_interval_ms"),
    # kafka-reassign-partitions sets and clears these; no replication to throttle here
    *(
        _fixed(name, LONG, _LONG_MAX, _check_int(0), "accepted; no effect: no replication")
        for name in (
            "leader.replication.throttled.rate",
            "follower.replication.throttled.rate",
            "replica.alter.log.dirs.io.max.bytes.per.second",
        )
    ),
    _field("offsets.topic.num.partitions", INT, "offsets_topic_num_partitions"),
    _field("offsets.retention.minutes", DOUBLE, "offsets_retention_minutes"),
    _field("transaction.state.log.num.partitions", INT, "transaction_state_log_num_partitions"),
    _field("transaction.max.timeout.ms", INT, "transaction_max_timeout_ms"),
    _field("transactional.id.expiration.ms", INT, "transactional_id_expiration_ms"),
    _field(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        INT,
        "transaction_abort_timed_out_transaction_cleanup_interval_ms",
    ),
    _field("group.initial.rebalance.delay.ms", INT, "group_initial_rebalance_delay_ms"),
    _field("group.min.session.timeout.ms", INT, "group_min_session_timeout_ms"),
    _field("group.max.session.timeout.ms", INT, "group_max_session_timeout_ms"),
    _field("group.consumer.heartbeat.interval.ms", INT, "group_consumer_heartbeat_interval_ms"),
    _field("group.consumer.session.timeout.ms", INT, "group_consumer_session_timeout_ms"),
    _field("group.consumer.assignors", STRING, "group_consumer_assignors"),
    _field("group.share.heartbeat.interval.ms", INT, "group_share_heartbeat_interval_ms"),
    _field("group.share.session.timeout.ms", INT, "group_share_session_timeout_ms"),
    _field("group.share.record.lock.duration.ms", INT, "group_share_record_lock_duration_ms"),
    _field("group.share.delivery.count.limit", INT, "group_share_delivery_count_limit"),
    _field("group.share.partition.max.record.locks", INT, "group_share_partition_max_record_locks"),
    _field("broker.id", INT, "broker_id"),
    _field("node.id", INT, "broker_id"),
    _field("broker.rack", STRING, "rack"),
    _field("socket.request.max.bytes", INT, "max_request_bytes"),
)

# BrokerConfig fields reported under a Kafka name; every other one is `strata.<name>`
_MAPPED = {s.field for s in KAFKA_SETTINGS if s.field} | {"data_dir"}
_DEFAULTS = {f.name: f.default for f in fields(BrokerConfig) if f.default is not MISSING}
# broker setting -> the topic config it stands in for
_TOPIC_KEY = {broker_key: topic_key for topic_key, broker_key in BROKER_SYNONYMS.items()}


def strata_name(field_name: str) -> str:
    return "strata." + field_name.replace("_", ".")


class BrokerSettings:
    """One broker's settings as DescribeConfigs reports them, with the dynamic layers
    read from the metadata document at each use."""

    def __init__(self, config: BrokerConfig, meta: MetadataStore, log_dir: Path) -> None:
        self.config = config
        self.meta = meta
        self.scope = str(config.broker_id)
        settings = list(KAFKA_SETTINGS)
        settings.append(
            Setting(
                "log.dirs",
                STRING,
                lambda c: str(Path(log_dir).resolve()),
                "data_dir",
                doc="the one log directory: the WAL (--data-dir/wal)",
            )
        )
        for f in fields(BrokerConfig):
            if f.name not in _MAPPED:
                settings.append(_field(strata_name(f.name), STRING, f.name, doc=f.metadata["help"]))
        self.settings = {s.name: s for s in settings}
        self.topic_defaults = TopicDefaults(self)

    # --- reading ----------------------------------------------------------------------

    def layers(self, name: str) -> list[tuple[int, str | None]]:
        """(source, value) of every layer that sets `name`, the winning one first."""
        s = self.settings[name]
        dynamic = self.meta.broker_configs
        out: list[tuple[int, str | None]] = []
        for scope, source in (
            (self.scope, SOURCE_DYNAMIC_BROKER),
            (DEFAULT_SCOPE, SOURCE_DYNAMIC_DEFAULT),
        ):
            if name in dynamic.get(scope, {}):
                out.append((source, dynamic[scope][name]))
        static = s.read(self.config)
        if s.field is not None and getattr(self.config, s.field) != _DEFAULTS.get(s.field):
            out.append((SOURCE_STATIC_BROKER, static))
        else:
            out.append((SOURCE_DEFAULT, static))
        return out

    def value(self, name: str) -> str | None:
        return self.layers(name)[0][1]

    @property
    def auto_create_topics(self) -> bool:
        return self.value("auto.create.topics.enable") == "true"

    @property
    def num_partitions(self) -> int:
        return int(self.value("num.partitions") or 1)

    def describe(self, keys: set[str] | None, synonyms: bool) -> list[dict]:
        out = []
        for name, s in self.settings.items():
            if keys is not None and name not in keys:
                continue
            layers = self.layers(name)
            source, value = layers[0]
            out.append(
                {
                    "name": name,
                    "value": value,
                    "read_only": s.check is None,
                    "config_source": source,
                    "is_sensitive": False,
                    "synonyms": [{"name": name, "value": v, "source": src} for src, v in layers]
                    if synonyms
                    else [],
                    "config_type": s.config_type,
                    "documentation": s.doc or None,
                }
            )
        return out

    def topic_default_layers(self) -> list[tuple[int, dict[str, str]]]:
        """The broker layers behind topic configs, by topic key, for DescribeConfigs of
        a topic: only layers that set the value (Kafka's own default comes last)."""
        out: list[tuple[int, dict[str, str]]] = []
        for source in (SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT, SOURCE_STATIC_BROKER):
            layer = {}
            for broker_key, topic_key in _TOPIC_KEY.items():
                if broker_key not in self.settings:
                    continue
                for src, v in self.layers(broker_key):
                    if src == source and v is not None:
                        layer[topic_key] = v
            out.append((source, layer))
        return out

    # --- changing ---------------------------------------------------------------------

    def check_scope(self, resource_name: str) -> str:
        if resource_name not in (DEFAULT_SCOPE, self.scope):
            raise InvalidConfig(f"No broker {resource_name} here: ask that broker")
        return resource_name

    def validated(self, changes: dict[str, str | None]) -> dict[str, str | None]:
        """`changes` (None: back to the static value) checked and normalised; raises
        ReadOnlyConfig or InvalidConfig as Kafka refuses them."""
        fixed = sorted(n for n in changes if n in self.settings and self.settings[n].check is None)
        if fixed:
            raise ReadOnlyConfig(
                f"Cannot update these configs dynamically: Set({', '.join(fixed)})"
            )
        out: dict[str, str | None] = {}
        for name, value in changes.items():
            s = self.settings.get(name)
            if s is None or s.check is None:
                raise InvalidConfig(f"Unknown broker config name: {name}")
            if value is None:
                out[name] = None
                continue
            try:
                out[name] = s.check(value)
            except ValueError as e:
                raise InvalidConfig(
                    f"Invalid value {value} for configuration {name}: {e}"
                ) from None
        return out

    async def alter(
        self, scope: str, edit: Callable[[dict[str, str]], dict[str, str | None]]
    ) -> None:
        """Persist a change of one dynamic layer: `edit(current)` returns the layer's new
        content (checked here); re-applied if cluster mode must retry."""

        def change() -> None:
            current = dict(self.meta.broker_configs.get(scope, {}))
            wanted = self.validated(edit(current))
            layer = {k: v for k, v in wanted.items() if v is not None}
            configs = {k: dict(v) for k, v in self.meta.broker_configs.items()}
            if layer:
                configs[scope] = layer
            else:
                configs.pop(scope, None)
            self.meta.broker_configs = configs

        await self.meta.update(change)


class TopicDefaults(Mapping[str, str]):
    """Topic key -> the broker setting standing in for it where one is set (dynamic or
    static), for TopicRegistry.topic_config: read live, so a change applies at once."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        broker_key = BROKER_SYNONYMS.get(key)
        if broker_key is None or broker_key not in self._settings.settings:
            return default
        source, value = self._settings.layers(broker_key)[0]
        return default if source == SOURCE_DEFAULT or value is None else value

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (k for k in BROKER_SYNONYMS if self.get(k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
