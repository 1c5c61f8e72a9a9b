"""Several broker processes sharing one etcd and one bucket, for the cluster tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient

from devkit import broker, procs
from devkit.broker import BrokerProcess
from devkit.procs import free_port


class Cluster:
    def __init__(self, root: Path, etcd_url: str, store_args: list[str], *extra: str) -> None:
        self.root = root
        self.etcd_url = etcd_url
        self.store_args = store_args
        self.extra = list(extra)
        self.brokers: dict[int, BrokerProcess] = {}
        self.metrics_ports: dict[int, int] = {}

    def start(self, broker_id: int, *extra: str) -> BrokerProcess:
        port = free_port()
        self.metrics_ports[broker_id] = metrics_port = free_port()
        b = BrokerProcess(
            self.root / f"b{broker_id}",
            port,
            "--broker-id",
            str(broker_id),
            "--etcd",
            self.etcd_url,
            "--advertised-listener",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
            *self.store_args,
            *self.extra,
            *extra,
        )
        self.brokers[broker_id] = b
        return b.start()

    def metric(self, broker_id: int, sample: str) -> float:
        return broker.metric(self.metrics_ports[broker_id], sample)

    def restart(self, broker_id: int) -> BrokerProcess:
        return self.brokers[broker_id].start()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values() if b.alive())

    def stop_all(self) -> None:
        for b in self.brokers.values():
            b.stop()

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader id, as Metadata reports it (-1: none)."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        md = admin.list_topics(topic, timeout=10)
        return {p.id: p.leader for p in md.topics[topic].partitions.values()}

    def live_brokers(self) -> set[int]:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return set(admin.list_topics(timeout=10).brokers)


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """procs.wait_for for checks that ask a cluster in motion: one that raises
    (a leader moving, a broker restarting) counts as not yet."""
    return procs.wait_for(check, timeout, quiet=True)
