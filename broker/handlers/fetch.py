"""Fetch: read batches up to the high watermark, long-polling for min_bytes / max_wait.

read_committed (isolation level 1) reads up to the last stable offset instead, and
lists the aborted transactions in the range read, which clients skip.

Fetch sessions (KIP-227, v7+; the rules in broker/fetch_sessions.py): a full fetch with
epoch 0 opens a session when the cache has a slot; an incremental fetch names only the
partitions whose fetch position changed (the rest come from the session) and its answer
carries only the partitions with records, errors or offsets the client has not been told.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.deferred import Deferred
from broker.fetch_sessions import (
    CachedPartition,
    FetchContext,
    Mode,
    PartitionKey,
    TopicKey,
    Wanted,
)
from broker.handlers.auth import TOPIC, allowed
from broker.handlers.resolve import served
from broker.log.partition import Partition
from broker.security.acl import Operation
from broker.zone_reads import choose_replica
from protocol.codec import Request
from protocol.errors import ErrorCode
from protocol.versions import ApiKey
from s3stream.store import ObjectNotFound, ObjectStoreError
from wal import TrimmedRead

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext
    from broker.log.topics import TopicState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Wanted:
    index: int
    partition: Partition | None
    error: ErrorCode
    fetch_offset: int
    max_bytes: int
    leader_epoch: int
    state: TopicState | None = None
    replica: bool = False  # led elsewhere; served from the bucket for a client's rack


def _rack(request: Request) -> str:
    return getattr(request.body, "rack_id", "") or ""


Topics = list[tuple[TopicKey, list[tuple[int, Wanted]]]]


def _requested(request: Request) -> Topics:
    """The partitions a request names: (topic id or name, [(partition, wanted)])."""
    by_id = request.header.api_version >= 13
    return [
        (
            t.topic_id if by_id else t.topic,
            [
                (
                    fp.partition,
                    Wanted(
                        fp.fetch_offset,
                        fp.partition_max_bytes,
                        getattr(fp, "current_leader_epoch", -1),
                    ),
                )
                for fp in t.partitions
            ],
        )
        for t in request.body.topics
    ]


def _forgotten(request: Request) -> list[PartitionKey]:
    by_id = request.header.api_version >= 13
    out: list[PartitionKey] = []
    for t in getattr(request.body, "forgotten_topics_data", None) or ():
        key = t.topic_id if by_id else t.topic
        out.extend((key, index) for index in t.partitions)
    return out


def _session_topics(session) -> Topics:
    """An incremental fetch reads every partition of its session, in the session's order
    (grouped by topic, each topic where its first partition is)."""
    by_topic: dict[TopicKey, list[tuple[int, Wanted]]] = {}
    for (topic, index), c in session.partitions.items():
        by_topic.setdefault(topic, []).append(
            (index, Wanted(c.fetch_offset, c.max_bytes, c.leader_epoch))
        )
    return list(by_topic.items())


def _resolve(
    ctx: HandlerContext, request: Request, topics: Topics
) -> list[tuple[dict, list[_Wanted]]]:
    logs = ctx.logs
    by_id = request.header.api_version >= 13
    # a client in a rack may read partitions led elsewhere from this broker (zone_reads)
    replicas = ctx.zones.replicas if ctx.zones is not None and _rack(request) else None
    plan = []
    for topic, partitions in topics:
        state = logs.topics_by_id.get(topic.bytes) if by_id else logs.topics.get(topic)
        missing = ErrorCode.unknown_topic_id if by_id else ErrorCode.unknown_topic_or_partition
        name = state.name if state is not None else (None if by_id else topic)
        denied = name is not None and not allowed(ctx, request, Operation.READ, TOPIC, name)
        wanted = []
        for index, fw in partitions:
            epoch = fw.leader_epoch
            p, error = served(ctx, state, index, epoch)
            if state is None:
                error = missing
            if denied:
                p, error = None, ErrorCode.topic_authorization_failed
            replica = (
                replicas is not None
                and error == ErrorCode.not_leader_or_follower
                and p is not None
                and not p.deleted
            )
            wanted.append(
                _Wanted(
                    index,
                    p,
                    ErrorCode.none if replica else error,
                    fw.fetch_offset,
                    fw.max_bytes,
                    epoch,
                    state,
                    replica,
                )
            )
        key = {"topic_id": topic} if by_id else {"topic": topic}
        plan.append((key, wanted))
    return plan


async def _read_all(
    ctx: HandlerContext, plan, max_bytes: int, committed: bool, rack: str = ""
) -> tuple[list[dict], int, bool]:
    """One pass over the wanted partitions: (topic responses, bytes, any error or
    redirect: either answers at once)."""
    logs = ctx.logs
    remaining = max_bytes
    total = 0
    any_error = False
    responses = []
    for key, wanted in plan:
        parts = []
        for w in wanted:
            p = w.partition
            error = w.error
            data: list = []
            aborted = None
            if w.replica:
                part = await _replica_read(ctx, w, min(w.max_bytes, remaining), total == 0)
                size = _size(part["records"])
                total += size
                remaining -= size
                any_error = (
                    any_error or part["preferred_read_replica"] >= 0 or bool(part["error_code"])
                )
                parts.append(part)
                continue
            preferred = _preferred(ctx, p, w, rack) if p is not None and rack else None
            if preferred is not None:
                any_error = True  # answered at once: the client goes to its rack
                parts.append(_redirect(w, p, preferred))
                continue
            if p is not None and error == ErrorCode.none:
                limit = p.last_stable_offset if committed else p.high_watermark
                if p.deleted:
                    error = ErrorCode.unknown_topic_or_partition
                elif not ctx.leadership.serves(p):  # handed over while the fetch waited
                    error = ErrorCode.not_leader_or_follower
                elif w.fetch_offset < p.log_start_offset or w.fetch_offset > p.log_end_offset:
                    error = ErrorCode.offset_out_of_range
                elif remaining > 0 and w.fetch_offset < limit:
                    try:
                        batches = await logs.read(
                            p,
                            w.fetch_offset,
                            min(w.max_bytes, remaining),
                            limit,
                            first_may_exceed=total == 0,
                        )
                    except (TrimmedRead, ObjectNotFound) as e:
                        if w.fetch_offset < p.log_start_offset:  # retention, meanwhile
                            batches, error = [], ErrorCode.offset_out_of_range
                        else:
                            log.error("fetch %s at %d: %r", p, w.fetch_offset, e)
                            batches, error = [], ErrorCode.kafka_storage_error
                    except ObjectStoreError as e:  # the store is down: retriable for clients
                        log.warning("fetch %s at %d: object store: %r", p, w.fetch_offset, e)
                        batches, error = [], ErrorCode.kafka_storage_error
                    data = batches  # the log's own buffers, written as they are
                    size = _size(data)
                    if committed and size:
                        aborted = _aborted(p, w.fetch_offset, limit)
                    total += size
                    remaining -= size
            any_error = any_error or error != ErrorCode.none
            parts.append(
                {
                    "partition_index": w.index,
                    "error_code": error,
                    "high_watermark": p.high_watermark if p is not None else -1,
                    "last_stable_offset": p.last_stable_offset if p is not None else -1,
                    "log_start_offset": p.log_start_offset if p is not None else -1,
                    "aborted_transactions": aborted,
                    "preferred_read_replica": -1,
                    "records": data,
                }
            )
        responses.append({**key, "partitions": parts})
    return responses, total, any_error


def _size(records: list) -> int:
    """Bytes of a partition's records: a list of batch buffers (or one buffer)."""
    if isinstance(records, bytes | bytearray | memoryview):
        return len(records)
    return sum(len(b) for b in records)


