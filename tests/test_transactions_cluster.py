"""Transactions in cluster mode: one transaction over partitions led by three brokers,
its coordinator moving mid-transaction; markers reach other brokers' partitions
through WriteTxnMarkers, and the outcome is all-or-nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException, Producer

from tests.cluster import wait_for
from tests.test_cluster import _create, cluster  # noqa: F401 (the fixture)
from tests.test_transactions import _read
from tests.wire import WireClient

pytestmark = pytest.mark.slow

FIND_COORDINATOR = (10, 3)


def _txn_coordinator(bootstrap: str, txn_id: str) -> int:
    with WireClient(bootstrap.split(",")[0]) as c:
        r = c.call(*FIND_COORDINATOR, {"key": txn_id, "key_type": 1})
        return r.node_id if r.error_code == 0 else -1


def test_a_transaction_over_three_brokers_survives_its_coordinator_moving(cluster) -> None:  # noqa: F811
    for i in (1, 2, 3):
        cluster.start(i)
    _create(cluster, "txn-spread", 6)
    assert wait_for(lambda: set(cluster.leaders("txn-spread").values()) == {1, 2, 3})
    txn_id = f"spread-{uuid.uuid4().hex[:6]}"
    p = Producer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": 60000,
        }
    )
    p.init_transactions(30)
    coordinator = _txn_coordinator(cluster.bootstrap, txn_id)
    assert coordinator in (1, 2, 3)

    p.begin_transaction()
    for n in range(60):
        p.produce("txn-spread", value=f"kept-{n}".encode(), partition=n % 6)
    assert p.flush(30) == 0
    # the coordinator's broker stops (a graceful hand-off) with the transaction open
    assert cluster.brokers[coordinator].stop() == 0
    assert wait_for(lambda: _txn_coordinator(cluster.bootstrap, txn_id) not in (-1, coordinator))
    for n in range(60, 120):
        p.produce("txn-spread", value=f"kept-{n}".encode(), partition=n % 6)
    p.commit_transaction(60)

    p.begin_transaction()
    for n in range(60):
        p.produce("txn-spread", value=f"dropped-{n}".encode(), partition=n % 6)
    assert p.flush(30) == 0
    p.abort_transaction(60)

    cluster.restart(coordinator)  # the partitions spread over three brokers again
    assert wait_for(lambda: set(cluster.leaders("txn-spread").values()) == {1, 2, 3}, 60)
    deadline = time.monotonic() + 60
    values: list[bytes] = []
    while len(values) < 120 and time.monotonic() < deadline:
        try:  # leaders may still be moving back
            got = _read(cluster.bootstrap, "txn-spread", 6, "read_committed", expect=120)
        except KafkaException:
            time.sleep(1)
            continue
        values = sorted(v for vs in got.values() for v in vs)
    assert values == sorted(f"kept-{n}".encode() for n in range(120))
