"""The Fetch request the broker's own Kafka client (broker.peers) sends: to a peer of the
cluster (the console, a replay's leader tail) or to a link's source cluster.

One builder for every caller: topics by name (Fetch v4..v12; `last_fetched_epoch`
is written from v12 on and ignored below), no fetch session, replica_id -1 (an
ordinary consumer), the isolation level the caller asks for.
"""

from __future__ import annotations

from collections.abc import Mapping

READ_UNCOMMITTED, READ_COMMITTED = 0, 1


def fetch_request(
    wanted: Mapping[str, Mapping[int, int]],
    *,
    max_wait_ms: int,
    partition_max_bytes: int,
    max_bytes: int,
    isolation_level: int = READ_UNCOMMITTED,
) -> dict:
    """The body of a Fetch of `wanted` (topic -> partition -> fetch offset)."""
    return {
        "replica_id": -1,
        "max_wait": max_wait_ms,
        "min_bytes": 1,
        "max_bytes": max_bytes,
        "isolation_level": isolation_level,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": p,
                        "current_leader_epoch": -1,
                        "fetch_offset": offset,
                        "last_fetched_epoch": -1,
                        "log_start_offset": -1,
                        "partition_max_bytes": partition_max_bytes,
                    }
                    for p, offset in parts.items()
                ],
            }
            for topic, parts in wanted.items()
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def one_partition_fetch(
    topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int = 0
) -> dict:
    """The body of a Fetch of one partition from `offset`, answered at once by default."""
    return fetch_request(
        {topic: {partition: offset}},
        max_wait_ms=max_wait_ms,
        partition_max_bytes=max_bytes,
        max_bytes=max_bytes,
    )
