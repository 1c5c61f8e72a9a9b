"""Fetch sessions (KIP-227) on many partitions: the bytes of one idle fetch with and without
a session, and its round trip.

A consumer of N partitions (default 1,000) that is caught up sends a fetch for all of them
again and again. Sessionless (librdkafka's way), each request names every partition and each
answer carries every partition; in a session (the Java client's and kafka-python's way) both
shrink to a few bytes. Fetch v12 requests over one connection, max wait 0 (no long poll), so
the round trip is the broker's cost of one fetch.

    python -m benchmarks.fetch_sessions --partitions 1000 --fetches 50
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from devkit.broker import BrokerProcess
from protocol.codec import decode_response, encode_request

FETCH, VERSION = 1, 12


def _fetch(topic: str, offsets: dict[int, int], session_id: int, epoch: int) -> dict[str, Any]:
    parts = [
        {
            "partition": p,
            "current_leader_epoch": -1,
            "fetch_offset": o,
            "last_fetched_epoch": -1,
            "log_start_offset": -1,
            "partition_max_bytes": 1 << 20,
        }
        for p, o in offsets.items()
    ]
    return {
        "replica_id": -1,
        "max_wait": 0,
        "min_bytes": 1,
        "max_bytes": 50 << 20,
        "isolation_level": 0,
        "session_id": session_id,
        "session_epoch": epoch,
        "topics": [{"topic": topic, "partitions": parts}] if parts else [],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


class _Conn:
    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.correlation = 0

    def call(self, api_key: int, version: int, body: dict) -> tuple[Any, int, int, float]:
        """(response, request bytes, response bytes, round trip seconds)."""
        self.correlation += 1
        req = encode_request(api_key, version, self.correlation, "bench", body)
        t0 = time.perf_counter()
        self.sock.sendall(req)
        (size,) = struct.unpack(">i", self._read(4))
        frame = self._read(size)
        rtt = time.perf_counter() - t0
        return decode_response(api_key, version, frame)[1], len(req), size + 4, rtt

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            out += chunk
        return bytes(out)


def run(partitions: int, fetches: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-sessions-") as tmp:
        broker = BrokerProcess(Path(tmp) / "data").start()
        try:
            c = _Conn(broker.bootstrap)
            topic = "sessions-bench"
            create = {
                "topics": [
                    {
                        "name": topic,
                        "num_partitions": partitions,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [],
                    }
                ],
                "timeout": 30000,
                "validate_only": False,
            }
            c.call(19, 7, create)
            offsets = dict.fromkeys(range(partitions), 0)
            out: dict[str, Any] = {"partitions": partitions, "fetches": fetches}
            rows = [c.call(FETCH, VERSION, _fetch(topic, offsets, 0, -1)) for _ in range(fetches)]
            out["sessionless"] = _figures(rows)
            first = c.call(FETCH, VERSION, _fetch(topic, offsets, 0, 0))[0]
            rows = [
                c.call(FETCH, VERSION, _fetch(topic, {}, first.session_id, epoch))
                for epoch in range(1, fetches + 1)
            ]
            out["incremental"] = _figures(rows)
            out["request_bytes_ratio"] = round(
                out["sessionless"]["request_bytes"] / out["incremental"]["request_bytes"], 1
            )
            return out
        finally:
            broker.stop()


def _figures(rows: list[tuple[Any, int, int, float]]) -> dict[str, Any]:
    errors = {r[0].error_code for r in rows}
    return {
        "request_bytes": rows[-1][1],
        "response_bytes": rows[-1][2],
        "round_trip_ms_p50": round(statistics.median(r[3] for r in rows) * 1000, 2),
        "errors": sorted(int(e) for e in errors),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--fetches", type=int, default=50)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.partitions, args.fetches), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
