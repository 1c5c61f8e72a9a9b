"""Metric families computed at scrape time from the broker's parts, on the event loop
(the broker's dicts change only there)."""

from __future__ import annotations

import gc
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.groups.group import GroupState
from broker.metrics.counters import BrokerMetrics

if TYPE_CHECKING:
    from broker.cluster.follower import PartitionFollower
    from broker.cluster.node import ClusterNode
    from broker.fetch_sessions import FetchSessionCache
    from broker.groups.coordinator import GroupCoordinator
    from broker.groups.offset_store import OffsetStore
    from broker.groups.share_state import ShareStates
    from broker.log.manager import LogManager
    from broker.txn.coordinator import TransactionCoordinator
    from s3stream.counting_store import CountingStore


class StateCollector(Collector):
    def __init__(
        self,
        metrics: BrokerMetrics,
        on_loop: Callable[[Callable[[], list[Metric]]], list[Metric]],
        *,
        logs: LogManager,
        store: CountingStore,
        groups: GroupCoordinator,
        offsets: OffsetStore,
        transactions: TransactionCoordinator,
        cluster: ClusterNode | None,
        follower: PartitionFollower | None,
        shares: ShareStates,
        fetch_sessions: FetchSessionCache | None = None,
    ) -> None:
        """Registers itself with `metrics.registry`; `on_loop(fn)` runs `fn` on the
        event loop and returns its result."""
        self.metrics = metrics
        self._on_loop = on_loop
        self.logs = logs
        self.store = store
        self.groups = groups
        self.offsets = offsets
        self.transactions = transactions
        self.cluster = cluster
        self.follower = follower
        self.shares = shares
        self.fetch_sessions = fetch_sessions
        metrics.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield from self._on_loop(self.families)

    def _share_families(self) -> list[Metric]:
        """Share groups (KIP-932): records in flight per share-partition, and totals."""
        names = {t.record.uuid.bytes: name for name, t in self.logs.topics.items()}
        in_flight = GaugeMetricFamily(
            "strata_share_partition_in_flight_records",
            "Records delivered or waiting to be delivered again, not yet acknowledged",
            labels=["group", "topic", "partition"],
        )
        start = GaugeMetricFamily(
            "strata_share_partition_start_offset",
            "First offset not yet acknowledged or archived",
            labels=["group", "topic", "partition"],
        )
        for (group, tid, index), sp in self.shares.partitions.items():
            labels = [group, names.get(tid, tid.hex()), str(index)]
            in_flight.add_metric(labels, sp.in_flight)
            start.add_metric(labels, sp.start_offset)
        c = self.shares.totals()
        return [
            in_flight,
            start,
            CounterMetricFamily(
                "strata_share_redeliveries",
                "Records delivered again (released, lock expired, or a restart)",
                value=c.redeliveries,
            ),
            CounterMetricFamily(
                "strata_share_lock_expiries",
                "Acquisition locks that expired before an acknowledgement",
                value=c.lock_expiries,
            ),
            CounterMetricFamily(
                "strata_share_delivery_limit_archived",
                "Records archived after group.share.delivery.count.limit deliveries",
                value=c.delivery_limit_archived,
            ),
        ]

    def _object_families(self) -> list[Metric]:
        logs = self.logs
        store = self.store
        up = logs.uploader
        cache = logs.block_cache
        requests = CounterMetricFamily(
            "strata_object_store_requests", "Object-store requests by operation", labels=["op"]
        )
        errors = CounterMetricFamily(
            "strata_object_store_errors", "Object-store requests that failed", labels=["op"]
        )
        for op in ("put", "get", "list", "delete"):
            requests.add_metric([op], store.requests[op])
            errors.add_metric([op], store.errors[op])
        moved = CounterMetricFamily(
            "strata_object_store_bytes", "Bytes moved to and from the store", labels=["direction"]
        )
        moved.add_metric(["up"], store.bytes_up)
        moved.add_metric(["down"], store.bytes_down)
        return [
            requests,
            errors,
            moved,
            GaugeMetricFamily(
                "strata_upload_backlog_bytes",
                "WAL bytes not yet uploaded (produce is refused at the configured bound)",
                value=up.backlog_bytes,
            ),
            CounterMetricFamily("strata_uploads", "Objects uploaded", value=up.uploads),
            CounterMetricFamily(
                "strata_upload_failures", "Failed upload attempts (retried)", value=up.failures
            ),
            GaugeMetricFamily(
                "strata_objects", "Objects in the catalog", value=len(logs.catalog.objects)
            ),
            CounterMetricFamily(
                "strata_compactions", "Object compactions done", value=logs.compactor.compactions
            ),
            CounterMetricFamily(
                "strata_objects_deleted",
                "Objects deleted (retention, compaction, deleted topics)",
                value=logs.compactor.objects_deleted,
            ),
            CounterMetricFamily(
                "strata_block_cache_hits", "Block reads served from memory", value=cache.hits
            ),
            CounterMetricFamily(
                "strata_block_cache_misses", "Block reads that waited on a GET", value=cache.misses
            ),
            GaugeMetricFamily(
                "strata_block_cache_bytes", "Bytes held in the block cache", value=cache.bytes
            ),
        ]

    def _cleaner_families(self) -> list[Metric]:
        cleaner = self.logs.cleaner
        st = cleaner.stats
        ratio = GaugeMetricFamily(
            "strata_log_cleaner_dirty_ratio",
            "Compacted partitions: dirty bytes over cleanable bytes (min.cleanable.dirty.ratio)",
            labels=["topic", "partition"],
        )
        for topic, index, value in cleaner.dirty_ratios():
            ratio.add_metric([topic, str(index)], value)
        return [
            ratio,
            CounterMetricFamily("strata_log_cleaner_runs", "Partition cleans done", value=st.runs),
            CounterMetricFamily(
                "strata_log_cleaner_aborted",
                "Cleans dropped because the partition moved or changed meanwhile",
                value=st.aborted,
            ),
            CounterMetricFamily(
                "strata_log_cleaner_failures",
                "Cleans that failed (the partition is retried after a pause)",
                value=st.failed,
            ),
            CounterMetricFamily(
                "strata_log_cleaner_bytes_read", "Log bytes the cleaner read", value=st.bytes_read
            ),
            CounterMetricFamily(
                "strata_log_cleaner_bytes_written",
                "Object bytes the cleaner wrote",
                value=st.bytes_written,
            ),
            CounterMetricFamily(
                "strata_log_cleaner_dirty_bytes",
                "Dirty log bytes cleaned",
                value=st.dirty_bytes_cleaned,
            ),
            CounterMetricFamily(
                "strata_log_cleaner_records_removed",
                "Records the cleaner removed (superseded, tombstones, aborted, markers)",
                value=st.records_removed,
            ),
            CounterMetricFamily(
                "strata_log_cleaner_seconds", "Time spent in completed cleans", value=st.seconds
            ),
            GaugeMetricFamily(
                "strata_log_cleaner_last_run_timestamp_seconds",
                "When the last clean ended (Unix time; 0: none yet)",
                value=st.last_run_ms / 1000,
            ),
            GaugeMetricFamily(
                "strata_log_cleaner_last_duration_seconds",
                "How long the last clean took",
                value=st.last_duration_s,
            ),
        ]

    def _cluster_families(self) -> list[Metric]:
        node, follower = self.cluster, self.follower
        if node is None or follower is None:
            return []
        c = node.controller
        return [
            GaugeMetricFamily("strata_cluster_brokers", "Live brokers", value=len(node.live())),
            GaugeMetricFamily(
                "strata_controller", "1 if this broker is the controller", value=int(c.active)
            ),
            CounterMetricFamily(
                "strata_partitions_handed_over",
                "Partitions this broker handed to another (moves, shutdown)",
                value=follower.handoffs,
            ),
            CounterMetricFamily(
                "strata_handoff_upload_bytes",
                "Bytes uploaded early to hand partitions over (the WAL's un-uploaded tail)",
                value=self.logs.handoff_upload_bytes,
            ),
            CounterMetricFamily(
                "strata_partitions_adopted",
                "Partitions this broker took over (opened from the bucket)",
                value=follower.adoptions,
            ),
            CounterMetricFamily(
                "strata_controller_moves", "Moves this controller started", value=c.moves_started
            ),
            CounterMetricFamily(
                "strata_controller_failovers",
                "Partitions this controller gave a new leader after their leader left",
                value=c.failovers,
            ),
            CounterMetricFamily(
                "strata_orphaned_batches",
                "Acknowledged batches found here that a failover left out of the log (wal mode)",
                value=node.orphans.kept,
            ),
            CounterMetricFamily(
                "strata_orphaned_batches_recovered",
                "Orphaned batches this broker appended again as their partition's leader",
                value=follower.recovery.recovered,
            ),
            CounterMetricFamily(
                "strata_objects_swept",
                "Objects this controller deleted because no broker's catalog names them",
                value=c.objects_deleted,
            ),
        ]

    def _txn_families(self) -> list[Metric]:
        txns = self.transactions
        ended = CounterMetricFamily(
            "strata_transactions", "Transactions ended by this coordinator", labels=["outcome"]
        )
        ended.add_metric(["commit"], txns.commits)
        ended.add_metric(["abort"], txns.aborts)
        lso_lag = GaugeMetricFamily(
            "strata_partition_lso_lag",
            "High watermark minus last stable offset, for partitions with open transactions",
            labels=["topic", "partition"],
        )
        for name, t in self.logs.topics.items():
            for p in t.partitions:
                if p.held and len(p.txns):
                    lag = p.high_watermark - p.last_stable_offset
                    lso_lag.add_metric([name, str(p.index)], lag)
        return [
            GaugeMetricFamily(
                "strata_transactions_ongoing",
                "Open transactions this broker coordinates",
                value=txns.ongoing(),
            ),
            ended,
            CounterMetricFamily(
                "strata_transaction_timeouts",
                "Transactions aborted for exceeding their timeout",
                value=txns.timeouts,
            ),
            lso_lag,
        ]

    def _fetch_session_families(self) -> list[Metric]:
        cache = self.fetch_sessions
        if cache is None:
            return []
        requests = CounterMetricFamily(
            "strata_fetch_session_requests",
            "Fetch requests by session mode (KIP-227): sessionless, full, incremental, error",
            labels=["mode"],
        )
        for mode, n in cache.requests.items():
            requests.add_metric([mode.value], n)
        errors = CounterMetricFamily(
            "strata_fetch_session_errors",
            "Fetches refused for an unknown session or a wrong session epoch",
            labels=["error"],
        )
        errors.add_metric(["fetch_session_id_not_found"], cache.not_found)
        errors.add_metric(["invalid_fetch_session_epoch"], cache.invalid_epoch)
        return [
            GaugeMetricFamily(
                "strata_fetch_sessions", "Incremental fetch sessions cached", value=len(cache)
            ),
            GaugeMetricFamily(
                "strata_fetch_session_partitions",
                "Partitions held by the cached fetch sessions",
                value=cache.partitions,
            ),
            CounterMetricFamily(
                "strata_fetch_sessions_created", "Fetch sessions opened", value=cache.created
            ),
            CounterMetricFamily(
                "strata_fetch_session_evictions",
                "Fetch sessions evicted to make room for new ones",
                value=cache.evictions,
            ),
            requests,
            errors,
        ]

    def families(self) -> list[Metric]:
        logs = self.logs
        wal = logs.wal
        tail = logs.tail
        out: list[Metric] = [
            GaugeMetricFamily(
                "strata_wal_unsynced_bytes",
                "WAL bytes appended and not yet durable",
                value=wal.end_position - wal.durable_position,
            ),
            GaugeMetricFamily(
                "strata_wal_retained_bytes",
                "Bytes in WAL segments on disk (un-uploaded data, plus whole segments' rest)",
                value=wal.retained_bytes,
            ),
            *self._object_families(),
            *self._share_families(),
            *self._cleaner_families(),
            CounterMetricFamily(
                "strata_tail_cache_hits", "Batch reads served by the tail cache", value=tail.hits
            ),
            CounterMetricFamily(
                "strata_tail_cache_misses",
                "Batch reads that went to the cold store",
                value=tail.misses,
            ),
            GaugeMetricFamily(
                "strata_tail_cache_bytes", "Bytes held in the tail cache", value=tail.bytes
            ),
            GaugeMetricFamily(
                "strata_tail_cache_max_bytes", "The tail cache's budget", value=tail.max_bytes
            ),
            CounterMetricFamily(
                "strata_group_rebalances", "Group rebalances started", value=self.groups.rebalances
            ),
            *self._fetch_session_families(),
            GaugeMetricFamily(
                "strata_gc_frozen_objects",
                "Objects gc.freeze() moved out of the collector's sight after start-up",
                value=gc.get_freeze_count(),
            ),
        ]
        if not self.metrics.ready:
            return out  # topics and offsets are still being replayed, or being shut down
        topics = logs.topics
        partitions = sum(len(t.partitions) for t in topics.values())
        hw = GaugeMetricFamily(
            "strata_partition_high_watermark",
            "End of durable, readable data",
            labels=["topic", "partition"],
        )
        led = 0
        for name, t in topics.items():
            for p in t.partitions:
                if p.held:  # cluster mode: other brokers report their own partitions
                    hw.add_metric([name, str(p.index)], p.high_watermark)
                led += p.leading
        states = Tally(g.state for g in self.groups.groups.values())
        groups = GaugeMetricFamily("strata_consumer_groups", "Groups by state", labels=["state"])
        for state in GroupState:
            if state is not GroupState.DEAD:
                groups.add_metric([state.value], states[state])
        committed = GaugeMetricFamily(
            "strata_consumer_group_committed_offset",
            "Committed offset",
            labels=["group", "topic", "partition"],
        )
        lag = GaugeMetricFamily(
            "strata_consumer_group_lag",
            "High watermark minus committed offset",
            labels=["group", "topic", "partition"],
        )
        for group_id, table in self.offsets.offsets.items():
            for (topic, index), c in table.items():
                t = topics.get(topic)
                if t is None or not 0 <= index < len(t.partitions):
                    continue
                labels = [group_id, topic, str(index)]
                committed.add_metric(labels, c.offset)
                lag.add_metric(labels, max(t.partitions[index].high_watermark - c.offset, 0))
        self.metrics.forget_topics(topics)
        out += [
            GaugeMetricFamily("strata_topics", "Topics, internal ones included", value=len(topics)),
            GaugeMetricFamily(
                "strata_partitions", "Partitions, internal ones included", value=partitions
            ),
            GaugeMetricFamily(
                "strata_leader_partitions", "Partitions this broker leads", value=led
            ),
            *self._cluster_families(),
            *self._txn_families(),
            hw,
            groups,
            committed,
            lag,
        ]
        return out
