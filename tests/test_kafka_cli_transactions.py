"""kafka-transactions.sh (Apache Kafka's TransactionsCommand) against a live transaction.

Acceptance (issue 16): an operator can see a transaction that is open right now with
`kafka-transactions list`, `describe --transactional-id X` and `describe-producers --topic T
--partition P`, and see it completed once it commits. The transaction is a confluent-kafka
transactional producer's, left open while the tool runs; the tool's tables are read the way an
operator reads them.
"""

from __future__ import annotations

import shutil

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.kafka_cli import TRANSACTIONS_COMMAND, KafkaCli

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

TXN_ID = "cli-open-txn"
TOPIC = "cli-txn-topic"


@pytest.fixture(scope="module")
def kafka_cli() -> KafkaCli:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH: the Kafka CLI tools need a JVM")
    return KafkaCli()


def _table(out: str) -> list[dict[str, str]]:
    """TransactionsCommand's tab-separated table (header row first) as one dict per row."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines, "the tool printed nothing"
    header = [h.strip() for h in lines[0].split("\t") if h.strip()]
    rows = []
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.split("\t")][: len(header)]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_kafka_transactions_lists_and_describes_an_open_transaction(
    kafka_cli: KafkaCli, broker_factory
) -> None:
    broker = broker_factory()

    def tool(*args: str) -> list[dict[str, str]]:
        r = kafka_cli.run(TRANSACTIONS_COMMAND, "--bootstrap-server", broker.bootstrap, *args)
        if r.returncode != 0 or r.stderr.strip():
            pytest.fail(f"{r.describe()}\n--- broker log ---\n{broker.log()[-4000:]}")
        return _table(r.stdout)

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, 2, 1)]).values():
        f.result(30)
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "transactional.id": TXN_ID,
            "transaction.timeout.ms": 120_000,
        }
    )
    p.init_transactions()
    p.begin_transaction()
    for i in range(5):
        p.produce(TOPIC, value=f"v{i}".encode(), partition=0)
    for i in range(3):
        p.produce(TOPIC, value=f"w{i}".encode(), partition=1)
    assert p.flush(30) == 0

    listed = {row["TransactionalId"]: row for row in tool("list")}
    assert listed[TXN_ID]["TransactionState"] == "Ongoing"
    assert listed[TXN_ID]["Coordinator"] == "0"
    producer_id = listed[TXN_ID]["ProducerId"]

    (desc,) = tool("describe", "--transactional-id", TXN_ID)
    assert desc["TransactionState"] == "Ongoing"
    assert desc["ProducerId"] == producer_id
    assert desc["TransactionTimeoutMs"] == "120000"
    assert int(desc["CurrentTransactionStartTimeMs"]) > 0
    assert sorted(desc["TopicPartitions"].split(",")) == [f"{TOPIC}-0", f"{TOPIC}-1"]

    (prod,) = tool("describe-producers", "--topic", TOPIC, "--partition", "0")
    assert prod["ProducerId"] == producer_id
    assert prod["LastSequence"] == "4"  # five records, sequences 0..4
    assert prod["CurrentTransactionStartOffset"] == "0"

    p.commit_transaction(30)
    (desc,) = tool("describe", "--transactional-id", TXN_ID)
    assert desc["TransactionState"] == "CompleteCommit"
    assert desc["TopicPartitions"] == ""
    (prod,) = tool("describe-producers", "--topic", TOPIC, "--partition", "1")
    assert prod["ProducerId"] == producer_id
    assert prod["CurrentTransactionStartOffset"] == "None"  # nothing open any more
    listed = {row["TransactionalId"]: row for row in tool("list")}
    assert listed[TXN_ID]["TransactionState"] == "CompleteCommit"