def _uploaded_end(p: Partition) -> int:
    """Offsets below this are in object blocks (readable from the bucket by any broker)."""
    if p.object_entries < len(p.batches):
        return p.batches.base_offsets[p.object_entries]
    return p.log_end_offset


def _preferred(ctx: HandlerContext, p: Partition, w: _Wanted, rack: str) -> int | None:
    """KIP-392 on the leader: a broker in the client's rack that can serve this fetch
    (what it asks for is uploaded already), or None to serve it here."""
    zones = ctx.zones
    if zones is None or w.error != ErrorCode.none or w.fetch_offset >= _uploaded_end(p):
        return None
    if w.fetch_offset < p.log_start_offset or not ctx.leadership.serves(p):
        return None
    brokers = [(b.broker_id, b.rack) for b in ctx.leadership.brokers()]
    return choose_replica(p.topic, p.index, rack, zones.rack or None, brokers)


def _redirect(w: _Wanted, p: Partition | None, broker_id: int) -> dict:
    return {
        "partition_index": w.index,
        "error_code": ErrorCode.none,
        "high_watermark": p.high_watermark if p is not None else -1,
        "last_stable_offset": p.last_stable_offset if p is not None else -1,
        "log_start_offset": p.log_start_offset if p is not None else -1,
        "aborted_transactions": None,
        "preferred_read_replica": broker_id,
        "records": b"",
    }


