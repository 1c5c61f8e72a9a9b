"""The official Kafka Java client (kafka-clients 4.x, default settings) against a Strata broker.

Why: acceptance requires that an unmodified Java producer (idempotence on, acks=all) and an
assign()-based consumer round-trip 10,000 keyed messages over a 6-partition topic with every
compression codec, getting each one back in per-partition order with keys, values, headers,
timestamps and acknowledged offsets intact. tests/java/ClientCheck.java does the checking.
"""

from __future__ import annotations

import shutil

import pytest

from devkit.javaclient import run_client_check

MESSAGES = 10_000
PARTITIONS = 6

# A mark, not pytest.skip() in the body, so no broker is started just to be skipped.
pytestmark = [
    pytest.mark.skipif(
        shutil.which("java") is None,
        reason="`java` is not on PATH: the Java client check needs a JDK 17+",
    ),
    pytest.mark.slow,
]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_java_client_roundtrip(broker, codec: str) -> None:
    result = run_client_check(
        broker.bootstrap,
        f"java-check-{codec}",
        MESSAGES,
        codec,
        partitions=PARTITIONS,
        timeout=240.0,
    )
    assert result["errors"] == []
    assert result["produced"] == MESSAGES
    assert result["consumed"] == MESSAGES
    assert result["partitions"] == PARTITIONS
    assert result["client_version"].startswith("4.")
