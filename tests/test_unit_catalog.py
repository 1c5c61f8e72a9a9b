"""The catalog's pure bookkeeping (s3stream/catalog.py): object keys and sequence numbers,
which objects are still referenced, retiring them while reads are in flight, and hand-off
records, over a local directory store (no network, no processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.log.partition import Partition
from s3stream.api import BatchRef
from s3stream.catalog import Catalog, PartitionView
from s3stream.local_store import LocalDirectoryStore
from s3stream.store import ObjectNotFound

pytestmark = pytest.mark.unit

T = b"T" * 16


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(LocalDirectoryStore(tmp_path), broker_id=3)


def test_keys_are_per_broker_and_sequence_numbers_sort(catalog: Catalog) -> None:
    assert catalog.data_prefix == "data/b3/"
    assert catalog.manifest_key == "manifests/b3.msgpack"
    assert catalog.data_key(42) == "data/b3/0000000000000042.obj"
    assert catalog._seq_of(catalog.data_key(42)) == 42
    assert catalog._seq_of("data/b4/0000000000000042.obj") is None  # another broker's
    assert catalog._seq_of("data/b3/42.obj") is None
    assert Catalog.handoff_key(T, 5) == f"handoffs/{T.hex()}-5.msgpack"


def test_sequence_numbers_are_allocated_once_and_released(catalog: Catalog) -> None:
    a, b = catalog.allocate_seq(), catalog.allocate_seq()
    assert (a, b) == (0, 1) and catalog._inflight_seqs == {0, 1}
    obj = catalog.add(a, 100, 1234)
    catalog.abandon(b)
    assert catalog._inflight_seqs == set()
    assert obj.key == catalog.data_key(0) and catalog.get(obj.id) is obj
    assert catalog.allocate_seq() == 2  # an abandoned number is not handed out again


def test_ensure_adds_another_brokers_object_once(catalog: Catalog) -> None:
    key = "data/b1/0000000000000007.obj"
    first = catalog.ensure(key, 7, 500, 1)
    assert catalog.ensure(key, 7, 500, 1) is first
    assert first.id in catalog.objects


def test_unreferenced_retire_and_forget(catalog: Catalog) -> None:
    used, unused = catalog.add(0, 100, 0), catalog.add(1, 100, 0)
    p = Partition(T, "t", 0)
    p.record_block(BatchRef(0, 9, 0, 0, 100, object_id=used.id))
    assert catalog.unreferenced([p]) == [unused]
    catalog.retire([unused])
    assert unused.id not in catalog.objects
    assert catalog.get(unused.id) is unused  # reads in flight still resolve it
    catalog.forget([unused])
    with pytest.raises(ObjectNotFound):
        catalog.get(unused.id)


def test_a_handoff_record_reads_back_as_the_partitions_view(catalog: Catalog) -> None:
    obj = catalog.add(catalog.allocate_seq(), 4096, 99)
    p = Partition(T, "t", 2)
    p.leader_epoch = 4
    p.record_block(BatchRef(0, 9, 11, 0, 200, object_id=obj.id))
    p.record_block(BatchRef(10, 19, 12, 200, 300, object_id=obj.id))
    raw = catalog.handoff_record(p, producers=None)

    async def round_trip() -> PartitionView | None:
        await catalog.store.put(Catalog.handoff_key(T, 2), raw)
        return await catalog.read_handoff(T, 2)

    view = asyncio.run(round_trip())
    assert view is not None
    assert (view.epoch, view.writer, view.producers) == (4, 3, None)
    assert view.rows == [
        (obj.key, 0, 4096, 99, 0, 9, 11, 0, 200),
        (obj.key, 0, 4096, 99, 10, 19, 12, 200, 300),
    ]
    assert view.end == 20
    assert asyncio.run(catalog.read_handoff(T, 3)) is None
