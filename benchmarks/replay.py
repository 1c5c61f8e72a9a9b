"""The `replay` workload: one agent session's events, from the bucket, vs scanning the topic.

Agent events (~300 B JSON, keyed by session id, sessions of Pareto-distributed length) go
into a 12-partition topic; the broker is stopped (uploading everything) and started again
on an empty data directory, so every read is cold. Then sessions picked at random are
replayed through the HTTP API (`GET /v1/topics/{t}/records?key=`): latency p50/p99, and
bytes and GETs fetched from the store per replay next to the topic's bytes; the key
index's size next to the data's. Beside it, what users do today: a consumer scanning
the whole topic for the key, on Strata and (as its own system) on Apache Kafka.

    python -m benchmarks.replay --events 1000000 --sessions 10000   # Strata alone, quick

Inside the harness it is the workload `replay` (benchmarks.workloads shape: a dict of
figures and details per repetition).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import objectstore
from benchmarks.common import step
from benchmarks.loadgen import create_topic, end_offsets
from devkit.procs import NO_PROXY

TOOLS = ("search", "refund", "lookup_order", "send_email", "escalate", "policy_check")
EVENT_TYPES = ("llm_call", "tool_call", "tool_result", "decision", "user_message")


def session_names(sessions: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"sess_{rng.getrandbits(48):012x}" for _ in range(sessions)]


def events(n: int, names: list[str], seed: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, ~300-byte JSON value) pairs: sessions of Pareto-distributed length (summing to
    `n`) that start one after another, about 2% of them live at a time, their events
    interleaved as concurrent agents write them."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in names]
    total = sum(weights)
    lengths = [max(1, round(w / total * n)) for w in weights]
    lengths[-1] = max(1, lengths[-1] + n - sum(lengths))
    live: list[int] = []
    steps: dict[int, int] = {}
    pad = f"{rng.getrandbits(4096):01024x}"  # text that compresses about as prose does
    upcoming = iter(range(len(names)))
    width = max(1, len(names) // 50)
    produced = 0
    while produced < n:
        while len(live) < width:
            nxt = next(upcoming, None)
            if nxt is None:
                break
            live.append(nxt)
        if not live:
            break
        j = rng.randrange(len(live))
        i = live[j]
        steps[i] = s = steps.get(i, 0) + 1
        if s >= lengths[i]:
            live[j] = live[-1]
            live.pop()
        value = (
            f'{{"session":"{names[i]}","step":{s},"event_type":"{rng.choice(EVENT_TYPES)}",'
            f'"tool":"{rng.choice(TOOLS)}","tokens":{rng.randrange(10, 4000)},'
            f'"cost":{rng.random() / 50:.6f},"latency_ms":{rng.randrange(5, 3000)},'
            f'"note":"{pad[(o := rng.randrange(800)) : o + rng.randrange(130, 190)]}"}}'
        )
        yield names[i].encode(), value.encode()
        produced += 1


def produce(bootstrap: str, topic: str, stream: Iterator[tuple[bytes, bytes]]) -> dict[bytes, int]:
    """Send every event (acks=all); the number of events per key."""
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.kbytes": 256 * 1024,
        }
    )
    counts: dict[bytes, int] = {}
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for n, (key, value) in enumerate(stream):
        while True:
            try:
                p.produce(topic, value, key=key, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        counts[key] = counts.get(key, 0) + 1
        if n % 10_000 == 0:
            p.poll(0)
    if p.flush(300) or errors:
        raise RuntimeError(f"produce failed: {len(errors)} errors, e.g. {errors[:1]}")
    return counts


def scan_for_key(bootstrap: str, topic: str, partitions: int, key: bytes) -> tuple[float, int]:
    """What users do today: consume the whole topic, keep the key's records. (seconds, n)."""
    from confluent_kafka import Consumer, TopicPartition

    ends = end_offsets(bootstrap, topic, partitions)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"replay-scan-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    t0 = time.monotonic()
    found = 0
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions) if ends[p]])
        left = {p for p in range(partitions) if ends[p]}
        while left:
            for m in c.consume(10_000, 1.0):
                if m.error() is not None:
                    continue
                if m.key() == key:
                    found += 1
                if m.offset() + 1 >= ends[m.partition()]:
                    left.discard(m.partition())
            if time.monotonic() - t0 > 1800:
                raise TimeoutError("scan did not finish in 30 min")
    finally:
        c.close()
    return time.monotonic() - t0, found


