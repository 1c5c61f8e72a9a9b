"""The `compaction` benchmark: the log cleaner of a compacted topic, Strata beside Apache Kafka.

On each system, in one run:

1. A one-partition topic is filled with SIZE of 1 KiB records over KEYS keys (uniformly
   at random), as `cleanup.policy=delete` so no cleaner touches it yet; `segment.bytes`
   64 MiB on both systems (a sixteenth of a smaller topic), every other cleaner setting
   at Kafka's defaults (`min.cleanable.dirty.ratio` 0.5, one cleaner thread, a 128 MiB
   dedupe buffer). The bytes the store holds for it are measured (Strata: its data
   objects; Kafka: the partition's log directory).
2. Baseline: a paced producer at RATE MB/s (1 KiB records, acks=all, 6 partitions of
   another topic, every message timed) for SECONDS: produce latency p50/p99.
3. The same load again, and at its start the topic is switched to `cleanup.policy=compact`
   (IncrementalAlterConfigs): the cleaner rewrites the whole log while the load runs.
   Produce latency p99 over the messages sent while the clean ran, as a ratio to the
   baseline's (target <= 1.2x).
4. Cleaner throughput: MB of log the cleaner processed per second of cleaning, as each
   cleaner reports it (Strata: strata_log_cleaner_dirty_bytes_total over
   strata_log_cleaner_seconds_total; Kafka: its LogCleaner's "MB of log processed in S
   seconds" lines), and the store's bytes after the clean (old objects and segments
   deleted after a 1 s grace on both).

    python -m benchmarks.compaction --systems strata,kafka --size-mib 1024
    python -m benchmarks.compaction --smoke      # Strata alone, small sizes, seconds

The machine is shared with whatever else runs: say so next to the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import MB, MIB, latency_summary, step
from benchmarks.loadgen import ProduceJob, create_topic, run_workers
from benchmarks.systems import KafkaSystem, StrataSystem, System

TOPIC = "compacted"
LOAD_TOPIC = "load"
SEGMENT_BYTES = 64 * MIB  # at most; a sixteenth of a smaller topic, so most is cleanable
VALUE_SIZE = 1024


class CleanerKafka(KafkaSystem):
    """Kafka with a short cleaner backoff and segment delete delay (as Strata's below)."""

    extra_properties = {"log.cleaner.backoff.ms": "1000", "log.segment.delete.delay.ms": "1000"}


def _system(name: str, work: Path, cleaner_io_mb: float = 0.0) -> System:
    """`cleaner_io_mb`: the cleaner's byte budget in MB/s on both (0: unlimited, Kafka's
    default)."""
    budget = str(cleaner_io_mb * MB)
    if name == "strata":
        return StrataSystem(
            work,
            [
                "--log-cleaner-io-max-bytes-per-second",
                budget if cleaner_io_mb > 0 else "0",
                "--retention-check-interval-ms",
                "1000",
                "--object-delete-delay-ms",
                "1000",
                "--log-level",
                "INFO",
            ],
        )
    if name == "kafka":
        kafka = CleanerKafka(work)
        if cleaner_io_mb > 0:
            kafka.extra_properties = {
                **kafka.extra_properties,
                "log.cleaner.io.max.bytes.per.second": budget,
            }
        return kafka
    raise SystemExit(f"unknown system {name!r} (strata, kafka)")


def fill(bootstrap: str, size: int, keys: int, seed: int = 1) -> int:
    """`size` bytes of 1 KiB values over `keys` keys into TOPIC; returns records sent."""
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1024 * 1024,
            "compression.type": "none",
            "acks": "all",
            "queue.buffering.max.kbytes": 256 * 1024,
        }
    )
    rng = random.Random(seed)
    pad = bytes(rng.getrandbits(8) for _ in range(4096))
    n = size // VALUE_SIZE
    errors = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for i in range(n):
        key = b"key-%06d" % rng.randrange(keys)
        start = i % 3000
        value = b"%09d" % i + pad[start : start + VALUE_SIZE - 9]
        while True:
            try:
                p.produce(TOPIC, value, key, partition=0, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(300) or errors:
        raise RuntimeError(f"fill: {len(errors)} errors, first {errors[:1]}")
    return n


def _object_bytes_by_topic(objects: Path) -> dict[bytes, int]:
    """Block bytes per topic id over a directory store's data objects (their indexes)."""
    from s3stream.object_format import FOOTER, parse_footer, parse_index

    out: dict[bytes, int] = {}
    for path in (objects / "data").rglob("*.obj"):
        body = path.read_bytes()
        footer = parse_footer(body[-FOOTER.size :])
        index = body[footer.index_position : footer.index_position + footer.index_size]
        for e in parse_index(footer, index):
            out[e.topic_id] = out.get(e.topic_id, 0) + e.size
    return out


class StoreMeter:
    """What the store holds for TOPIC: Strata, the topic's blocks in the data objects
    (objects hold many partitions; the topic is the one that holds most when the fill
    ends), plus their share of object overhead; Kafka, the partition's log files."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.topic_id: bytes | None = None

    def read(self) -> int:
        if not isinstance(self.system, StrataSystem):
            part = self.system.data_dir / f"{TOPIC}-0"
            return sum(p.stat().st_size for p in part.glob("*") if p.is_file())
        store = self.system.store
        assert store is not None and store.path is not None
        by_topic = _object_bytes_by_topic(store.path)
        if self.topic_id is None:
            self.topic_id = max(by_topic, key=lambda t: by_topic[t])
        return by_topic.get(self.topic_id, 0)


def _set_policy(bootstrap: str, policy: str) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource("topic", TOPIC)
    res.add_incremental_config(
        ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)
    )
    admin.incremental_alter_configs([res])[res].result(30)


def segment_bytes(size: int) -> int:
    return max(MIB, min(SEGMENT_BYTES, size // 16))


def _create_topics(bootstrap: str, segment: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "segment.bytes": str(segment),
    }
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=configs)])[TOPIC].result(30)
    create_topic(bootstrap, LOAD_TOPIC, 6)


# "1,021.5 MB of log processed in 27.3 seconds (37.4 MB/sec)."
_KAFKA_STATS = re.compile(r"([\d,.]+) MB of log processed in ([\d,.]+) seconds")


class CleanerWatch:
    """Whether the system's cleaner has finished with TOPIC, and what it reported."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.base = self.read()

    def read(self) -> dict[str, float]:
        if isinstance(self.system, StrataSystem):
            m = self.system.scrape()
            return {
                "runs": m.get("strata_log_cleaner_runs_total", 0.0),
                "bytes": m.get("strata_log_cleaner_dirty_bytes_total", 0.0),
                "read": m.get("strata_log_cleaner_bytes_read_total", 0.0),
                "seconds": m.get("strata_log_cleaner_seconds_total", 0.0),
            }
        text = ""
        for log in self.system.logs():
            if log.exists() and log.name == "server.log":
                text = log.read_text(errors="replace")
        found = [
            (mb.replace(",", ""), secs.replace(",", "")) for mb, secs in _KAFKA_STATS.findall(text)
        ]
        return {
            "runs": float(len(found)),
            # Kafka's MB are MiB
            "bytes": sum(float(mb) for mb, _ in found) * MIB,
            "read": sum(float(mb) for mb, _ in found) * MIB,
            "seconds": sum(float(s) for _, s in found),
        }

    def delta(self) -> dict[str, float]:
        now = self.read()
        return {k: now[k] - self.base[k] for k in now}


def _paced_latency(
    system: System, rate_mb: float, seconds: float, on_start: Any = None
) -> dict[str, Any]:
    rate = rate_mb * MB / 1024
    job = ProduceJob(
        0,
        system.bootstrap,
        LOAD_TOPIC,
        6,
        seconds,
        int(rate * seconds) + 1,
        rate,
        1,
        5.0,
        1024 * 1024,
        60.0,
        message_size=1024,
    )
    results, _ = run_workers("cleaner-latency", [job], seconds + 120, on_start=on_start)
    prod = results[0]
    if prod["errors_sampled"] or prod["unflushed"]:
        raise RuntimeError(f"{prod['errors_sampled']} produce errors ({prod['first_error']})")
    return prod


def _acks(prod: dict[str, Any], since: float, until: float) -> list[float]:
    return [
        d - s
        for s, d in zip(prod["sent_times"], prod["done_times"], strict=True)
        if since <= s <= until
    ]


def run_system(
    name: str,
    work: Path,
    size: int,
    keys: int,
    rate_mb: float,
    seconds: float,
    cleaner_io_mb: float = 0.0,
    store_wait_s: float = 60.0,
) -> dict[str, Any]:
    system = _system(name, work / name, cleaner_io_mb)
    system.prepare()
    system.start()
    try:
        _create_topics(system.bootstrap, segment_bytes(size))
        step(f"  {name}: filling {size / MIB:,.0f} MiB over {keys:,} keys")
        t0 = time.monotonic()
        records = fill(system.bootstrap, size, keys)
        fill_s = time.monotonic() - t0
        if isinstance(system, StrataSystem):  # the cleaner cleans what is in objects
            deadline = time.monotonic() + 120
            while system.scrape().get("strata_upload_backlog_bytes", 0) > 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("uploads did not drain")
                time.sleep(0.5)
        meter = StoreMeter(system)
        before = meter.read()
        step(f"  {name}: baseline, {rate_mb:g} MB/s for {seconds:g} s without cleaning")
        warm = 3.0
        base = _paced_latency(system, rate_mb, seconds)
        base_acks = _acks(base, base["start"] + warm, float("inf"))

        step(f"  {name}: the same load while the cleaner rewrites the topic")
        watch = CleanerWatch(system)
        marks: dict[str, float] = {}
        stop = threading.Event()

        def start_clean() -> None:
            marks["start"] = time.monotonic()
            _set_policy(system.bootstrap, "compact")

            def poll() -> None:
                while not stop.is_set():
                    d = watch.delta()
                    if d["runs"] >= 1 and d["bytes"] >= 0.8 * before:
                        marks["end"] = time.monotonic()
                        return
                    time.sleep(0.2)

            threading.Thread(target=poll, daemon=True).start()

        loaded = _paced_latency(system, rate_mb, seconds, on_start=start_clean)
        deadline = time.monotonic() + 300
        while "end" not in marks and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        if "end" not in marks:
            raise RuntimeError(f"{name}: the cleaner did not finish: {watch.delta()}")
        during = _acks(loaded, marks["start"], marks["end"])
        cleaned = watch.delta()
        time.sleep(3)  # the grace before old objects / segments are deleted
        deadline = time.monotonic() + store_wait_s
        after = meter.read()
        while after > before / 4 and time.monotonic() < deadline:
            time.sleep(1)
            after = meter.read()
        base_l, during_l = latency_summary(base_acks), latency_summary(during)
        return {
            "figures": {
                "cleaner_mb_per_s": cleaned["bytes"] / MB / cleaned["seconds"],
                "produce_p99_ms_baseline": base_l["p99"],
                "produce_p99_ms_while_cleaning": during_l["p99"],
                "produce_p99_ratio": during_l["p99"] / base_l["p99"],
                "store_bytes_before": before,
                "store_bytes_after": after,
            },
            "details": {
                "records": records,
                "fill_s": fill_s,
                "cleaner": cleaned,
                "clean_wall_s": marks["end"] - marks["start"],
                "baseline_ms": base_l,
                "while_cleaning_ms": during_l,
                "config": system.config(),
            },
        }
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compaction", description=__doc__)
    ap.add_argument("--systems", default="strata,kafka")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rate-mb", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--smoke", action="store_true", help="Strata alone, 32 MiB, 10 s")
    ap.add_argument(
        "--cleaner-io-mb",
        type=float,
        default=0.0,
        help="the cleaner's byte budget in MB/s on both systems "
        "(log.cleaner.io.max.bytes.per.second; default unlimited, as Kafka's)",
    )
    ap.add_argument(
        "--store-wait-s",
        type=float,
        default=60.0,
        help="how long to wait for the store to shrink after the clean (old objects deleted)",
    )
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.systems, args.size_mib, args.seconds = "strata", 32, 10.0
    work = Path(tempfile.mkdtemp(prefix="strata-compaction-bench-"))
    results: dict[str, Any] = {
        "size_mib": args.size_mib,
        "keys": args.keys,
        "rate_mb_per_s": args.rate_mb,
        "seconds": args.seconds,
        "cleaner_io_mb_per_s": args.cleaner_io_mb,
        "systems": {},
    }
    try:
        for name in args.systems.split(","):
            try:
                results["systems"][name] = run_system(
                    name,
                    work,
                    args.size_mib * MIB,
                    args.keys,
                    args.rate_mb,
                    args.seconds,
                    args.cleaner_io_mb,
                    args.store_wait_s,
                )
            except Exception as e:  # the other systems' figures still count
                results["systems"][name] = {"error": repr(e)}
            step(f"  {name}: {json.dumps(results['systems'][name].get('figures'))}")
            if args.out:
                args.out.write_text(json.dumps(results, indent=2))
            shutil.rmtree(work / name, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = results["systems"]
    if "figures" in s.get("strata", {}) and "figures" in s.get("kafka", {}):
        a, b = s["strata"]["figures"], s["kafka"]["figures"]
        results["strata_over_kafka_cleaner_throughput"] = (
            a["cleaner_mb_per_s"] / b["cleaner_mb_per_s"]
        )
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