async def _replica_read(ctx: HandlerContext, w: _Wanted, max_bytes: int, first: bool) -> dict:
    """A partition led elsewhere, for a client in a rack: its uploaded batches from the
    bucket, or (at or above what is uploaded) the leader as preferred read replica."""
    assert ctx.zones is not None and ctx.zones.replicas is not None
    assert w.state is not None and w.partition is not None
    rec = w.state.record
    leader, _epoch = ctx.leadership.leader_of(w.partition)
    try:
        got = await ctx.zones.replicas.read(
            rec.topic_id,
            rec.partitions,
            rec.log_start,
            w.index,
            w.fetch_offset,
            max_bytes if not first else max(max_bytes, 1),
        )
    except ObjectStoreError as e:
        log.warning("replica fetch %s at %d: object store: %r", w.partition, w.fetch_offset, e)
        return {**_redirect(w, None, -1), "error_code": ErrorCode.kafka_storage_error}
    if w.fetch_offset < got.log_start:
        return {**_redirect(w, None, -1), "error_code": ErrorCode.offset_out_of_range}
    if not got.batches:  # the tail: the leader serves it
        if leader < 0:
            return {**_redirect(w, None, -1), "error_code": ErrorCode.not_leader_or_follower}
        return {**_redirect(w, None, leader), "high_watermark": got.uploaded_end}
    return {
        "partition_index": w.index,
        "error_code": ErrorCode.none,
        "high_watermark": got.uploaded_end,
        "last_stable_offset": got.uploaded_end,
        "log_start_offset": got.log_start,
        "aborted_transactions": None,
        "preferred_read_replica": -1,
        "records": list(got.batches),
    }


def _aborted(p: Partition, start: int, end: int) -> list[dict] | None:
    found = p.txns.aborted_between(start, end)
    if not found:
        return None
    return [{"producer_id": pid, "first_offset": first} for pid, first in found]


def _count(
    ctx: HandlerContext, plan, responses: list[dict], total: int, any_error: bool, rack: str
) -> None:
    """Bytes sent per topic and error codes, for the response that goes out."""
    if not total and not any_error:
        return
    metrics = ctx.counters
    broker_rack = ctx.zones.rack if ctx.zones is not None else ""
    for (_, wanted), t in zip(plan, responses, strict=True):
        for w, part in zip(wanted, t["partitions"], strict=True):
            size = _size(part["records"])
            if size:
                metrics.topic(w.partition.topic).bytes_out.inc(size)
                metrics.fetched_by_rack(broker_rack, rack, size)
            if part["error_code"]:
                metrics.partition_error(ApiKey.FETCH, part["error_code"])


def _empty(error: ErrorCode) -> dict:
    return {
        "throttle_time": 0,
        "error_code": error,
        "session_id": 0,
        "responses": [],
        "node_endpoints": [],
    }


