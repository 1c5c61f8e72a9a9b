"""The web console under load next to Kafka clients: does produce keep its speed?

One broker; a producer (confluent-kafka, acks=all, 512-byte records, 6 partitions) runs
for `--seconds` alone, then again while another process asks console pages back to back
(their live parts, as the refresh script does; `--pause` seconds between two requests,
0 by default: far more than open pages ask, each every 2-5 s). Prints produce
records/s both ways and each page's latency.

    python -m benchmarks.console --seconds 10 [--pause 0.2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import BrokerProcess
from devkit.procs import NO_PROXY

PAGES = ("/", "/topics", "/topics/load", "/topics/wide", "/groups", "/objects")


def produce(bootstrap: str, seconds: float) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked = 0

    def done(err: object, _msg: object) -> None:
        nonlocal acked
        acked += err is None

    payload = b"x" * 512
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            p.produce("load", payload, on_delivery=done)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.flush(30)
    return acked / (time.monotonic() - start)


def hammer(base: str, seconds: float, pause: float, out: multiprocessing.Queue) -> None:
    latencies: dict[str, list[float]] = {p: [] for p in PAGES}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for page in PAGES:
            req = urllib.request.Request(base + page, headers={"X-Console-Fragment": "1"})
            t = time.perf_counter()
            with NO_PROXY.open(req, timeout=30) as r:
                r.read()
            latencies[page].append(time.perf_counter() - t)
            time.sleep(pause)
    out.put(latencies)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pause", type=float, default=0.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        b = BrokerProcess(Path(tmp) / "data", None, metrics=True).start()
        try:
            admin = AdminClient({"bootstrap.servers": b.bootstrap})
            for f in admin.create_topics(
                [NewTopic("load", 6, 1), NewTopic("wide", 1000, 1)]
            ).values():
                f.result()
            base = f"http://127.0.0.1:{b.metrics_port}"
            alone = produce(b.bootstrap, args.seconds)
            q: multiprocessing.Queue = multiprocessing.Queue()
            proc = multiprocessing.Process(target=hammer, args=(base, args.seconds, args.pause, q))
            proc.start()
            busy = produce(b.bootstrap, args.seconds)
            latencies = q.get(timeout=args.seconds + 60)
            proc.join()
        finally:
            b.stop()
    print(f"produce alone: {alone:,.0f} records/s")
    print(f"produce while the console is asked (pause {args.pause} s): {busy:,.0f} records/s")
    for page, xs in latencies.items():
        xs.sort()
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        print(
            f"  {page:<14} {len(xs):>5} requests, p50 {statistics.median(xs) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
