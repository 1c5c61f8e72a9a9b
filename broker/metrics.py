"""Prometheus metrics and health checks, served on their own HTTP port.

`--metrics-listen HOST:PORT` serves, from a thread (never the event loop):

- `/metrics`: the broker's own registry (not prometheus_client's global one), in the
  Prometheus text format, or OpenMetrics when the scraper asks for it;
- `/healthz`: 200 while the process runs (liveness);
- `/readyz`: 200 once the WAL is recovered and the Kafka listener accepts clients,
  503 before that and from the moment shutdown begins (readiness).

The registry exists whether or not it is served. What it holds:

Requests, by `api` (the ApiKey name in lower case: produce, fetch, join_group, ...):
  strata_requests_total                 requests started
  strata_request_errors_total           requests whose handler raised or that closed the
                                        connection (bad version, malformed, acks=0 failure)
  strata_request_duration_seconds       histogram, from the handler's start to the encoded
                                        response
                                        (for fetch and join_group this includes the park:
                                        a long poll waits up to the client's max wait)
  strata_requests_in_flight             gauge: started and not yet answered; for produce
                                        that is mostly requests waiting for their fsync,
                                        for fetch the parked long polls (queue depth)
  strata_partition_errors_total         per-partition error codes in Produce and Fetch
                                        responses, by `api` and `error` (the code's name)
Data, by `topic` (counters of what happened since this process started):
  strata_topic_bytes_in_total           record-batch bytes appended by Produce (after
                                        validation and deduplication: exactly what the
                                        topic's log grew by, WAL framing excluded)
  strata_topic_records_in_total         records in those batches
  strata_topic_bytes_out_total          record-batch bytes returned by Fetch
The write-ahead log:
  strata_wal_fsync_duration_seconds     histogram of fdatasync calls (group commits)
  strata_wal_sync_bytes                 histogram: WAL bytes each sync made durable
  strata_wal_unsynced_bytes             gauge: appended, not yet durable
  strata_wal_retained_bytes             gauge: bytes in WAL segments still on disk. No
                                        object store exists yet, so nothing is uploaded:
                                        this stands for the bytes not yet uploaded, and
                                        falls only when retention trims whole segments
The tail cache:
  strata_tail_cache_hits_total, strata_tail_cache_misses_total (hit ratio = hits /
  (hits + misses)), strata_tail_cache_bytes, strata_tail_cache_max_bytes
Partitions and groups (computed at scrape time, on the event loop):
  strata_topics, strata_partitions      internal topics included
  strata_leader_partitions              partitions this broker leads (all of them while
                                        Strata runs as a single broker)
  strata_partition_high_watermark       by topic and partition
  strata_consumer_groups                by `state` (Empty, Stable, PreparingRebalance, ...)
  strata_group_rebalances_total         rebalances started
  strata_consumer_group_committed_offset, strata_consumer_group_lag
                                        by group, topic and partition; lag is the high
                                        watermark minus the committed offset (records)
Plus prometheus_client's process_* and python_info collectors.

The hot path only touches label-bound children cached per API and per topic, and the
scrape-time values are read from plain attributes. Object-store metrics (uploads,
upload latency, remote reads) do not apply yet: there is no object store until the
s3stream work lands.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.groups.group import GroupState
from protocol.errors import ErrorCode
from protocol.versions import ApiKey

if TYPE_CHECKING:
    from broker.app import Broker

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
SYNC_BYTES_BUCKETS = tuple(float(1 << s) for s in range(10, 28, 2))  # 1 KiB .. 64 MiB
SCRAPE_STATE_TIMEOUT = 5.0  # seconds a scrape waits for the event loop


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


class BrokerMetrics:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
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
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(_StateCollector(self))
        # every known API starts at zero, so rates and dashboards have series from the start
        self._apis: dict[int, ApiStats] = {int(k): ApiStats(self, api_name(k)) for k in ApiKey}
        self._topics: dict[str, TopicStats] = {}
        self._error_children: dict[tuple[int, int], Counter] = {}
        broker.logs.wal.sync_observer = self._on_wal_sync
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: WSGIServer | None = None
        self._metrics_app = make_wsgi_app(r)

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

    def _on_wal_sync(self, seconds: float, synced_bytes: int) -> None:
        self.fsync_duration.observe(seconds)
        self.sync_bytes.observe(synced_bytes)

    # --- HTTP -------------------------------------------------------------------------

    def start_http(self, listen: str) -> int | None:
        """Serve /metrics, /healthz and /readyz on a daemon thread; returns the port."""
        self._loop = asyncio.get_running_loop()
        if not listen:
            return None
        host, port = listen.rsplit(":", 1)
        host = host.strip("[]") or "0.0.0.0"

        class Server(_ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._httpd = make_server(host, int(port), self._app, Server, _QuietHandler)
        threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True).start()
        bound = self._httpd.server_port
        log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, bound)
        return bound

    async def stop_http(self) -> None:
        self.ready = False
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            status, text = "200 OK", b"ok\n"
        elif path == "/readyz":
            status, text = (
                ("200 OK", b"ready\n")
                if self.ready
                else ("503 Service Unavailable", b"not ready\n")
            )
        else:
            status, text = "404 Not Found", b"try /metrics, /healthz or /readyz\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [text]

    # --- scrape-time state, read on the event loop ---------------------------------------

    def on_loop(self, fn: Callable[[], list[Metric]]) -> list[Metric]:
        """Run `fn` on the event loop (the broker's dicts change only there) and wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return []
        try:
            if asyncio.get_running_loop() is loop:
                return fn()
        except RuntimeError:
            pass  # no loop in this thread: the usual case, a scrape on the HTTP thread
        fut: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:
                    fut.set_exception(e)

        try:
            loop.call_soon_threadsafe(run)
            return fut.result(SCRAPE_STATE_TIMEOUT)
        except RuntimeError:
            return []  # the loop closed under us: shutting down
        except concurrent.futures.TimeoutError:
            fut.cancel()
            log.warning("scrape: the event loop did not answer in %ss", SCRAPE_STATE_TIMEOUT)
            return []

    def _object_families(self) -> list[Metric]:
        logs = self.broker.logs
        store = self.broker.store
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

    def _cluster_families(self) -> list[Metric]:
        node, follower = self.broker.cluster, self.broker.follower
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
                value=self.broker.logs.handoff_upload_bytes,
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

    def state_families(self) -> list[Metric]:
        b = self.broker
        logs = b.logs
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
                "strata_group_rebalances", "Group rebalances started", value=b.groups.rebalances
            ),
        ]
        if not self.ready:
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
        states = Tally(g.state for g in b.groups.groups.values())
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
        for group_id, table in b.offsets.offsets.items():
            for (topic, index), c in table.items():
                t = topics.get(topic)
                if t is None or not 0 <= index < len(t.partitions):
                    continue
                labels = [group_id, topic, str(index)]
                committed.add_metric(labels, c.offset)
                lag.add_metric(labels, max(t.partitions[index].high_watermark - c.offset, 0))
        for gone in [name for name in self._topics if name not in topics]:
            del self._topics[gone]  # a deleted topic's series go with it
            for family in (self.bytes_in, self.records_in, self.bytes_out):
                family.remove(gone)
        out += [
            GaugeMetricFamily("strata_topics", "Topics, internal ones included", value=len(topics)),
            GaugeMetricFamily(
                "strata_partitions", "Partitions, internal ones included", value=partitions
            ),
            GaugeMetricFamily(
                "strata_leader_partitions", "Partitions this broker leads", value=led
            ),
            *self._cluster_families(),
            hw,
            groups,
            committed,
            lag,
        ]
        return out


class _StateCollector(Collector):
    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.on_loop(self.metrics.state_families)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass
