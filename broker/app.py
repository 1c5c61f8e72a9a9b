"""The broker: configuration, storage and the Kafka listener wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from pathlib import Path

from broker.broker_configs import BrokerSettings
from broker.config import BrokerConfig
from broker.console.http import ConsoleHttp
from broker.console.source import ConsoleSource
from broker.fetch_sessions import FetchSessionCache
from broker.groups.committed import OFFSETS_TOPIC, CommittedOffsets
from broker.groups.consumer_coordinator import ConsumerGroups
from broker.groups.consumer_group import ConsumerSettings
from broker.groups.coordinator import GroupCoordinator, GroupSettings
from broker.groups.offset_store import OffsetStore
from broker.groups.share_coordinator import ShareGroups
from broker.groups.share_persister import SharePersister
from broker.groups.share_state import ShareDefaults, ShareStates
from broker.handlers import HANDLERS
from broker.handlers.context import HandlerContext
from broker.leadership import BrokerAddress, EmbeddedLeadership, Leadership
from broker.links.http import PREFIX as LINKS_PREFIX
from broker.links.http import LinksHttp
from broker.links.metrics import LinkCollector
from broker.links.service import LinkService
from broker.log.manager import ClusterLink, LogManager, wal_directory
from broker.log.partition import Partition
from broker.log.topics import TopicState
from broker.metadata_store import MetadataStore
from broker.metrics.counters import BrokerMetrics
from broker.metrics.http import MetricsHttp
from broker.metrics.loop_lag import LoopLag
from broker.metrics.state import StateCollector
from broker.peers import Peers, PeerSecurity
from broker.replay.core import Replayer
from broker.replay.http import PREFIX, ReplayHttp
from broker.replay.leader_tail import LeaderTail
from broker.replay.sources import BucketSource, LogSource
from broker.security.audit import Audit
from broker.security.audit_topic import AuditTopic
from broker.security.gate import Authenticator, AuthSettings, FailureLimiter
from broker.security.guard import Security, parse_super_users
from broker.security.oauth import JwksValidator, OAuthSettings
from broker.security.quota_gate import QuotaGate
from broker.security.quotas import QuotaManager, QuotaWindow
from broker.security.sasl import parse_mechanisms
from broker.security.tls import client_context, load_certificates, server_context
from broker.server import ConnectionLimits, Server
from broker.txn.coordinator import TransactionCoordinator, TxnSettings
from broker.txn.markers import MarkerWriter
from broker.txn.table import TRANSACTION_TOPIC, TxnTable
from broker.zone_reads import BucketReplicas, Zones
from s3stream.counting_store import CountingStore
from s3stream.open_store import store_from_url

log = logging.getLogger(__name__)

# zone-aware reads: how stale a broker's index of partitions it does not lead may be, and
# the memory for the object blocks it serves from them
REPLICA_INDEX_REFRESH_S = 1.0
REPLICA_CACHE_BYTES = 64 * 1024 * 1024


def _oauth_validator(config: BrokerConfig, mechanisms: list[str]) -> JwksValidator | None:
    if "OAUTHBEARER" not in mechanisms:
        return None
    if not config.sasl_oauthbearer_jwks_file:
        raise ValueError("OAUTHBEARER needs --sasl-oauthbearer-jwks-file")
    audience = config.sasl_oauthbearer_expected_audience
    return JwksValidator(
        OAuthSettings(
            config.sasl_oauthbearer_jwks_file,
            tuple(a.strip() for a in audience.split(",") if a.strip()),
            config.sasl_oauthbearer_expected_issuer,
            config.sasl_oauthbearer_sub_claim_name,
        )
    )


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.store = CountingStore(
            store_from_url(
                config.object_store_url,
                endpoint=config.s3_endpoint or None,
                region=config.s3_region,
                path_style=config.s3_path_style,
            )
        )
        self.cluster = None
        self.leadership: Leadership = EmbeddedLeadership(config)
        if config.etcd:
            from broker.cluster.leadership import ClusterLeadership
            from broker.cluster.node import ClusterNode

            self.cluster = ClusterNode(config, self.store)
            self.leadership = ClusterLeadership(self.cluster)
        meta = self.cluster.meta if self.cluster is not None else MetadataStore(self.store)
        # Kafka's names for the settings, with the live broker defaults from the metadata
        self.settings = BrokerSettings(config, meta, wal_directory(config.data_dir))
        self.metrics = BrokerMetrics()  # before the log, which reports into it
        committed = CommittedOffsets()  # before the log, which replays into it
        txn_table = TxnTable()  # likewise
        self.logs = LogManager(
            config.data_dir,
            self.store,
            meta,
            tail_cache_bytes=config.tail_cache_bytes,
            wal_segment_bytes=config.wal_segment_bytes,
            objects=config.object_tier(),
            topic_defaults=self.settings.topic_defaults,
            broker_id=config.broker_id,
            cluster=(
                ClusterLink(self.cluster.lease_ok, self.cluster.orphans.keep)
                if self.cluster is not None
                else None
            ),
            on_partition_dropped=self._partition_dropped,
            internal_replayers={
                OFFSETS_TOPIC: committed.replay,
                TRANSACTION_TOPIC: txn_table.replay,
            },
            # __consumer_offsets keeps its own snapshots (they also free the WAL, which
            # the cleaner, working on uploaded data only, cannot)
            cleaned_internal_topics=frozenset({TRANSACTION_TOPIC}),
            observer=self.metrics,
            cleaner=config.cleaner(),
        )
        self.follower = None
        if self.cluster is not None:
            from broker.cluster.follower import PartitionFollower

            self.follower = PartitionFollower(self.cluster, self.logs, self.store)
        self.offsets = OffsetStore(
            self.logs, committed, config.offsets_topic_num_partitions, self.leadership.may_ack
        )
        consumer_groups = ConsumerGroups(
            ConsumerSettings(
                heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
                session_timeout_ms=config.group_consumer_session_timeout_ms,
                assignors=tuple(a.strip() for a in config.group_consumer_assignors.split(",")),
            ),
            self.offsets.store_consumer_group,
            self.offsets.consumer_groups,
        )
        share_defaults = ShareDefaults(
            record_lock_duration_ms=config.group_share_record_lock_duration_ms,
            delivery_count_limit=config.group_share_delivery_count_limit,
            max_record_locks=config.group_share_partition_max_record_locks,
        )
        share_groups = ShareGroups(
            ConsumerSettings(
                heartbeat_interval_ms=config.group_share_heartbeat_interval_ms,
                session_timeout_ms=config.group_share_session_timeout_ms,
            ),
            self.offsets.store_share_group,
            self.offsets.share_groups,
            share_defaults,
        )
        self.peers = Peers(f"strata-broker-{config.broker_id}", self._peer_security())
        persister = SharePersister(
            self._coordinates,
            self._coordinator_of,
            self.peers.call,
            self.offsets.store_share_states,
            self.offsets.share_states,
        )
        self.shares = ShareStates(
            share_defaults,
            share_groups.configs,
            persister.write,
            self.offsets.share_states,
            persister,
        )
        self.groups = GroupCoordinator(
            GroupSettings(
                min_session_timeout_ms=config.group_min_session_timeout_ms,
                max_session_timeout_ms=config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            ),
            consumer_groups,
            share_groups,
            self.offsets,
        )
        self.txn_markers = MarkerWriter(self.logs, self.leadership, self.offsets, self.peers)
        self.transactions = TransactionCoordinator(
            self.logs,
            txn_table,
            self.txn_markers,
            self.leadership,
            self.logs.allocate_producer_id,
            TxnSettings(
                partitions=config.transaction_state_log_num_partitions,
                segment_bytes=config.transaction_state_log_segment_bytes,
                max_timeout_ms=config.transaction_max_timeout_ms,
                id_expiration_ms=config.transactional_id_expiration_ms,
                abort_interval_ms=config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
                crash_point=config.crash_point,
                one_log=self.cluster is None,
            ),
        )
        groups = self.groups
        self.links = LinkService(
            meta,
            self.logs,
            self.leadership,
            self.offsets,
            group_active=lambda g: (grp := groups.group(g)) is not None and not grp.is_empty(),
        )
        replay = self._replay_http()
        self.console_peers = Peers(f"strata-console-{config.broker_id}")
        self.metrics_http = MetricsHttp(
            self.metrics,
            {PREFIX: replay.app, LINKS_PREFIX: LinksHttp(self.links).app},
            fallback=self._console(replay).app,
        )
        self.loop_lag = LoopLag(self.metrics.loop_lag.observe)
        self.fetch_sessions = FetchSessionCache(config.max_incremental_fetch_session_cache_slots)
        LinkCollector(self.links, self.metrics.registry, self.metrics_http.on_loop)
        StateCollector(
            self.metrics,
            self.metrics_http.on_loop,
            logs=self.logs,
            store=self.store,
            groups=self.groups,
            offsets=self.offsets,
            transactions=self.transactions,
            cluster=self.cluster,
            follower=self.follower,
            shares=self.shares,
            fetch_sessions=self.fetch_sessions,
        )
        self.listeners = config.listeners()
        self.ssl_context = None
        if any(lst.tls for lst in self.listeners):
            self.ssl_context = server_context(
                config.ssl_certfile, config.ssl_keyfile, config.ssl_cafile, config.ssl_client_auth
            )
        audit = Audit(
            self.metrics.registry,
            (
                AuditTopic(self.logs, config.broker_id, config.audit_topic_num_partitions)
                if config.audit_topic
                else None
            ),
        )
        self.security = Security(
            meta,
            audit,
            authorizer=config.authorizer,
            super_users=parse_super_users(config.super_users),
            allow_if_no_acl=config.allow_everyone_if_no_acl_found,
        )
        self.mechanisms = parse_mechanisms(config.sasl_enabled_mechanisms)
        authenticator = Authenticator(
            AuthSettings(
                tuple(self.mechanisms),
                config.sasl_server_max_receive_size,
                config.connection_failed_authentication_delay_ms / 1000,
                config.connections_max_reauth_ms,
            ),
            self.security.credential,
            audit,
            FailureLimiter(),
            _oauth_validator(config, self.mechanisms),
        )
        context = HandlerContext(
            logs=self.logs,
            groups=self.groups,
            offsets=self.offsets,
            leadership=self.leadership,
            settings=self.settings,
            counters=self.metrics,
            transactions=self.transactions,
            txn_markers=self.txn_markers,
            zones=Zones(
                config.rack,
                # cluster mode: partitions led elsewhere are read from the bucket for
                # clients in this broker's rack (embedded: this broker leads everything)
                BucketReplicas(self.store, REPLICA_INDEX_REFRESH_S, REPLICA_CACHE_BYTES)
                if self.cluster is not None
                else None,
            ),
            security=self.security,
            shares=self.shares,
            fetch_sessions=self.fetch_sessions,
        )
        limits = ConnectionLimits(
            max_request_bytes=config.max_request_bytes,
            max_inflight_requests=config.max_inflight_per_connection,
            max_inflight_bytes=config.max_inflight_bytes_per_connection,
        )
        quotas = QuotaGate(
            meta,
            QuotaManager(QuotaWindow(config.quota_window_num, config.quota_window_size_seconds)),
        )
        self.server = Server(context, HANDLERS, limits, self.metrics, authenticator, quotas)
        self.port: int | None = None

    async def start(self) -> None:
        # first, so /healthz answers and /readyz says 503 while the WAL is replayed
        self.metrics_port = self.metrics_http.start(self.config.http_address)
        self.loop_lag.start()
        await self.store.open()
        if self.cluster is not None:
            await self.cluster.join()
        if self.cluster is not None:
            await self.logs.open(self.cluster.leads, self.cluster.awaited)
        else:
            await self.logs.open()
        await self.offsets.ensure_topic()
        await self.transactions.ensure_topic()
        for group_id in {*self.offsets.offsets, *self.offsets.group_types}:
            if group_id in self.offsets.consumer_groups:
                continue  # a KIP-848 group, restored when used
            group = self.groups.group(group_id, create=True)  # empty, as in Kafka after a restart
            assert group is not None
            group.protocol_type = self.offsets.group_types.get(group_id)
        self.groups.start()
        self.groups.consumer.start()
        self.groups.share.start()
        self.shares.start()
        self.transactions.start()  # finishes transactions a crash left prepared
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        if self.config.sasl_users_file:
            await self.security.bootstrap_users(Path(self.config.sasl_users_file), self.mechanisms)
        self.bound = await self.server.start(self.listeners, self.ssl_context)
        self.port = self.bound[0].port
        if self.cluster is not None:
            assert self.follower is not None
            await self.follower.start()
            await self.cluster.start()
        self.links.start()  # after the log and the groups: mirrors append, offsets sync
        self.metrics.ready = True
        # what start-up built (modules, kio's schema classes, the replayed log's indexes)
        # lives as long as the process: out of the collector's sight, a full collection no
        # longer walks it (71-370 ms on the loop before, about 0 after: measured here)
        gc.collect()
        gc.freeze()
        log.info(
            "Strata broker %d listening on %s, WAL in %s, objects in %s, durability %s, %s, "
            "authorizer %s",
            self.config.broker_id,
            ", ".join(
                f"{b.name}://{b.host}:{b.port} ({b.protocol}, advertised "
                f"{b.advertised_host}:{b.advertised_port})"
                for b in self.bound
            ),
            self.config.data_dir,
            self.store.describe(),
            self.config.durability,
            f"cluster {self.config.cluster_name} via etcd {self.config.etcd}"
            if self.cluster
            else "embedded (single broker)",
            self.config.authorizer,
        )

    async def stop(self) -> None:
        log.info("shutting down")
        self.metrics.ready = False
        self._housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._housekeeping
        await self.links.stop()
        if self.cluster is not None:
            assert self.follower is not None
            await self.follower.stop()  # hand the partitions over while clients can follow
            await self.cluster.stop()
        await self.server.stop()
        await self.transactions.stop()
        await self.peers.close()
        await self.console_peers.close()
        await self.groups.stop()
        await self.groups.consumer.stop()
        await self.groups.share.stop()
        await self.shares.stop()
        await self.logs.close()
        await self.store.close()
        await self.metrics_http.stop()
        self.loop_lag.stop()
        log.info("stopped")

    async def reload_certificates(self) -> None:
        """SIGHUP: read the certificate, key and CA files again; new TLS connections use
        them, open ones keep theirs."""
        c = self.config
        if self.ssl_context is None:
            return
        try:
            # checked on a spare context in a thread first: a bad pair must leave the live
            # context untouched
            await asyncio.to_thread(
                server_context, c.ssl_certfile, c.ssl_keyfile, c.ssl_cafile, c.ssl_client_auth
            )
            # then loaded on the loop thread, where asyncio runs the TLS handshakes: a
            # handshake never sees the live context half reloaded (small files, ~1 ms)
            load_certificates(self.ssl_context, c.ssl_certfile, c.ssl_keyfile, c.ssl_cafile)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            log.error("certificate reload failed, keeping the old ones: %s", e)
            return
        log.info("reloaded the TLS certificates from %s", c.ssl_certfile)

    async def _housekeep(self) -> None:
        """Retention, compaction of committed offsets and of objects, deletion of objects
        nothing needs, and WAL trimming, periodically."""
        interval = self.config.retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.logs.enforce_retention()
                await self.offsets.compact()
                await self.offsets.expire_offsets(
                    int(self.config.offsets_retention_minutes * 60_000),
                    self.groups.emptied_at_ms,
                    int(time.time() * 1000),
                )
                await self.logs.maintain_objects()
            except Exception:
                log.exception("housekeeping failed; retrying in %.0fs", interval)

    def _offsets_partition(self, group_id: str):
        topic = self.logs.topics.get(OFFSETS_TOPIC)
        return None if topic is None else topic.partitions[self.offsets.partition_for(group_id)]

    def _coordinates(self, group_id: str) -> bool:
        p = self._offsets_partition(group_id)
        return p is not None and self.leadership.serves(p)

    def _coordinator_of(self, group_id: str) -> BrokerAddress | None:
        p = self._offsets_partition(group_id)
        if p is None:
            return None
        leader, _ = self.leadership.leader_of(p)
        return next((b for b in self.leadership.brokers() if b.broker_id == leader), None)

    def _peer_security(self) -> PeerSecurity:
        """How this broker calls its peers: on the inter-broker listener (the first by
        default), with TLS and a SCRAM login where that listener wants them."""
        c = self.config
        listeners = c.listeners()
        name = c.inter_broker_listener_name.upper() or listeners[0].name
        lst = next((x for x in listeners if x.name == name), None)
        if lst is None:
            raise ValueError(f"--inter-broker-listener-name {name} names no listener")
        tls = client_context(c.ssl_certfile, c.ssl_keyfile, c.ssl_cafile) if lst.tls else None
        if lst.sasl and not c.inter_broker_user:
            raise ValueError(
                f"the inter-broker listener {name} is {lst.protocol}: set --inter-broker-user "
                "and --inter-broker-password"
            )
        user = c.inter_broker_user if lst.sasl else ""
        return PeerSecurity(name, tls, user, c.inter_broker_password if lst.sasl else "")

    def _replay_http(self) -> ReplayHttp:
        """The replay API over this broker's log (see broker.replay)."""
        tail = LeaderTail(self.leadership, self.peers) if self.cluster is not None else None
        source = LogSource(self.logs, BucketSource(self.store), tail)
        return ReplayHttp(source, Replayer(self.store), self.metrics.replay)

    def _console(self, replay: ReplayHttp) -> ConsoleHttp:
        """The web console (see broker.console), with its own connections to the brokers."""
        source = ConsoleSource(
            self.logs,
            self.leadership,
            self.console_peers,
            self.store,
            replay.replay,
            broker_id=self.config.broker_id,
            cluster_mode=self.cluster is not None,
        )
        metrics = self.metrics
        return ConsoleHttp(source, store_name=self.store.describe(), ready=lambda: metrics.ready)

    def _partition_dropped(self, topic: TopicState, p: Partition) -> None:
        if topic.name == TRANSACTION_TOPIC:
            ids = self.transactions.unload(p.index)
            if ids:
                log.info("no longer coordinating %d transactional ids of %s", len(ids), p)
            return
        if topic.name != OFFSETS_TOPIC:
            return
        groups = self.offsets.unload(p.index)
        groups.update(g for g in self.groups.groups if self.offsets.partition_for(g) == p.index)
        for g in groups:
            self.groups.unload(g)
        if groups:
            log.info("no longer coordinating %d groups of %s", len(groups), p)


async def run(config: BrokerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    import signal

    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def reload() -> None:
        task = asyncio.create_task(broker.reload_certificates(), name="reload-certificates")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await broker.stop()
