"""The broker: configuration, storage and the Kafka listener wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from broker.broker_configs import BrokerSettings
from broker.config import BrokerConfig
from broker.console.http import ConsoleHttp
from broker.console.source import ConsoleSource
from broker.groups.committed import OFFSETS_TOPIC, CommittedOffsets
from broker.groups.coordinator import GroupCoordinator, GroupSettings
from broker.groups.offset_store import OffsetStore
from broker.handlers import HANDLERS
from broker.handlers.context import HandlerContext
from broker.leadership import EmbeddedLeadership, Leadership
from broker.links.http import PREFIX as LINKS_PREFIX
from broker.links.http import LinksHttp
from broker.links.service import LinkService
from broker.log.manager import ClusterLink, LogManager, wal_directory
from broker.log.partition import Partition
from broker.log.topics import TopicState
from broker.metadata_store import MetadataStore
from broker.metrics.counters import BrokerMetrics
from broker.metrics.http import MetricsHttp
from broker.metrics.state import StateCollector
from broker.peers import Peers
from broker.replay.core import Replayer
from broker.replay.http import PREFIX, ReplayHttp
from broker.replay.leader_tail import LeaderTail
from broker.replay.sources import BucketSource, LogSource
from broker.server import ConnectionLimits, Server
from broker.txn.coordinator import TransactionCoordinator, TxnSettings
from broker.txn.markers import MarkerWriter
from broker.txn.table import TRANSACTION_TOPIC, TxnTable
from s3stream.counting_store import CountingStore
from s3stream.open_store import store_from_url

log = logging.getLogger(__name__)


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
            observer=self.metrics,
        )
        self.follower = None
        if self.cluster is not None:
            from broker.cluster.follower import PartitionFollower

            self.follower = PartitionFollower(self.cluster, self.logs, self.store)
        self.offsets = OffsetStore(
            self.logs, committed, config.offsets_topic_num_partitions, self.leadership.may_ack
        )
        self.groups = GroupCoordinator(
            GroupSettings(
                min_session_timeout_ms=config.group_min_session_timeout_ms,
                max_session_timeout_ms=config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
            )
        )
        self.peers = Peers(f"strata-broker-{config.broker_id}")
        self.txn_markers = MarkerWriter(self.logs, self.leadership, self.offsets, self.peers)
        self.transactions = TransactionCoordinator(
            self.logs,
            txn_table,
            self.txn_markers,
            self.leadership,
            self.logs.allocate_producer_id,
            TxnSettings(
                partitions=config.transaction_state_log_num_partitions,
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
        )
        limits = ConnectionLimits(
            max_request_bytes=config.max_request_bytes,
            max_inflight_requests=config.max_inflight_per_connection,
            max_inflight_bytes=config.max_inflight_bytes_per_connection,
        )
        self.server = Server(context, HANDLERS, limits, self.metrics)
        self.port: int | None = None

    async def start(self) -> None:
        # first, so /healthz answers and /readyz says 503 while the WAL is replayed
        self.metrics_port = self.metrics_http.start(self.config.http_address)
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
            group = self.groups.group(group_id, create=True)  # empty, as in Kafka after a restart
            assert group is not None
            group.protocol_type = self.offsets.group_types.get(group_id)
        self.groups.start()
        self.transactions.start()  # finishes transactions a crash left prepared
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        self.port = await self.server.start(self.config.listen_host, self.config.listen_port)
        if self.cluster is not None:
            assert self.follower is not None
            await self.follower.start()
            await self.cluster.start()
        self.links.start()  # after the log and the groups: mirrors append, offsets sync
        self.metrics.ready = True
        host, port = self.config.advertised
        log.info(
            "Strata broker %d listening on %s:%d (advertised %s:%d), WAL in %s, "
            "objects in %s, durability %s, %s",
            self.config.broker_id,
            self.config.listen_host,
            self.port,
            host,
            port,
            self.config.data_dir,
            self.store.describe(),
            self.config.durability,
            f"cluster {self.config.cluster_name} via etcd {self.config.etcd}"
            if self.cluster
            else "embedded (single broker)",
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
        await self.logs.close()
        await self.store.close()
        await self.metrics_http.stop()
        log.info("stopped")

    async def _housekeep(self) -> None:
        """Retention, compaction of committed offsets and of objects, deletion of objects
        nothing needs, and WAL trimming, periodically."""
        interval = self.config.retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.logs.enforce_retention()
                await self.offsets.compact()
                await self.logs.maintain_objects()
            except Exception:
                log.exception("housekeeping failed; retrying in %.0fs", interval)

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
    await stop.wait()
    await broker.stop()
