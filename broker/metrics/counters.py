"""The metrics registry, and the counters the hot path and the WAL report into."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from protocol.errors import ErrorCode
from protocol.versions import ApiKey

log = logging.getLogger(__name__)

REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
FSYNC_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
LOOP_LAG_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
SYNC_BYTES_BUCKETS = tuple(float(1 << s) for s in range(10, 28, 2))  # 1 KiB .. 64 MiB


def api_name(api_key: int) -> str:
    try:
        return ApiKey(api_key).name.lower()
    except ValueError:
        return "unknown"  # never a raw number: a fuzzer would make unbounded series


class ApiStats:
    """One API's label-bound children; `begin` and `end` bracket each request."""

    __slots__ = ("requests", "errors", "in_flight", "duration")

    def __init__(self, metrics: BrokerMetrics, name: str) -> None:
        self.requests = metrics.requests.labels(name)
        self.errors = metrics.request_errors.labels(name)
        self.in_flight = metrics.in_flight.labels(name)
        self.duration = metrics.request_duration.labels(name)

    def begin(self) -> float:
        self.requests.inc()
        self.in_flight.inc()
        return time.perf_counter()

    def end(self, started: float, failed: bool) -> None:
        self.in_flight.dec()
        self.duration.observe(time.perf_counter() - started)
        if failed:
            self.errors.inc()


class TopicStats:
    __slots__ = ("bytes_in", "records_in", "bytes_out")

    def __init__(self, metrics: BrokerMetrics, topic: str) -> None:
        self.bytes_in = metrics.bytes_in.labels(topic)
        self.records_in = metrics.records_in.labels(topic)
        self.bytes_out = metrics.bytes_out.labels(topic)

    def appended(self, size: int, records: int) -> None:
        self.bytes_in.inc(size)
        self.records_in.inc(records)


class ReplayCounters:
    """Session replays over HTTP: how many, how long, and what each cost the store."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "strata_replay_requests", "Replay requests, by outcome", ["outcome"], registry=r
        )
        self.duration = Histogram(
            "strata_replay_duration_seconds",
            "Time to answer a replay request",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.store_bytes = Counter(
            "strata_replay_store_bytes", "Bytes replays fetched from the object store", registry=r
        )
        self.store_gets = Counter(
            "strata_replay_store_gets", "GETs replays sent to the object store", registry=r
        )
        self.records = Counter("strata_replay_records", "Records replays returned", registry=r)

    def served(self, seconds: float, gets: int, nbytes: int, records: int) -> None:
        self.requests.labels("ok").inc()
        self.duration.observe(seconds)
        self.store_gets.inc(gets)
        self.store_bytes.inc(nbytes)
        self.records.inc(records)

    def refused(self, outcome: str) -> None:
        """`outcome`: bad_request, not_found or error."""
        self.requests.labels(outcome).inc()


class BrokerMetrics:
    """The registry, and the counters the hot path and the WAL report into."""

    def __init__(self) -> None:
        disable_created_metrics()  # process-wide: no *_created series doubling every counter
        self.registry = r = CollectorRegistry()
        self.ready = False  # what /readyz answers
        self.requests = Counter("strata_requests", "Requests started", ["api"], registry=r)
        self.request_errors = Counter(
            "strata_request_errors",
            "Requests whose handler failed or that closed the connection",
            ["api"],
            registry=r,
        )
        self.in_flight = Gauge(
            "strata_requests_in_flight",
            "Requests started and not yet answered",
            ["api"],
            registry=r,
        )
        self.request_duration = Histogram(
            "strata_request_duration_seconds",
            "Time from a handler's start to its encoded response (long polls included)",
            ["api"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.partition_errors = Counter(
            "strata_partition_errors",
            "Per-partition error codes in Produce and Fetch responses",
            ["api", "error"],
            registry=r,
        )
        self.bytes_in = Counter(
            "strata_topic_bytes_in",
            "Record-batch bytes appended by Produce requests",
            ["topic"],
            registry=r,
        )
        self.records_in = Counter(
            "strata_topic_records_in", "Records appended by Produce requests", ["topic"], registry=r
        )
        self.bytes_out = Counter(
            "strata_topic_bytes_out",
            "Record-batch bytes returned by Fetch requests",
            ["topic"],
            registry=r,
        )
        self.rack_bytes = Counter(
            "strata_fetch_rack_bytes",
            "Record-batch bytes returned by Fetch, by this broker's rack and the client's "
            "(client.rack; empty: none given), so cross-zone bytes are visible",
            ["broker_rack", "client_rack"],
            registry=r,
        )
        self.fsync_duration = Histogram(
            "strata_wal_fsync_duration_seconds",
            "Duration of the WAL's fdatasync calls (each a group commit)",
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self.sync_bytes = Histogram(
            "strata_wal_sync_bytes",
            "WAL bytes made durable by each sync",
            buckets=SYNC_BYTES_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "strata_event_loop_lag_seconds",
            "How late the event loop runs a timer (actual minus scheduled wake-up): time "
            "the loop was held by something else, which every request then waited for",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.replay = ReplayCounters(r)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        # every known API starts at zero, so rates and dashboards have series from the start
        self._apis: dict[int, ApiStats] = {int(k): ApiStats(self, api_name(k)) for k in ApiKey}
        self._topics: dict[str, TopicStats] = {}
        self._error_children: dict[tuple[int, int], Counter] = {}

    # --- the hot path (event loop) ------------------------------------------------------

    def api(self, api_key: int) -> ApiStats:
        stats = self._apis.get(api_key)
        if stats is None:
            stats = self._apis[api_key] = ApiStats(self, api_name(api_key))
        return stats

    def rejected(self, api_key: int) -> None:
        """A request refused before its handler ran (the connection is closed)."""
        stats = self.api(api_key if api_key in self._apis else -1)
        stats.requests.inc()
        stats.errors.inc()

    def topic(self, name: str) -> TopicStats:
        stats = self._topics.get(name)
        if stats is None:
            stats = self._topics[name] = TopicStats(self, name)
        return stats

    def partition_error(self, api_key: int, code: int) -> None:
        child = self._error_children.get((api_key, code))
        if child is None:
            child = self.partition_errors.labels(api_name(api_key), ErrorCode(code).name)
            self._error_children[(api_key, code)] = child
        child.inc()

    def fetched_by_rack(self, broker_rack: str, client_rack: str, size: int) -> None:
        self.rack_bytes.labels(broker_rack, client_rack).inc(size)

    def on_wal_sync(self, seconds: float, synced_bytes: int) -> None:
        self.fsync_duration.observe(seconds)
        self.sync_bytes.observe(synced_bytes)

    def forget_topics(self, live: Collection[str]) -> None:
        """A deleted topic's series go with it."""
        for gone in [name for name in self._topics if name not in live]:
            del self._topics[gone]
            for family in (self.bytes_in, self.records_in, self.bytes_out):
                family.remove(gone)