def replay_http(port: int, topic: str, key: bytes) -> tuple[float, dict[str, str], list[dict]]:
    q = urllib.parse.urlencode({"key": key.decode(), "limit": "100000"})
    t0 = time.perf_counter()
    with NO_PROXY.open(f"http://127.0.0.1:{port}/v1/topics/{topic}/records?{q}", timeout=120) as r:
        body = r.read()
        headers = dict(r.headers)
    seconds = time.perf_counter() - t0
    return seconds, headers, [json.loads(line) for line in body.splitlines()]


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def index_sizes(loc: objectstore.StoreLocation) -> tuple[int, int, int]:
    """(data objects' bytes, their key indexes' bytes, objects) in the store."""
    from s3stream.local_store import LocalDirectoryStore
    from s3stream.object_format import LOCATOR, parse_footer, parse_locator
    from s3stream.s3_store import S3Store

    async def main() -> tuple[int, int, int]:
        if loc.kind == "file":
            assert loc.path is not None
            store: Any = LocalDirectoryStore(loc.path)
        else:
            store = S3Store(loc.bucket, loc.prefix, endpoint_url=loc.endpoint, path_style=True)
            await store.open()
        try:
            data = keys = n = 0
            for info in await store.list("data/"):
                if not info.key.endswith(".obj"):
                    continue
                tail = await store.get(info.key, max(0, info.size - 64 * 1024), info.size)
                footer = parse_footer(tail)
                n += 1
                data += info.size
                located = footer.locator_range
                if located is not None:
                    raw = await store.get(info.key, *located)
                    keys += parse_locator(footer, raw).size + LOCATOR.size
            return data, keys, n
        finally:
            await store.close()

    with _environ(loc.env):
        return asyncio.run(main())


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def measure_replays(
    port: int, topic: str, counts: dict[bytes, int], samples: int, seed: int
) -> dict[str, Any]:
    """Replay `samples` random sessions; each must return exactly its events, in order."""
    keys = random.Random(seed).sample(sorted(counts), min(samples, len(counts)))
    latencies, fetched, gets, records = [], [], [], 0
    for k in keys:
        seconds, headers, got = replay_http(port, topic, k)
        if len(got) != counts[k] or any(r["key"] != k.decode() for r in got):
            raise RuntimeError(f"replay of {k!r}: {len(got)} records, {counts[k]} produced")
        steps = [r["value"]["step"] for r in got]
        if steps != list(range(1, counts[k] + 1)):
            raise RuntimeError(f"replay of {k!r} out of order")
        latencies.append(seconds)
        fetched.append(int(headers["X-Strata-Replay-Bytes"]))
        gets.append(int(headers["X-Strata-Replay-Gets"]))
        records += len(got)
    latencies.sort()
    return {
        "sessions": len(keys),
        "records": records,
        "p50_ms": _quantile(latencies, 50) * 1000,
        "p99_ms": _quantile(latencies, 99) * 1000,
        "max_ms": latencies[-1] * 1000,
        "bytes_mean": sum(fetched) / len(fetched),
        "bytes_max": max(fetched),
        "gets_mean": sum(gets) / len(gets),
        "gets_max": max(gets),
    }


