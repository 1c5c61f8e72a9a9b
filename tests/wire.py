"""A tiny blocking Kafka client over raw sockets, for tests that need byte-level control.

Real clients cover the everyday paths; this one crafts what they never send on
purpose: out-of-order sequences, stale epochs, corrupt CRCs.
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from protocol.codec import build
from protocol.record_codec import encode_batch


def encode_request(
    api_key: int, version: int, body: dict[str, Any], correlation_id: int = 1
) -> bytes:
    cls = load_request_schema(api_key, version)
    buf = io.BytesIO()
    header_cls = cls.__header_schema__
    entity_writer(header_cls)(
        buf,
        header_cls(
            request_api_key=api_key,
            request_api_version=version,
            correlation_id=correlation_id,
            client_id="strata-tests",
        ),
    )
    entity_writer(cls)(buf, build(cls, body))
    data = buf.getvalue()
    return struct.pack(">i", len(data)) + data


class WireClient:
    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> bytes:
        head = self._recv_exactly(4)
        (size,) = struct.unpack(">i", head)
        return self._recv_exactly(size)

    def _recv_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("connection closed by broker")
            out += chunk
        return bytes(out)

    def call(self, api_key: int, version: int, body: dict[str, Any]) -> Any:
        self._correlation += 1
        self.send_raw(encode_request(api_key, version, body, self._correlation))
        frame = self.recv_frame()
        cls = load_response_schema(api_key, version)
        header, used = entity_reader(cls.__header_schema__)(frame, 0)
        assert header.correlation_id == self._correlation
        return entity_reader(cls)(frame, used)[0]

    # --- conveniences ---------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int = 1, configs: dict[str, str] | None = None
    ) -> Any:
        return self.call(*CREATE_TOPICS, create_topics_body(name, partitions, configs)).topics[0]

    def init_producer_id(self) -> tuple[int, int]:
        r = self.call(22, 4, {"transactional_id": None, "transaction_timeout": 60000})
        return r.producer_id, r.producer_epoch

    def produce(self, topic: str, partition: int, records: bytes, acks: int = -1) -> Any:
        r = self.call(*PRODUCE, produce_body(topic, partition, records, acks))
        return r.responses[0].partition_responses[0]

    def fetch(self, topic: str, partition: int, offset: int, max_wait_ms: int = 100) -> Any:
        return self.fetch_many(topic, {partition: offset}, max_wait_ms)[0]

    def fetch_many(
        self,
        topic: str,
        offsets: dict[int, int],
        max_wait_ms: int = 100,
        partition_max_bytes: int = 10_000_000,
        max_bytes: int = 50_000_000,
    ) -> list[Any]:
        """Fetch v11 of several partitions of one topic; the partition responses in order."""
        body = fetch_body(topic, offsets, max_wait_ms, partition_max_bytes, max_bytes)
        return list(self.call(*FETCH, body).responses[0].partitions)

    def list_offset(self, topic: str, partition: int, timestamp: int) -> Any:
        r = self.call(*LIST_OFFSETS, list_offsets_body(topic, partition, timestamp))
        return r.topics[0].partitions[0]

    def pipeline(self, calls: list[tuple[int, int, dict[str, Any]]]) -> list[Any]:
        """Send every request before reading any answer (as clients pipeline them on one
        connection), then read the answers in order."""
        first = self._correlation + 1
        self.send_raw(
            b"".join(
                encode_request(key, version, body, first + i)
                for i, (key, version, body) in enumerate(calls)
            )
        )
        self._correlation += len(calls)
        out = []
        for i, (key, version, _) in enumerate(calls):
            frame = self.recv_frame()
            cls = load_response_schema(key, version)
            header, used = entity_reader(cls.__header_schema__)(frame, 0)
            assert header.correlation_id == first + i
            out.append(entity_reader(cls)(frame, used)[0])
        return out

    def send_and_leave(self, api_key: int, version: int, body: dict[str, Any]) -> None:
        """Send one request and close the connection at once, before any answer."""
        self._correlation += 1
        self.send_raw(encode_request(api_key, version, body, self._correlation))
        self.sock.close()


# --- request bodies: (api key, version) and a builder each ------------------------------

PRODUCE = (0, 9)
FETCH = (1, 11)
JOIN_GROUP = (11, 5)
CREATE_TOPICS = (19, 7)
DELETE_TOPICS = (20, 6)
METADATA = (3, 12)
LIST_OFFSETS = (2, 7)
DELETE_RECORDS = (21, 2)
OFFSET_COMMIT = (8, 8)
OFFSET_FETCH = (9, 8)
DESCRIBE_CONFIGS = (32, 4)
INCREMENTAL_ALTER_CONFIGS = (44, 1)
TOPIC_RESOURCE = 2


def produce_body(topic: str, partition: int, records: bytes, acks: int = -1) -> dict[str, Any]:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout": 10000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }


def fetch_body(
    topic: str,
    offsets: dict[int, int],
    max_wait_ms: int = 100,
    partition_max_bytes: int = 10_000_000,
    max_bytes: int = 50_000_000,
) -> dict[str, Any]:
    return {
        "replica_id": -1,
        "max_wait": max_wait_ms,
        "min_bytes": 1,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": partition,
                        "current_leader_epoch": -1,
                        "fetch_offset": offset,
                        "log_start_offset": -1,
                        "partition_max_bytes": partition_max_bytes,
                    }
                    for partition, offset in offsets.items()
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def join_group_body(
    group: str, topic: str, member_id: str = "", session_ms: int = 6000
) -> dict[str, Any]:
    """JoinGroup v5 of a consumer group member subscribed to `topic` (range assignor)."""
    name = topic.encode()
    # ConsumerProtocolSubscription v0: version, topics, user data (null)
    subscription = struct.pack(">hih", 0, 1, len(name)) + name + struct.pack(">i", -1)
    return {
        "group_id": group,
        "session_timeout": session_ms,
        "rebalance_timeout": session_ms,
        "member_id": member_id,
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": subscription}],
    }


def create_topics_body(
    name: str, partitions: int = 1, configs: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "topics": [
            {
                "name": name,
                "num_partitions": partitions,
                "replication_factor": 1,
                "assignments": [],
                "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
            }
        ],
        "timeout": 10000,
        "validate_only": False,
    }


def delete_topics_body(*names: str) -> dict[str, Any]:
    return {"topics": [{"name": n, "topic_id": None} for n in names], "timeout": 10000}


def metadata_body(*topics: str, auto_create: bool = True) -> dict[str, Any]:
    return {
        "topics": [{"name": t, "topic_id": None} for t in topics],
        "allow_auto_topic_creation": auto_create,
        "include_topic_authorized_operations": False,
    }


def list_offsets_body(topic: str, partition: int, timestamp: int) -> dict[str, Any]:
    return {
        "replica_id": -1,
        "isolation_level": 0,
        "topics": [
            {
                "name": topic,
                "partitions": [
                    {
                        "partition_index": partition,
                        "current_leader_epoch": -1,
                        "timestamp": timestamp,
                    }
                ],
            }
        ],
    }


def delete_records_body(topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {
        "topics": [
            {"name": topic, "partitions": [{"partition_index": partition, "offset": offset}]}
        ],
        "timeout": 10000,
    }


def offset_commit_body(group: str, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """A commit outside any generation (member id empty), as admin tools and simple
    consumers send it."""
    return {
        "group_id": group,
        "generation_id_or_member_epoch": -1,
        "member_id": "",
        "group_instance_id": None,
        "topics": [
            {
                "name": topic,
                "partitions": [
                    {
                        "partition_index": partition,
                        "committed_offset": offset,
                        "committed_leader_epoch": -1,
                        "committed_metadata": "",
                    }
                ],
            }
        ],
    }


def offset_fetch_body(group: str, topic: str, partition: int) -> dict[str, Any]:
    return {
        "groups": [
            {"group_id": group, "topics": [{"name": topic, "partition_indexes": [partition]}]}
        ],
        "require_stable": False,
    }


def alter_topic_configs_body(topic: str, configs: dict[str, str]) -> dict[str, Any]:
    """IncrementalAlterConfigs: SET each config of one topic."""
    return {
        "resources": [
            {
                "resource_type": TOPIC_RESOURCE,
                "resource_name": topic,
                "configs": [
                    {"name": k, "config_operation": 0, "value": v} for k, v in configs.items()
                ],
            }
        ],
        "validate_only": False,
    }


def describe_topic_configs_body(topic: str) -> dict[str, Any]:
    return {
        "resources": [
            {"resource_type": TOPIC_RESOURCE, "resource_name": topic, "configuration_keys": None}
        ],
        "include_synonyms": False,
        "include_documentation": False,
    }


# --- RecordBatch v2 construction ------------------------------------------------------

make_batch = encode_batch
