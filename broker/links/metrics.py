"""The links' figures in /metrics, computed at scrape time on the event loop: each
link's state and connection, and per mirrored partition led by this broker the lag
behind the source (records, estimated bytes, seconds) and what was mirrored."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from broker.links import mirror, model
from broker.links.service import LinkService

LINK_STATES = (model.ACTIVE, model.PAUSED)
MIRROR_STATES = (model.MIRRORING, model.PROMOTING, model.PROMOTED)
STOP_REASONS = (mirror.SOURCE_GAP, mirror.SOURCE_TRUNCATED, mirror.SOURCE_TOPIC_GONE)


class LinkCollector(Collector):
    def __init__(
        self,
        links: LinkService,
        registry: CollectorRegistry,
        on_loop: Callable[[Callable[[], list[Metric]]], list[Metric]],
    ) -> None:
        """Registers itself with `registry`; `on_loop(fn)` runs `fn` on the event loop."""
        self.links = links
        self._on_loop = on_loop
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield from self._on_loop(self.families)

    def families(self) -> list[Metric]:
        state = GaugeMetricFamily(
            "strata_link_state", "1 for the state each link is in", labels=["link", "state"]
        )
        connected = GaugeMetricFamily(
            "strata_link_connected",
            "1 while the link's last call to the source cluster succeeded",
            labels=["link"],
        )
        last_error = GaugeMetricFamily(
            "strata_link_last_error_timestamp_seconds",
            "When the link last met an error (0: never)",
            labels=["link"],
        )
        topic_state = GaugeMetricFamily(
            "strata_link_topic_state",
            "1 for the state of each topic of a link",
            labels=["link", "topic", "state"],
        )
        labels = ["link", "topic", "partition"]
        lag = GaugeMetricFamily(
            "strata_link_lag_records", "Records the mirror is behind the source", labels=labels
        )
        lag_bytes = GaugeMetricFamily(
            "strata_link_lag_bytes",
            "Bytes the mirror is behind the source (records behind times their mean size)",
            labels=labels,
        )
        lag_s = GaugeMetricFamily(
            "strata_link_lag_seconds",
            "Seconds since the mirror last held the source's end (0 while it does)",
            labels=labels,
        )
        mirrored = CounterMetricFamily(
            "strata_link_mirrored_bytes", "Bytes of batches mirrored by this broker", labels=labels
        )
        mirrored_records = CounterMetricFamily(
            "strata_link_mirrored_records",
            "Offsets of batches mirrored by this broker",
            labels=labels,
        )
        stopped = GaugeMetricFamily(
            "strata_link_partition_stopped",
            "1 while a mirrored partition is stopped: the source deleted records not yet "
            "mirrored (source_gap), lost records the mirror has (source_truncated), or the "
            "topic was deleted (source_topic_gone)",
            labels=[*labels, "reason"],
        )
        lost = GaugeMetricFamily(
            "strata_link_source_lost_records",
            "Offsets the source deleted before the mirror had them (skipped or pending)",
            labels=labels,
        )
        now = time.monotonic()
        meta_links = self.links.meta.links
        for name, link in sorted(meta_links.items()):
            for s in LINK_STATES:
                state.add_metric([name, s], 1.0 if link.get("state") == s else 0.0)
            for topic, m in sorted(link.get("mirrors", {}).items()):
                for s in MIRROR_STATES:
                    topic_state.add_metric([name, topic, s], 1.0 if m.get("state") == s else 0.0)
            runner = self.links.runners.get(name)
            if runner is None:
                continue
            connected.add_metric([name], 1.0 if runner.connected else 0.0)
            last_error.add_metric([name], runner.last_error_ms / 1000)
            for (topic, index), st in sorted(runner.partitions.items()):
                values = [name, topic, str(index)]
                if st.lag_records is not None:
                    lag.add_metric(values, st.lag_records)
                    lag_s.add_metric(values, st.lag_seconds(now))
                if st.lag_bytes is not None:
                    lag_bytes.add_metric(values, st.lag_bytes)
                for reason in STOP_REASONS:
                    stopped.add_metric([*values, reason], 1.0 if st.stopped == reason else 0.0)
                lost.add_metric(values, st.lost_records)
                mirrored.add_metric(values, st.mirrored_bytes)
                mirrored_records.add_metric(values, st.mirrored_records)
        return [
            state,
            connected,
            last_error,
            topic_state,
            lag,
            lag_bytes,
            lag_s,
            mirrored,
            mirrored_records,
            stopped,
            lost,
        ]
