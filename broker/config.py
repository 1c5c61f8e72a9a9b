"""Broker configuration from defaults, a TOML file, STRATA_* variables and flags.

Each setting has one name in three spellings: `--tail-cache-bytes` on the command
line, `tail_cache_bytes` in the file, `STRATA_TAIL_CACHE_BYTES` in the environment.
Later sources win: defaults < file < environment < command line.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from broker.security.listeners import Listener, parse_listeners
from s3stream.compaction import CompactionSettings
from s3stream.log_cleaner import CleanerSettings
from s3stream.settings import ObjectTierSettings
from s3stream.uploader import UploadSettings

ENV_PREFIX = "STRATA_"


def _setting(default: Any, help: str, repeatable: bool = False) -> Any:
    """A setting; a `repeatable` flag may be given several times (its values are joined
    with commas, as the file and the environment spell a list)."""
    return field(default=default, metadata={"help": help, "repeatable": repeatable})


@dataclass
class BrokerConfig:
    data_dir: Path = _setting(Path("strata-data"), "directory for the WAL and metadata")
    listen: str = _setting("127.0.0.1:9092", "HOST:PORT to accept Kafka clients on")
    listener: str = _setting(
        "",
        "NAME://HOST:PORT, repeatable: the listeners (listeners); PLAINTEXT, SSL, "
        "SASL_PLAINTEXT and SASL_SSL name their protocol (default: --listen as PLAINTEXT)",
        repeatable=True,
    )
    advertised_listener: str = _setting(
        "",
        "[NAME://]HOST:PORT, repeatable: what Metadata tells clients of each listener "
        "(advertised.listeners; default: where it binds)",
        repeatable=True,
    )
    listener_security_protocol_map: str = _setting(
        "", "NAME:PROTOCOL,...: protocols of listeners with other names"
    )
    inter_broker_listener_name: str = _setting(
        "", "cluster mode: the listener brokers call each other on (default: the first)"
    )
    inter_broker_user: str = _setting(
        "", "cluster mode: the SCRAM-SHA-512 user brokers log in as on a SASL inter-broker listener"
    )
    inter_broker_password: str = _setting("", "the password of --inter-broker-user")
    ssl_certfile: str = _setting("", "PEM certificate (chain) of SSL and SASL_SSL listeners")
    ssl_keyfile: str = _setting("", "PEM private key of --ssl-certfile")
    ssl_cafile: str = _setting("", "PEM CA certificates that client certificates are checked with")
    ssl_client_auth: str = _setting(
        "none", "ssl.client.auth: none, requested or required (client certificates)"
    )
    sasl_enabled_mechanisms: str = _setting(
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", "sasl.enabled.mechanisms of SASL listeners"
    )
    sasl_users_file: str = _setting(
        "",
        'TOML file with a [users] table of name = "password": SCRAM credentials are '
        "created at start for users that have none",
    )
    connections_max_reauth_ms: int = _setting(
        0,
        "connections.max.reauth.ms (KIP-368): a SASL session lasts this long (or to its "
        "token's expiry), then the client re-authenticates or its connection is closed; 0: "
        "sessions never end",
    )
    sasl_oauthbearer_jwks_file: str = _setting(
        "", "OAUTHBEARER: the JWKS (JSON) file whose keys sign the accepted JWTs"
    )
    sasl_oauthbearer_expected_audience: str = _setting(
        "", "sasl.oauthbearer.expected.audience: comma-separated; a token must name one"
    )
    sasl_oauthbearer_expected_issuer: str = _setting(
        "", "sasl.oauthbearer.expected.issuer: a token's iss must be it"
    )
    sasl_oauthbearer_sub_claim_name: str = _setting(
        "sub", "sasl.oauthbearer.sub.claim.name: the claim that names the principal"
    )
    sasl_server_max_receive_size: int = _setting(
        524288, "sasl.server.max.receive.size: the largest request before authentication"
    )
    connection_failed_authentication_delay_ms: int = _setting(
        100, "connection.failed.authentication.delay.ms: a failed authentication's answer waits"
    )
    quota_window_num: int = _setting(
        11, "quota.window.num: a client quota's burst is (num - 1) windows of its rate"
    )
    quota_window_size_seconds: float = _setting(
        1.0, "quota.window.size.seconds: the length of one quota window"
    )
    audit_topic: bool = _setting(
        False, "also write every audit event to the internal topic __audit"
    )
    audit_topic_num_partitions: int = _setting(
        16,
        "partitions of __audit when it is created: in cluster mode each broker appends to"
        " one it leads, so it needs at least as many as there are brokers",
    )
    authorizer: str = _setting("none", "none (everything allowed) or acl (Kafka's ACLs)")
    super_users: str = _setting("", "super.users: User:admin;User:ops may do everything")
    allow_everyone_if_no_acl_found: bool = _setting(
        False, "allow.everyone.if.no.acl.found: a resource without ACLs is open to all"
    )
    broker_id: int = _setting(0, "this broker's node id (unique in a cluster)")
    etcd: str = _setting(
        "", "cluster mode: etcd URL(s), http://host:port[,...] (default: embedded, one broker)"
    )
    cluster_name: str = _setting("strata", "cluster mode: the cluster's name (its etcd prefix)")
    rack: str = _setting("", "broker.rack, reported in Metadata")
    lease_ttl_ms: int = _setting(
        6000, "cluster mode: how long a broker that stops answering keeps its partitions"
    )
    max_partition_moves: int = _setting(
        4, "cluster mode: partitions the controller moves at once when balancing"
    )
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
    group_consumer_heartbeat_interval_ms: int = _setting(
        5000, "group.consumer.heartbeat.interval.ms: KIP-848 members' heartbeat interval"
    )
    group_consumer_session_timeout_ms: int = _setting(
        45000, "group.consumer.session.timeout.ms: a silent KIP-848 member is removed after it"
    )
    group_share_heartbeat_interval_ms: int = _setting(
        5000, "group.share.heartbeat.interval.ms: share group members' heartbeat interval"
    )
    group_share_session_timeout_ms: int = _setting(
        45000, "group.share.session.timeout.ms: a silent share group member is removed after it"
    )
    group_share_record_lock_duration_ms: int = _setting(
        30000, "group.share.record.lock.duration.ms: how long a delivered record stays locked"
    )
    group_share_delivery_count_limit: int = _setting(
        5, "group.share.delivery.count.limit: deliveries before a record is archived"
    )
    group_share_partition_max_record_locks: int = _setting(
        2000, "group.share.partition.max.record.locks: records in flight per share-partition"
    )
    group_consumer_assignors: str = _setting(
        "uniform,range", "group.consumer.assignors: broker-side assignors, the first the default"
    )
    offsets_topic_num_partitions: int = _setting(16, "offsets.topic.num.partitions")
    offsets_retention_minutes: float = _setting(
        10080.0,
        "offsets.retention.minutes: an empty group's offsets are deleted this long after its "
        "last commit and its last member left (checked with retention)",
    )
    transaction_state_log_num_partitions: int = _setting(16, "transaction.state.log.num.partitions")
    transaction_state_log_segment_bytes: int = _setting(
        104_857_600,
        "transaction.state.log.segment.bytes: segment.bytes of __transaction_state when it is "
        "created (the unit its log cleaning works on)",
    )
    transaction_max_timeout_ms: int = _setting(
        900_000, "transaction.max.timeout.ms: the longest transaction.timeout.ms accepted"
    )
    transactional_id_expiration_ms: int = _setting(
        604_800_000, "transactional.id.expiration.ms: idle transactional ids are forgotten"
    )
    crash_point: str = _setting(
        "",
        "fault tests only: exit at once, as a kill -9 would, at this point "
        "(txn-after-prepare: a transaction's PrepareCommit/PrepareAbort is durable, no marker yet)",
    )
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = _setting(
        10_000,
        "transaction.abort.timed.out.transaction.cleanup.interval.ms: how often "
        "expired transactions are aborted",
    )
    retention_check_interval_ms: int = _setting(
        30_000, "log.retention.check.interval.ms: how often retention and WAL trimming run"
    )
    max_request_bytes: int = _setting(100 * 1024 * 1024, "socket.request.max.bytes")
    object_store: str = _setting(
        "", "where the log lives: file:///path or s3://bucket[/prefix] (default: DATA_DIR/objects)"
    )
    s3_endpoint: str = _setting("", "S3 endpoint URL (MinIO, moto; default: AWS)")
    s3_region: str = _setting("us-east-1", "S3 region")
    s3_addressing_style: str = _setting(
        "auto", "path, virtual, or auto (path when --s3-endpoint is set)"
    )
    durability: str = _setting(
        "wal", "when a write is acknowledged: wal (after the local fsync) or object (after upload)"
    )
    upload_bytes: int = _setting(32 * 1024 * 1024, "pending WAL bytes that start an upload")
    upload_interval_ms: int = _setting(10_000, "the longest synced data waits for an upload")
    max_upload_backlog_bytes: int = _setting(
        1024 * 1024 * 1024, "WAL bytes waiting for the object store before produce is refused"
    )
    object_block_bytes: int = _setting(1024 * 1024, "block size inside objects (read unit)")
    block_cache_bytes: int = _setting(256 * 1024 * 1024, "memory for object blocks read back")
    readahead_bytes: int = _setting(8 * 1024 * 1024, "bytes one catch-up GET brings")
    read_inflight_bytes: int = _setting(
        64 * 1024 * 1024, "object-store read bytes in flight at once (catch-up budget)"
    )
    compaction_small_object_bytes: int = _setting(
        8 * 1024 * 1024, "objects smaller than this are merged by compaction"
    )
    compaction_min_objects: int = _setting(4, "smallest run of small objects worth merging")
    compaction_max_bytes: int = _setting(64 * 1024 * 1024, "largest object compaction writes")
    log_cleaner_enable: bool = _setting(
        True, "log.cleaner.enable: clean topics whose cleanup.policy includes compact"
    )
    log_cleaner_dedupe_buffer_size: int = _setting(
        128 * 1024 * 1024,
        "log.cleaner.dedupe.buffer.size: memory for the cleaner's key map (bounds one clean)",
    )
    log_cleaner_io_max_bytes_per_second: float = _setting(
        0.0,
        "log.cleaner.io.max.bytes.per.second: the cleaner's byte budget, bytes read per "
        "second of cleaning, to leave CPU and I/O to produce and fetch (0: unlimited)",
    )
    object_delete_delay_ms: int = _setting(
        30_000, "grace before an unneeded object is deleted (reads in flight finish)"
    )
    tail_cache_bytes: int = _setting(128 * 1024 * 1024, "memory for recently appended batches")
    wal_segment_bytes: int = _setting(64 * 1024 * 1024, "size at which a WAL segment rolls")
    max_inflight_per_connection: int = _setting(
        1024, "requests a connection may have in flight (pipelined, answered in order)"
    )
    max_inflight_bytes_per_connection: int = _setting(
        64 * 1024 * 1024, "request bytes a connection may have in flight before reads pause"
    )
    max_incremental_fetch_session_cache_slots: int = _setting(
        1000, "max.incremental.fetch.session.cache.slots: fetch sessions (KIP-227) kept"
    )
    event_loop: str = _setting(
        "auto", "auto (uvloop where installed, else asyncio's), uvloop or asyncio"
    )
    log_level: str = _setting("INFO", "logging level")
    log_format: str = _setting("text", "log line format: text or json (one object per line)")
    log_levels: str = _setting("", "per-logger levels, e.g. broker.groups=DEBUG,wal=WARNING")
    http_listen: str = _setting(
        "",
        "HOST:PORT for HTTP: the web console at /, /metrics, /healthz, /readyz and the "
        "replay API /v1/topics/{topic}/records (default: off)",
    )
    metrics_listen: str = _setting("", "the same as --http-listen (its older name)")

    @property
    def http_address(self) -> str:
        """Where the HTTP listener binds: --http-listen, else --metrics-listen."""
        return self.http_listen or self.metrics_listen

    def listeners(self) -> list[Listener]:
        """The listeners to bind, with their advertised addresses (a wildcard bind
        address advertises this host's name)."""
        out = []
        for lst in parse_listeners(
            self.listener,
            self.listen,
            self.advertised_listener,
            self.listener_security_protocol_map,
        ):
            if lst.advertised_host in ("", "0.0.0.0", "::"):
                import socket

                lst = replace(lst, advertised_host=socket.getfqdn())
            out.append(lst)
        return out

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def advertised(self) -> tuple[str, int]:
        """The first listener's advertised address."""
        first = self.listeners()[0]
        return first.advertised_host, first.advertised_port

    @property
    def object_store_url(self) -> str:
        return self.object_store or (Path(self.data_dir) / "objects").resolve().as_uri()

    def object_tier(self) -> ObjectTierSettings:
        if self.durability not in ("wal", "object"):
            raise ValueError(f"durability must be wal or object, not {self.durability!r}")
        object_mode = self.durability == "object"
        return ObjectTierSettings(
            upload=UploadSettings(
                upload_bytes=self.upload_bytes,
                upload_interval_s=self.upload_interval_ms / 1000,
                max_object_bytes=max(4 * self.upload_bytes, 16 * 1024 * 1024),
                block_bytes=self.object_block_bytes,
                object_mode=object_mode,
                memory_pressure_bytes=max(self.tail_cache_bytes // 2, self.upload_bytes),
            ),
            compaction=CompactionSettings(
                small_object_bytes=self.compaction_small_object_bytes,
                min_objects=self.compaction_min_objects,
                max_bytes=self.compaction_max_bytes,
                block_bytes=self.object_block_bytes,
                delete_delay_s=self.object_delete_delay_ms / 1000,
            ),
            block_cache_bytes=self.block_cache_bytes,
            readahead_bytes=self.readahead_bytes,
            read_inflight_bytes=self.read_inflight_bytes,
            max_backlog_bytes=self.max_upload_backlog_bytes,
        )

    def cleaner(self) -> CleanerSettings:
        return CleanerSettings(
            dedupe_buffer_bytes=self.log_cleaner_dedupe_buffer_size,
            block_bytes=self.object_block_bytes,
            enabled=self.log_cleaner_enable,
            io_max_bytes_per_second=self.log_cleaner_io_max_bytes_per_second,
        )

    @property
    def s3_path_style(self) -> bool:
        if self.s3_addressing_style == "auto":
            return bool(self.s3_endpoint)
        return self.s3_addressing_style == "path"

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
    if "float" in kind_name:
        return float(raw)
    if "Path" in kind_name:
        return Path(raw)
    return str(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="TOML file with settings (same names, underscores)"
    )
    for f in fields(BrokerConfig):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=_help_text(f),
            action="append" if f.metadata.get("repeatable") else "store",
        )


def _help_text(f: Any) -> str:
    """The setting's help, its default once (unless the help already words it, or it is
    empty) and its environment variable."""
    env = f"env {ENV_PREFIX}{f.name.upper()}"
    text = f.metadata["help"]
    default = f.default if f.default is not MISSING else None
    if "default:" in text or default in (None, ""):
        return f"{text} ({env})"
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{text} (default: {shown}; {env})"


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
    for name, value in values.items():
        if isinstance(value, list):  # a repeatable flag, or a TOML array
            values[name] = ",".join(str(v) for v in value)
    return BrokerConfig(**{n: _convert(n, known[n].type, v) for n, v in values.items()})
