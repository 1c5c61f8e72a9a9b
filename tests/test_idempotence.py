"""Idempotent producers: duplicates answered as success, gaps refused, stale epochs fenced.

Crafted with the raw wire client, because real clients only send these on failures.
"""

from __future__ import annotations

import shutil

from protocol.errors import ErrorCode
from tests.wire import WireClient, make_batch


def _values(client: WireClient, topic: str) -> list[bytes]:
    from tests.wire_records import decode_values

    return decode_values(client.fetch(topic, 0, 0).records)


def test_retried_batch_is_acknowledged_once_at_its_original_offset(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        c.create_topic("idem", 1)
        pid, epoch = c.init_producer_id()
        first = c.produce(
            "idem",
            0,
            make_batch([b"a", b"b"], producer_id=pid, producer_epoch=epoch, base_sequence=0),
        )
        retry = c.produce(
            "idem",
            0,
            make_batch([b"a", b"b"], producer_id=pid, producer_epoch=epoch, base_sequence=0),
        )
        assert first.error_code == retry.error_code == ErrorCode.none
        assert retry.base_offset == first.base_offset == 0
        nxt = c.produce(
            "idem", 0, make_batch([b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=2)
        )
        assert (nxt.error_code, nxt.base_offset) == (ErrorCode.none, 2)
        assert _values(c, "idem") == [b"a", b"b", b"c"]


def test_sequence_gap_is_out_of_order(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        c.create_topic("gap", 1)
        pid, epoch = c.init_producer_id()
        ok = c.produce(
            "gap", 0, make_batch([b"a"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        )
        assert ok.error_code == ErrorCode.none
        gap = c.produce(
            "gap", 0, make_batch([b"c"], producer_id=pid, producer_epoch=epoch, base_sequence=5)
        )
        assert gap.error_code == ErrorCode.out_of_order_sequence_number
        assert _values(c, "gap") == [b"a"]


def test_stale_epoch_is_fenced_after_reinit(broker) -> None:
    with WireClient(broker.bootstrap) as c:
        c.create_topic("fence", 1)
        pid, epoch = c.init_producer_id()
        assert (
            c.produce(
                "fence",
                0,
                make_batch([b"old"], producer_id=pid, producer_epoch=epoch, base_sequence=0),
            ).error_code
            == ErrorCode.none
        )
        bumped = c.call(
            22,
            4,
            {
                "transactional_id": None,
                "transaction_timeout": 60000,
                "producer_id": pid,
                "producer_epoch": epoch,
            },
        )
        assert (bumped.producer_id, bumped.producer_epoch) == (pid, epoch + 1)
        new = c.produce(
            "fence",
            0,
            make_batch([b"new"], producer_id=pid, producer_epoch=epoch + 1, base_sequence=0),
        )
        assert new.error_code == ErrorCode.none
        stale = c.produce(
            "fence",
            0,
            make_batch([b"zombie"], producer_id=pid, producer_epoch=epoch, base_sequence=1),
        )
        assert stale.error_code == ErrorCode.invalid_producer_epoch
        assert _values(c, "fence") == [b"old", b"new"]


def test_producer_ids_are_unique_across_restarts(broker_factory) -> None:
    b = broker_factory()
    with WireClient(b.bootstrap) as c:
        before = {c.init_producer_id()[0] for _ in range(3)}
    b.kill()
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        after = {c.init_producer_id()[0] for _ in range(3)}
    assert len(before) == 3 and len(after) == 3 and not before & after


def test_sequence_state_survives_restart(broker_factory) -> None:
    """A retry that arrives after a restart is still recognised as a duplicate."""
    b = broker_factory()
    batch = None
    with WireClient(b.bootstrap) as c:
        c.create_topic("restart-idem", 1)
        pid, epoch = c.init_producer_id()
        batch = make_batch([b"once"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        assert c.produce("restart-idem", 0, batch).base_offset == 0
    b.kill()
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        retry = c.produce("restart-idem", 0, batch)
        assert (retry.error_code, retry.base_offset) == (ErrorCode.none, 0)
        assert _values(c, "restart-idem") == [b"once"]


def test_a_retry_is_recognised_from_the_bucket_alone_behind_many_newer_objects(
    broker_factory,
) -> None:
    """Found by the chaos harness (an acknowledged batch appended twice after a
    failover): the next leader knew only the producers of the newest few uploaded
    blocks. The catalog stores the producers' state with the object entries, so a
    producer whose batch lies under many newer objects is still known, here to a
    broker opening from the bucket alone (its WAL gone)."""
    b = broker_factory("--durability", "object", "--upload-interval-ms", "20")
    with WireClient(b.bootstrap) as c:
        c.create_topic("deep-idem", 1)
        pid, epoch = c.init_producer_id()
        batch = make_batch([b"once"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        assert c.produce("deep-idem", 0, batch).base_offset == 0
        other, other_epoch = c.init_producer_id()
        for i in range(8):  # acks=all in object mode: one upload, one object each
            more = make_batch(
                [b"later-%d" % i], producer_id=other, producer_epoch=other_epoch, base_sequence=i
            )
            assert c.produce("deep-idem", 0, more).base_offset == i + 1
    assert b.stop() == 0
    shutil.rmtree(b.data_dir / "wal")
    b2 = broker_factory(data_dir=b.data_dir, port=b.port)
    with WireClient(b2.bootstrap) as c:
        retry = c.produce("deep-idem", 0, batch)
        assert (retry.error_code, retry.base_offset) == (ErrorCode.none, 0)
        assert _values(c, "deep-idem") == [b"once"] + [b"later-%d" % i for i in range(8)]


def test_silent_producers_are_forgotten_after_expiration() -> None:
    """producer.id.expiration.ms: state of a producer silent for a day goes away."""
    from broker.log.producer_state import ProducerStateTable
    from protocol import records

    table = ProducerStateTable()
    for pid, ts in ((1, 1_000), (2, 90_000_000)):
        batch = make_batch(
            [b"x"], producer_id=pid, producer_epoch=0, base_sequence=0, timestamps=[ts]
        )
        table.update(records.validate(batch), 0)
    assert table.expire(now_ms=90_000_500, max_age_ms=86_400_000) == 1
    assert len(table) == 1
