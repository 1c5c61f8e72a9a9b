"""Cluster-mode figures: `python -m benchmarks.cluster [--out DIR] [--seconds N]`.

Runs real broker processes against a real etcd and moto's S3 server on loopback:

- aggregate produce throughput (acks=all, 1 KiB records, 12 partitions, two producer
  processes as fast as the brokers ack) with 1, 2 and 3 brokers; every process shares
  the machine's cores, so this shows what coordination costs more than what scaling
  gains;
- scale-out: three brokers under a steady produce load with history behind it, then a
  fourth starts: how long until it leads its share of the partitions, and what the
  moves cost in bytes (downloaded by the new broker, uploaded by the old leaders while
  handing over) next to the size of the partitions that moved.

Results go to DIR/results.json (default benchmarks/out/cluster) and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MB,
    MIB,
    json_default,
    latency_summary,
    proc_cpu,
    proc_memory,
    step,
)
from benchmarks.loadgen import ProduceJob, create_topic, end_offsets, run_workers, steady_rate
from devkit.broker import BrokerProcess, scrape

TOPIC = "bench"
PARTITIONS = 12
SIZE = 1024
BUCKET = "strata-cluster-bench"


class Cluster:
    def __init__(self, root: Path, name: str, etcd_url: str, moto: Any, extra: list[str]) -> None:
        self.root, self.name, self.etcd_url, self.moto = root, name, etcd_url, moto
        self.extra = extra
        self.brokers: dict[int, BrokerProcess] = {}

    def start(self, broker_id: int) -> BrokerProcess:
        args = [
            "--broker-id",
            str(broker_id),
            "--etcd",
            self.etcd_url,
            "--cluster-name",
            self.name,
            "--object-store",
            f"s3://{BUCKET}/{self.name}",
            "--s3-endpoint",
            self.moto.endpoint,
            "--lease-ttl-ms",
            "3000",
            *self.extra,
        ]
        b = BrokerProcess(
            self.root / self.name / f"b{broker_id}",
            None,
            *args,
            log_path=self.root / f"{self.name}-b{broker_id}.log",
            metrics=True,
            env={**self.moto.env(), "NO_PROXY": "127.0.0.1,localhost"},
            own_session=True,
            port_attempts=3,
        )
        b.start()
        self.brokers[broker_id] = b
        return b

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values() if b.alive())

    def leaders(self) -> dict[int, int]:
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(TOPIC, timeout=10)
        return {p.id: p.leader for p in md.topics[TOPIC].partitions.values()}

    def wait_leaders(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if set(self.leaders().values()) <= set(self.brokers):
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError("partitions without a leader")

    def peak_rss_mib(self) -> dict[int, float]:
        return {i: proc_memory(b.pid)["VmHWM"] / MIB for i, b in self.brokers.items() if b.alive()}

    def stop(self) -> None:
        for b in self.brokers.values():
            b.stop()


def produce_jobs(bootstrap: str, seconds: float, rate: float, first: int = 0) -> list[ProduceJob]:
    return [
        ProduceJob(
            index=first + i,
            bootstrap=bootstrap,
            topic=TOPIC,
            partitions=PARTITIONS,
            seconds=seconds,
            max_messages=10**9,
            rate=rate,
            sample_every=16,
            linger_ms=5,
            batch_size=256 * 1024,
            flush_timeout=60,
            message_size=SIZE,
        )
        for i in range(2)
    ]


def throughput(root: Path, etcd_url: str, moto: Any, brokers: int, seconds: float) -> dict:
    step(f"throughput with {brokers} broker(s)")
    c = Cluster(root, f"tp{brokers}", etcd_url, moto, [])
    try:
        for i in range(1, brokers + 1):
            c.start(i)
        create_topic(c.bootstrap, TOPIC, PARTITIONS)
        c.wait_leaders()
        time.sleep(2)  # let the controller finish spreading leaders
        cpu0 = {i: proc_cpu(b.pid)["process"] for i, b in c.brokers.items()}
        moto0 = proc_cpu(moto.proc.pid)["process"]
        results, started = run_workers(
            "produce", produce_jobs(c.bootstrap, seconds, 0), seconds + 90
        )
        elapsed = time.monotonic() - started
        rate = steady_rate(results, warmup=2.0, stride=16)
        cpu = {i: (proc_cpu(b.pid)["process"] - cpu0[i]) / elapsed for i, b in c.brokers.items()}
        out = {
            "brokers": brokers,
            "leaders": sorted(c.leaders().values()),
            "mb_per_s": rate["msgs_per_s"] * SIZE / MB,
            "broker_cpu_cores": cpu,
            "moto_cpu_cores": (proc_cpu(moto.proc.pid)["process"] - moto0) / elapsed,
            "producer_cpu_cores": [r["cpu_cores"] for r in results],
            "ack_latency_ms_at_full_speed": latency_summary(rate["latencies"]),
            "broker_peak_rss_mib": c.peak_rss_mib(),
            "errors": sum(r["errors_sampled"] for r in results),
        }
        step(f"  {out['mb_per_s']:.1f} MB/s, broker cores {cpu}")
        return out
    finally:
        c.stop()


def scale_out(root: Path, etcd_url: str, moto: Any, history_mb: int, rate_mb: float) -> dict:
    step(f"scale-out: {history_mb} MB of history, then {rate_mb} MB/s while broker 4 joins")
    c = Cluster(root, "scale", etcd_url, moto, ["--upload-interval-ms", "2000"])
    try:
        for i in (1, 2, 3):
            c.start(i)
        create_topic(c.bootstrap, TOPIC, PARTITIONS)
        c.wait_leaders()
        fill = produce_jobs(c.bootstrap, 120, 0)
        fill = [
            ProduceJob(**{**j.__dict__, "max_messages": history_mb * MB // SIZE // 2}) for j in fill
        ]
        run_workers("produce", fill, 300)
        time.sleep(4)  # the usual uploads take the history
        load = produce_jobs(c.bootstrap, 25, rate_mb * MB / SIZE / 2, first=10)
        before = {i: scrape(b.metrics_url) for i, b in c.brokers.items()}
        moved_at: dict[str, float] = {}

        def join() -> None:
            time.sleep(5)
            t0 = time.monotonic()
            b4 = c.start(4)
            moved_at["listening"] = time.monotonic() - t0
            while time.monotonic() - t0 < 30:
                try:
                    share = sum(1 for leader in c.leaders().values() if leader == 4)
                except Exception:
                    share = 0
                if share >= PARTITIONS // 4 and "share" not in moved_at:
                    moved_at["share"] = time.monotonic() - t0
                    m = scrape(b4.metrics_url)
                    moved_at["adopted"] = m.get("strata_partitions_adopted_total", 0)
                    moved_at["down"] = m.get('strata_object_store_bytes_total{direction="down"}', 0)
                    break
                time.sleep(0.1)

        import threading

        joiner = threading.Thread(target=join)
        results_box: list = []
        runner = threading.Thread(
            target=lambda: results_box.append(run_workers("produce", load, 120))
        )
        runner.start()
        joiner.start()
        joiner.join()
        runner.join()
        results, _ = results_box[0]
        after = {i: scrape(b.metrics_url) for i, b in c.brokers.items() if i in before}
        up_key = 'strata_object_store_bytes_total{direction="up"}'
        handed = {
            i: after[i].get("strata_partitions_handed_over_total", 0)
            - before[i].get("strata_partitions_handed_over_total", 0)
            for i in before
        }
        leaders = c.leaders()
        ends = end_offsets(c.bootstrap, TOPIC, PARTITIONS)
        moved = [p for p, leader in leaders.items() if leader == 4]
        moved_bytes = sum(ends[p] for p in moved) * SIZE
        adopted = moved_at.get("adopted", 0) or 1
        out = {
            "history_mb": history_mb,
            "load_mb_per_s": rate_mb,
            "seconds_to_listen": moved_at.get("listening"),
            "seconds_to_share": moved_at.get("share"),
            "partitions_moved_to_new": len(moved),
            "moves_incl_offsets_partitions": moved_at.get("adopted"),
            "moved_partitions_bytes": moved_bytes,
            "new_broker_downloaded_bytes": moved_at.get("down"),
            "downloaded_per_move": (moved_at.get("down") or 0) / adopted,
            "old_leaders_uploaded_during_run": sum(
                after[i].get(up_key, 0) - before[i].get(up_key, 0) for i in before
            ),
            "old_leaders_handoff_upload_bytes": sum(
                after[i].get("strata_handoff_upload_bytes_total", 0)
                - before[i].get("strata_handoff_upload_bytes_total", 0)
                for i in before
            ),
            "handed_over": handed,
            "ack_latency_ms_during_scale_out": latency_summary(
                steady_rate(results, warmup=1.0, stride=16)["latencies"]
            ),
            "broker_peak_rss_mib": c.peak_rss_mib(),
            "producer_errors": sum(r["errors_sampled"] for r in results),
        }
        step(f"  {json.dumps(out, default=json_default)}")
        return out
    finally:
        c.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/cluster"))
    ap.add_argument("--seconds", type=float, default=20.0, help="per throughput run")
    ap.add_argument("--history-mb", type=int, default=256)
    ap.add_argument("--rate-mb", type=float, default=5.0, help="load while scaling out")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from devkit.etcd import EtcdServer
    from devkit.moto import MotoServer

    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "run"
    root.mkdir(exist_ok=True)
    etcd = EtcdServer().start()
    moto = MotoServer().start()
    os.environ.update(moto.env())
    moto.create_bucket(BUCKET)
    results: dict[str, Any] = {"throughput": [], "scale_out": None}
    try:
        for n in (1, 2, 3):
            results["throughput"].append(throughput(root, etcd.url, moto, n, args.seconds))
        results["scale_out"] = scale_out(root, etcd.url, moto, args.history_mb, args.rate_mb)
    finally:
        etcd.close()
        moto.stop()
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=json_default))
    print(json.dumps(results, indent=2, default=json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
