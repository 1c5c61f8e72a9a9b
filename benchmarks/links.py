"""The `links` figures: how fast a link mirrors Apache Kafka into Strata, and its lag
under a steady source load.

Apache Kafka 4.x (benchmarks.kafka_reference) and one Strata broker run on this machine.
1. Backlog: `--backlog-mb` of 1 KiB records are written to a 6-partition topic on Kafka
   first; then a link is created and timed until the mirror holds the source's end
   (MB/s of record batches mirrored, from the link's own byte counters).
2. Steady: a producer writes `--rate-mb` MB/s to a second topic for `--seconds`; the
   link's lag (records, estimated bytes) is sampled from /metrics every second.

    python -m benchmarks.links --backlog-mb 200 --rate-mb 20 --seconds 30

With `--mm2`, MirrorMaker 2 (connect-mirror from Maven Central, benchmarks/mirrormaker/
pom.xml; its dedicated driver, one JVM) copies the same two workloads from the same Kafka
to the same Strata in the same run, to topics of its own (`kafka.bench-...`, new offsets);
its lag is the source's end minus the copy's end, from both clusters' watermarks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.common import environment, percentile
from benchmarks.kafka_reference import KafkaReference
from devkit.broker import BrokerProcess, scrape
from devkit.maven import cache_root, maven_libs

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 6
RECORD = 1024


def _link(b: BrokerProcess, *args: str) -> None:
    api = f"http://127.0.0.1:{b.metrics_port}"
    subprocess.run(
        [sys.executable, "-m", "broker", "link", *args, "--broker", api],
        check=True,
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )


def _figures(b: BrokerProcess, link: str, topic: str) -> tuple[float, float, float]:
    """(lag records, lag bytes, mirrored bytes) of a topic, summed over its partitions."""
    m = scrape(b.metrics_url)
    lag = lag_b = mirrored = 0.0
    for p in range(PARTITIONS):
        labels = f'link="{link}",partition="{p}",topic="{topic}"'
        lag += m.get(f"strata_link_lag_records{{{labels}}}", float("inf"))
        lag_b += m.get(f"strata_link_lag_bytes{{{labels}}}", 0.0)
        mirrored += m.get(f"strata_link_mirrored_bytes_total{{{labels}}}", 0.0)
    return lag, lag_b, mirrored


def _produce(bootstrap: str, topic: str, nbytes: int, rate_mb: float | None) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 256 * 1024})
    value = b"x" * RECORD
    sent, t0 = 0, time.monotonic()
    while sent * RECORD < nbytes:
        try:
            p.produce(topic, value, key=str(sent % 1000).encode())
        except BufferError:
            p.poll(0.05)
            continue
        sent += 1
        if sent % 1000 == 0:
            p.poll(0)
            if rate_mb:
                ahead = sent * RECORD / (rate_mb * 1e6) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    p.flush(60)
    return sent


MM2_POM = REPO / "benchmarks" / "mirrormaker" / "pom.xml"
MM2_PROPERTIES = """\
clusters = kafka, strata
kafka.bootstrap.servers = {kafka}
strata.bootstrap.servers = {strata}
kafka->strata.enabled = true
kafka->strata.topics = {topics}
strata->kafka.enabled = false
replication.factor = 1
checkpoints.topic.replication.factor = 1
heartbeats.topic.replication.factor = 1
offset-syncs.topic.replication.factor = 1
offset.storage.replication.factor = 1
status.storage.replication.factor = 1
config.storage.replication.factor = 1
sync.topic.acls.enabled = false
refresh.topics.interval.seconds = 2
"""


def _ends(bootstrap: str, topic: str) -> float:
    """The sum of a topic's partition ends (NaN while it does not exist)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return float("nan")
        return float(
            sum(
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in md.partitions
            )
        )
    finally:
        c.close()