async def handle(ctx: HandlerContext, request: Request) -> dict | Deferred:
    """Read at once; when that is less than min_bytes, the long poll is a Deferred (it
    holds no state), so the connection's next request need not wait for it."""
    body = request.body
    requested = _requested(request)
    if request.header.api_version >= 7:
        session = ctx.fetch_sessions.context(
            body.session_id,
            body.session_epoch,
            (((topic, index), w) for topic, parts in requested for index, w in parts),
            _forgotten(request),
            uses_topic_ids=request.header.api_version >= 13,
            now_ms=int(time.monotonic() * 1000),
        )
    else:
        session = FetchContext(Mode.SESSIONLESS, uses_topic_ids=False)
    if session.mode is Mode.ERROR:
        return _empty(session.error)
    if session.mode is Mode.INCREMENTAL:
        assert session.session is not None
        requested = _session_topics(session.session)
    max_bytes = getattr(body, "max_bytes", 2**31 - 1)
    plan = _resolve(ctx, request, requested)
    deadline = time.monotonic() + body.max_wait.total_seconds()
    committed = getattr(body, "isolation_level", 0) == 1
    rack = _rack(request)
    responses, total, any_error = await _read_all(ctx, plan, max_bytes, committed, rack)
    watched = [w.partition for _, ws in plan for w in ws if w.partition is not None]
    if total < body.min_bytes and not any_error and watched and deadline > time.monotonic():
        first = (responses, total, any_error)
        return Deferred(
            _long_poll(
                ctx, plan, max_bytes, committed, body.min_bytes, deadline, first, rack, session
            )
        )
    return _answer(ctx, plan, responses, total, any_error, rack, session)


async def _long_poll(
    ctx: HandlerContext,
    plan,
    max_bytes: int,
    committed: bool,
    min_bytes: int,
    deadline: float,
    first,
    rack: str,
    session: FetchContext,
) -> dict:
    """Wait for appends to the watched partitions until min_bytes or the deadline; the
    answer is the last read."""
    responses, total, any_error = first
    watched = [w.partition for _, ws in plan for w in ws if w.partition is not None]
    while total < min_bytes and not any_error:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        fut = ctx.logs.watch(watched)
        try:
            await asyncio.wait_for(fut, left)
        except TimeoutError:
            break
        finally:
            ctx.logs.unwatch(fut, watched)
        responses, total, any_error = await _read_all(ctx, plan, max_bytes, committed, rack)
    return _answer(ctx, plan, responses, total, any_error, rack, session)


def _answer(
    ctx: HandlerContext,
    plan,
    responses: list[dict],
    total: int,
    any_error: bool,
    rack: str,
    session: FetchContext,
) -> dict:
    _count(ctx, plan, responses, total, any_error, rack)
    session_id = 0
    if session.mode is Mode.FULL:
        session_id = ctx.fetch_sessions.create(
            _cached(plan, responses),
            uses_topic_ids=session.uses_topic_ids,
            now_ms=int(time.monotonic() * 1000),
        )
    elif session.mode is Mode.INCREMENTAL:
        assert session.session is not None
        session_id = session.session.id
        responses = _news(session.session, plan, responses)
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "session_id": session_id,
        "responses": responses,
        "node_endpoints": [],
    }


def _topic_key(key: dict) -> TopicKey:
    return key["topic_id"] if "topic_id" in key else key["topic"]


def _cached(plan, responses: list[dict]) -> dict[PartitionKey, CachedPartition]:
    """A new session's partitions: what was asked, and what the full answer told."""
    out: dict[PartitionKey, CachedPartition] = {}
    for (key, wanted), t in zip(plan, responses, strict=True):
        topic = _topic_key(key)
        for w, part in zip(wanted, t["partitions"], strict=True):
            out[(topic, w.index)] = CachedPartition(
                w.fetch_offset,
                w.max_bytes,
                w.leader_epoch,
                part["high_watermark"],
                part["last_stable_offset"],
                part["log_start_offset"],
            )
    return out


def _news(session, plan, responses: list[dict]) -> list[dict]:
    """An incremental answer: only the partitions the client has news for."""
    out = []
    for (key, _), t in zip(plan, responses, strict=True):
        topic = _topic_key(key)
        parts = [
            part
            for part in t["partitions"]
            if session.must_send(
                (topic, part["partition_index"]),
                records=_size(part["records"]),
                error=part["error_code"],
                high_watermark=part["high_watermark"],
                last_stable_offset=part["last_stable_offset"],
                log_start_offset=part["log_start_offset"],
                redirected=part["preferred_read_replica"] >= 0,
            )
        ]
        if parts:
            out.append({**key, "partitions": parts})
    return out
