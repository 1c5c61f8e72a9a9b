"""The share-partition state a leader keeps at the group's coordinator: its wire form
(WriteShareGroupState / ReadShareGroupState) and the fencing of deposed leaders."""

from __future__ import annotations

import uuid

import pytest

from broker.groups.share_partition import RecordState, SharePartition, ShareSettings
from broker.groups.share_persister import fenced, from_wire, to_wire
from protocol.codec import decode_request, encode_request

pytestmark = pytest.mark.unit


def _round_trip(record: dict, leader_epoch: int) -> dict:
    key = (uuid.uuid4().bytes, 3)
    wire = to_wire(key, {**record, "le": leader_epoch})
    body = {
        "group_id": "g",
        "topics": [{"topic_id": uuid.UUID(bytes=key[0]), "partitions": [wire]}],
    }
    frame = encode_request(85, 0, 1, "test", body)
    request = decode_request(bytes(frame)[4:])
    return from_wire(request.body.topics[0].partitions[0])


def test_a_share_partition_read_back_from_its_wire_form_keeps_acknowledged_records_done():
    sp = SharePartition(10, ShareSettings())
    sp.acquire("m1", 10, 19, 10, 0.0)
    assert sp.acknowledge("m1", 10, 12, [1], 0.0) is None  # accepted: start moves to 13
    assert sp.acknowledge("m1", 15, 15, [3], 0.0) is None  # rejected: archived
    back = SharePartition.from_record(_round_trip(sp.to_record(), 7), ShareSettings())
    assert back.start_offset == 13
    assert back.records[15].state == RecordState.ARCHIVED
    # acquired when written: available again, delivered once already
    assert back.records[14].state == RecordState.AVAILABLE
    assert back.records[14].delivery_count == 1
    assert back.next_fetch_offset(100) == 13


def test_a_write_from_an_older_leader_epoch_is_fenced_and_a_newer_one_is_not():
    stored = {"start": 0, "runs": [], "le": 5}
    assert fenced(stored, {"start": 0, "runs": [], "le": 4})
    assert not fenced(stored, {"start": 0, "runs": [], "le": 5})
    assert not fenced(stored, {"start": 0, "runs": [], "le": 6})
    assert not fenced(None, {"start": 0, "runs": [], "le": 0})
