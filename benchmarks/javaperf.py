"""The Java client's own load generators: Kafka's ProducerPerformance and ConsumerPerformance.

They come from the kafka-tools artifact on Maven Central (benchmarks/kafka/tools/pom.xml), fetched
once into <cache>/kafka-tools-<version>/libs like the broker's jars. Each run is one JVM,
bounded by a subprocess timeout; the summary line it prints is parsed into a dict.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import MB, REPO_ROOT
from devkit.maven import KafkaUnavailable, cache_root, maven_libs

TOOLS_POM = REPO_ROOT / "benchmarks" / "kafka" / "tools" / "pom.xml"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
JVM_OPTS = ["-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]

# "100000 records sent, 51546.4 records/sec (50.34 MB/sec), 301.93 ms avg latency, 548.00 ms max
# latency, 305 ms 50th, 516 ms 95th, 538 ms 99th, 546 ms 99.9th."
_PRODUCER_SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th"
)


def tools_version(pom: Path = TOOLS_POM) -> str:
    m = re.search(r"<kafka\.tools\.version>([^<]+)</kafka\.tools\.version>", pom.read_text())
    if not m:
        raise KafkaUnavailable(f"no <kafka.tools.version> in {pom}")
    return m.group(1).strip()


def tools_classpath(fetch: bool = True) -> str:
    """'<libs>/*' for kafka-tools and its dependencies; fetched with mvn unless `fetch` is False.

    Raises KafkaUnavailable when the jars are not cached and cannot (or may not) be fetched.
    """
    version = tools_version()
    home = cache_root() / f"kafka-tools-{version}"
    if not fetch and not list((home / "libs").glob("kafka-tools-*.jar")):
        raise KafkaUnavailable(f"kafka-tools {version} jars are not cached in {home}")
    libs = maven_libs(TOOLS_POM, home, "kafka-tools-*.jar", f"kafka-tools {version}")
    if shutil.which("java") is None:
        raise KafkaUnavailable("`java` is not on PATH")
    return f"{libs}/*"


def _java(classpath: str, main: str, args: list[str], timeout: float) -> tuple[str, float]:
    cmd = ["java", *JVM_OPTS, "-cp", classpath, main, *args]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{main.rsplit('.', 1)[1]} failed (rc={proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return proc.stdout, wall


def producer_performance(
    classpath: str,
    bootstrap: str,
    topic: str,
    records: int,
    record_size: int,
    props: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """ProducerPerformance at full speed (--throughput -1); its closing summary, MB = 10^6 B."""
    args = [
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--reporting-interval",
        "100000",
        "--command-property",
        *(f"{k}={v}" for k, v in props.items()),
    ]
    out, wall = _java(classpath, PRODUCER_PERF, args, timeout)
    matches = list(_PRODUCER_SUMMARY.finditer(out))
    if not matches:
        raise RuntimeError(f"no ProducerPerformance summary in:\n{out[-2000:]}")
    m = matches[-1]  # the whole-run summary comes last
    rps = float(m.group(2))
    return {
        "records": int(m.group(1)),
        "records_per_s": rps,
        "mb_per_s": rps * record_size / MB,  # the tool's own "MB/sec" is MiB/s
        "latency_ms": {
            "avg": float(m.group(4)),
            "max": float(m.group(5)),
            "p50": float(m.group(6)),
            "p95": float(m.group(7)),
            "p99": float(m.group(8)),
            "p999": float(m.group(9)),
        },
        "wall_seconds": wall,
        "props": props,
    }


def consumer_performance(
    classpath: str,
    bootstrap: str,
    topic: str,
    records: int,
    record_size: int,
    timeout: float,
    group: str,
) -> dict[str, Any]:
    """ConsumerPerformance (a subscribing consumer in `group`) reading `records` records.

    The throughput is the tool's fetch rate (from the first fetch on, so the group join is not
    in it); the join itself is its rebalance.time.ms.
    """
    args = [
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--group",
        group,
        "--timeout",
        "20000",
        "--command-property",
        "auto.offset.reset=earliest",
    ]
    out, wall = _java(classpath, CONSUMER_PERF, args, timeout)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    head = next((i for i, ln in enumerate(lines) if ln.startswith("start.time")), None)
    if head is None or head + 1 >= len(lines):
        raise RuntimeError(f"no ConsumerPerformance summary in:\n{out[-2000:]}")
    keys = [k.strip() for k in lines[head].split(",")]
    values = [v.strip() for v in lines[head + 1].split(",")]
    row = dict(zip(keys, values, strict=False))
    consumed = int(row["data.consumed.in.nMsg"])
    fetch_rps = float(row["fetch.nMsg.sec"])
    return {
        "records": consumed,
        "complete": consumed >= records,
        "records_per_s": fetch_rps,
        "mb_per_s": fetch_rps * record_size / MB,
        "overall_records_per_s": float(row["nMsg.sec"]),
        "rebalance_ms": float(row["rebalance.time.ms"]),
        "fetch_ms": float(row["fetch.time.ms"]),
        "wall_seconds": wall,
    }