def strata_run(
    v: Any,
    topic: str,
    partitions: int,
    n_events: int,
    sessions: int,
    samples: int,
    scans: int,
    seed: int,
) -> dict[str, Any]:
    """Produce into broker `v`, restart it on an empty data directory, replay and scan."""
    names = session_names(sessions, seed)
    step(f"  replay: producing {n_events:,} events over {sessions:,} sessions")
    v.start()
    create_topic(v.bootstrap, topic, partitions)
    t0 = time.monotonic()
    counts = produce(v.bootstrap, topic, events(n_events, names, seed))
    produce_s = time.monotonic() - t0
    step("  replay: restarting on an empty data directory (cold caches)")
    v.stop_broker()
    shutil.rmtree(v.data_dir, ignore_errors=True)
    v.start()
    port = v.broker.metrics_port  # --metrics-listen: the HTTP listener, replay API included
    loc = v.store
    data, key_index, objects = index_sizes(loc)
    step(f"  replay: {samples} sessions over HTTP")
    r = measure_replays(port, topic, counts, samples, seed)
    scan = []
    for k in random.Random(seed + 1).sample(sorted(counts), scans):
        step(f"  replay: consumer scan of the topic for {k.decode()}")
        seconds, found = scan_for_key(v.bootstrap, topic, partitions, k)
        if found != counts[k]:
            raise RuntimeError(f"scan found {found} of {counts[k]} events of {k!r}")
        scan.append(seconds)
    figures = {
        "replay_p50_ms": r["p50_ms"],
        "replay_p99_ms": r["p99_ms"],
        "replay_bytes_pct_of_topic": 100 * r["bytes_mean"] / data,
        "replay_gets_per_session": r["gets_mean"],
        "replay_index_pct_of_data": 100 * key_index / data,
    }
    if scan:
        figures["replay_scan_s"] = sorted(scan)[len(scan) // 2]
        figures["replay_speedup_vs_scan"] = figures["replay_scan_s"] / (r["p50_ms"] / 1000)
    details = {
        "events": n_events,
        "sessions": sessions,
        "partitions": partitions,
        "produce_s": produce_s,
        "data_bytes": data,
        "key_index_bytes": key_index,
        "objects": objects,
        "replays": r,
        "scans_s": scan,
    }
    return {"figures": figures, "details": details}


def scan_only_run(
    system: Any, topic: str, partitions: int, n_events: int, sessions: int, scans: int, seed: int
) -> dict[str, Any]:
    """A system without a replay API (Kafka): the same events, then the consumer scan."""
    names = session_names(sessions, seed)
    create_topic(system.bootstrap, topic, partitions)
    counts = produce(system.bootstrap, topic, events(n_events, names, seed))
    scan = []
    for k in random.Random(seed + 1).sample(sorted(counts), scans):
        seconds, found = scan_for_key(system.bootstrap, topic, partitions, k)
        if found != counts[k]:
            raise RuntimeError(f"scan found {found} of {counts[k]} events of {k!r}")
        scan.append(seconds)
    return {
        "figures": {"replay_scan_s": sorted(scan)[len(scan) // 2]},
        "details": {"scans_s": scan},
    }


def replay_workload(ctx: Any) -> dict[str, Any]:
    """One repetition on the harness's system (a fresh broker for Strata, like `objects`)."""
    plan, system = ctx.plan, ctx.system
    n = ctx.replay_runs = getattr(ctx, "replay_runs", 0) + 1
    topic = ctx.topic("replay")
    args = (plan.replay_partitions, plan.replay_events, plan.replay_sessions)
    if not system.is_strata:
        return scan_only_run(system, topic, *args, plan.replay_scans, seed=n)
    extra = ["--object-block-bytes", str(plan.replay_block_bytes)]
    store = system.store
    if store is not None and store.kind == "file":  # objects outside the data dir we empty
        extra += ["--object-store", (system.root / f"replay-{n}-objects").as_uri()]
    system.stop_broker()
    v = system.variant(f"replay-{n}", extra)
    try:
        return strata_run(v, topic, *args, plan.replay_samples, plan.replay_scans, seed=n)
    finally:
        v.discard()
        shutil.rmtree(system.root / f"replay-{n}-objects", ignore_errors=True)
        system.start()


def main(argv: list[str] | None = None) -> int:
    """Strata alone (local directory or moto S3), outside the harness, printing the figures."""
    from benchmarks.systems import StrataS3System, StrataSystem

    ap = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--scans", type=int, default=1)
    ap.add_argument("--block-bytes", type=int, default=1024 * 1024)
    ap.add_argument("--s3", action="store_true", help="the log in moto's S3 (default: a directory)")
    ap.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="strata-replay-bench-"))
    system = (StrataS3System if args.s3 else StrataSystem)(work)
    system.prepare()
    extra = ["--object-block-bytes", str(args.block_bytes)]
    if not args.s3:
        extra += ["--object-store", (work / "objects").as_uri()]
    try:
        if args.s3:
            system.start()  # starts moto
            system.stop_broker()
        v = system.variant("replay", extra)
        try:
            result = strata_run(
                v, "agent-events", args.partitions, args.events, args.sessions,
                args.samples, args.scans, seed=1,
            )  # fmt: skip
        finally:
            v.discard()
    finally:
        system.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