def _mm2(kafka: KafkaReference, strata: BrokerProcess, backlog_mb: int, rate_mb: float,
         seconds: int, tmp: Path) -> dict:  # fmt: skip
    libs = maven_libs(MM2_POM, cache_root() / "mirrormaker-4.3.1", "connect-mirror-*.jar", "MM2")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for t in ("mm2-backlog", "mm2-steady"):
        admin.create_topics([NewTopic(t, PARTITIONS, 1)])[t].result(30)
    sent = _produce(kafka.bootstrap, "mm2-backlog", backlog_mb * 1_000_000, None)
    cfg = tmp / "mm2.properties"
    cfg.write_text(
        MM2_PROPERTIES.format(
            kafka=kafka.bootstrap, strata=strata.bootstrap, topics="mm2-backlog,mm2-steady"
        )
    )
    out: dict = {}
    with open(tmp / "mm2.log", "wb") as log:
        proc = subprocess.Popen(
            ["java", "-Xmx512m", "-cp", f"{libs}/*",
             "org.apache.kafka.connect.mirror.MirrorMaker", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            t0 = time.monotonic()
            first = None
            deadline = t0 + 300
            while time.monotonic() < deadline:
                got = _ends(strata.bootstrap, "kafka.mm2-backlog")
                if got == got and got > 0 and first is None:
                    first = time.monotonic()
                if got >= sent:
                    break
                time.sleep(0.5)
            else:
                raise TimeoutError("MirrorMaker 2 did not copy the backlog in 300 s")
            done_at = time.monotonic()
            mb = sent * RECORD / 1e6
            out["backlog"] = {
                "mb_of_values": round(mb, 1),
                "seconds_from_start": round(done_at - t0, 2),
                "seconds_from_first_record": round(done_at - (first or t0), 2),
                "mb_per_s_from_first_record": round(mb / max(done_at - (first or t0), 1e-3), 1),
            }
            lags: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    src = _ends(kafka.bootstrap, "mm2-steady")
                    dst = _ends(strata.bootstrap, "kafka.mm2-steady")
                    if dst == dst:
                        lags.append(max(0.0, src - dst))
                    time.sleep(1.0)

            while (
                _ends(strata.bootstrap, "kafka.mm2-steady")
                != _ends(strata.bootstrap, "kafka.mm2-steady")
                and time.monotonic() < deadline
            ):
                time.sleep(0.5)  # MM2 has created its copy of the topic
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t1 = time.monotonic()
            _produce(kafka.bootstrap, "mm2-steady", int(rate_mb * 1e6 * seconds), rate_mb)
            wrote_s = time.monotonic() - t1
            done.set()
            sampler.join()
            lags.sort()
            out["steady"] = {
                "source_mb_per_s": round(rate_mb * seconds / wrote_s, 1),
                "lag_records_p50": percentile(lags, 50) if lags else None,
                "lag_records_max": max(lags, default=None),
                "lag_mb_p50": round(percentile(lags, 50) * RECORD / 1e6, 2) if lags else None,
                "samples": len(lags),
            }
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return out


def run(backlog_mb: int, rate_mb: float, seconds: int, mm2: bool = False) -> dict:
    out: dict = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="bench-links-") as tmp:
        kafka = KafkaReference(log_dir=Path(tmp) / "kafka", heap="768m").start()
        strata = BrokerProcess(Path(tmp) / "strata", None, metrics=True).start()
        try:
            admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
            for t in ("bench-backlog", "bench-steady"):
                admin.create_topics([NewTopic(t, PARTITIONS, 1)])[t].result(30)
            _produce(kafka.bootstrap, "bench-backlog", backlog_mb * 1_000_000, None)
            t0 = time.monotonic()
            _link(strata, "create", "--name", "b", "--source-bootstrap", kafka.bootstrap,
                  "--topics", "bench-backlog")  # fmt: skip
            while _figures(strata, "b", "bench-backlog")[0] != 0:
                time.sleep(0.2)
            took = time.monotonic() - t0
            mirrored = _figures(strata, "b", "bench-backlog")[2]
            out["backlog"] = {
                "mb": round(mirrored / 1e6, 1),
                "seconds": round(took, 2),
                "mb_per_s": round(mirrored / 1e6 / took, 1),
            }
            _link(strata, "create", "--name", "s", "--source-bootstrap", kafka.bootstrap,
                  "--topics", "bench-steady")  # fmt: skip
            lags: list[float] = []
            lag_bytes: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    lag, lag_b, _ = _figures(strata, "s", "bench-steady")
                    if lag != float("inf"):
                        lags.append(lag)
                        lag_bytes.append(lag_b)
                    time.sleep(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            _produce(kafka.bootstrap, "bench-steady", int(rate_mb * 1e6 * seconds), rate_mb)
            wrote_s = time.monotonic() - t0
            done.set()
            sampler.join()
            lags.sort()
            lag_bytes.sort()
            out["steady"] = {
                "target_mb_per_s": rate_mb,
                "source_mb_per_s": round(rate_mb * seconds / wrote_s, 1),
                "lag_records_p50": percentile(lags, 50) if lags else None,
                "lag_records_max": max(lags, default=None),
                "lag_mb_p50": round(percentile(lag_bytes, 50) / 1e6, 2) if lag_bytes else None,
                "lag_mb_max": round(max(lag_bytes, default=0) / 1e6, 2),
                "samples": len(lags),
            }
            if mm2:
                out["mirrormaker2"] = _mm2(kafka, strata, backlog_mb, rate_mb, seconds, Path(tmp))
        finally:
            strata.stop()
            kafka.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog-mb", type=int, default=200)
    ap.add_argument("--rate-mb", type=float, default=20.0)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--mm2", action="store_true", help="MirrorMaker 2 beside the link")
    args = ap.parse_args(argv)
    result = run(args.backlog_mb, args.rate_mb, args.seconds, args.mm2)
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
