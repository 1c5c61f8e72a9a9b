"""What a topic's compression.type costs the broker: recompression on append.

Two figures:
- `cpu`: protocol.record_codec.recompressed alone, one core, on batches of ~300-byte agent
  events (JSON, as prose compresses) of two sizes: MB/s of uncompressed records and the time
  per batch, for the producer's codec -> the topic's codec pairs that matter.
- `broker`: a broker subprocess takes the same uncompressed produce load (confluent-kafka,
  acks=all) into a topic with compression.type=producer and into one per codec; the broker's
  CPU seconds (utime + stime from /proc) per MB produced, and the produce rate, side by side.

    python -m benchmarks.recompress [--messages 200000] [--cpu-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from protocol.record_codec import CODECS, encode_batch, recompressed


def agent_events(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    pad = f"{rng.getrandbits(4096):01024x}"
    out = []
    for i in range(n):
        start = rng.randrange(0, 700)
        out.append(
            json.dumps(
                {
                    "session": f"sess_{rng.getrandbits(40):010x}",
                    "step": i,
                    "type": rng.choice(("llm_call", "tool_call", "tool_result", "decision")),
                    "text": pad[start : start + 180],
                }
            ).encode()
        )
    return out


def cpu_figures(batch_records: tuple[int, ...] = (200, 3000), rounds: float = 1.0) -> dict:
    """MB/s (uncompressed records) and ms per batch of recompressed(), per codec pair."""
    figures: dict[str, float] = {}
    for records in batch_records:
        values = agent_events(records)
        plain = encode_batch(values, keys=[v[12:28] for v in values])
        raw_mb = len(plain) / 1e6
        sources = {"none": plain, "lz4": recompressed(plain, CODECS["lz4"])}
        for src_name, src in sources.items():
            for target in ("gzip", "snappy", "lz4", "zstd", "uncompressed"):
                codec = CODECS[target]
                if src_name == "lz4" and target == "lz4":
                    continue
                n = max(3, int(rounds * 20 / raw_mb))  # ~20 MB of records per figure
                t0 = time.perf_counter()
                for _ in range(n):
                    recompressed(src, codec)
                dt = time.perf_counter() - t0
                key = f"{src_name}_to_{target}_{len(plain) // 1024}k"
                figures[f"{key}_mb_s"] = round(raw_mb * n / dt, 1)
                figures[f"{key}_ms_per_batch"] = round(dt / n * 1000, 3)
    return figures


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_figures(messages: int) -> dict:
    """Broker CPU s/MB and produce MB/s for an uncompressed load per topic compression.type."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from devkit.broker import BrokerProcess

    values = agent_events(5000)
    mb = sum(len(values[i % len(values)]) for i in range(messages)) / 1e6
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data").start()
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            # the first run warms the broker up (and is not reported)
            for label, ctype in [("warmup", "producer")] + [
                (c, c) for c in ("producer", "lz4", "snappy", "zstd", "gzip")
            ]:
                topic = f"bench-{label}"
                new = NewTopic(topic, 6, 1, config={"compression.type": ctype})
                admin.create_topics([new])[topic].result(30)
                p = Producer(
                    {
                        "bootstrap.servers": broker.bootstrap,
                        "compression.type": "none",
                        "linger.ms": 10,
                        "batch.size": 262144,
                        "acks": "all",
                    }
                )
                cpu0, t0 = _cpu_seconds(broker.pid), time.perf_counter()
                for i in range(messages):
                    while True:
                        try:
                            p.produce(topic, values[i % len(values)])
                            break
                        except BufferError:
                            p.poll(0.01)
                    if i % 1000 == 0:
                        p.poll(0)
                assert p.flush(120) == 0
                dt, cpu = time.perf_counter() - t0, _cpu_seconds(broker.pid) - cpu0
                if label != "warmup":
                    figures[f"{ctype}_produce_mb_s"] = round(mb / dt, 1)
                    figures[f"{ctype}_broker_cpu_s_per_mb"] = round(cpu / mb, 4)
        finally:
            broker.stop()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--cpu-only", action="store_true")
    args = ap.parse_args()
    out = {"cpu": cpu_figures()}
    if not args.cpu_only:
        out["broker"] = broker_figures(args.messages)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
