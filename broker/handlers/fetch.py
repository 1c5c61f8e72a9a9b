"""Fetch: read batches up to the high watermark, long-polling for min_bytes / max_wait.

read_committed (isolation level 1) reads up to the last stable offset instead, and
lists the aborted transactions in the range read, which clients skip.

No fetch sessions (KIP-227): every response carries session id 0, which tells
clients to send full fetch requests, as Kafka does when its session cache is full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.deferred import Deferred
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


def _resolve(ctx: HandlerContext, request: Request) -> list[tuple[dict, list[_Wanted]]]:
    logs = ctx.logs
    by_id = request.header.api_version >= 13
    # a client in a rack may read partitions led elsewhere from this broker (zone_reads)
    replicas = ctx.zones.replicas if ctx.zones is not None and _rack(request) else None
    plan = []
    for t in request.body.topics:
        state = logs.topics_by_id.get(t.topic_id.bytes) if by_id else logs.topics.get(t.topic)
        missing = ErrorCode.unknown_topic_id if by_id else ErrorCode.unknown_topic_or_partition
        name = state.name if state is not None else (None if by_id else t.topic)
        denied = name is not None and not allowed(ctx, request, Operation.READ, TOPIC, name)
        wanted = []
        for fp in t.partitions:
            epoch = getattr(fp, "current_leader_epoch", -1)
            p, error = served(ctx, state, fp.partition, epoch)
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
                    fp.partition,
                    p,
                    ErrorCode.none if replica else error,
                    fp.fetch_offset,
                    fp.partition_max_bytes,
                    epoch,
                    state,
                    replica,
                )
            )
        key = {"topic_id": t.topic_id} if by_id else {"topic": t.topic}
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
            data = b""
            aborted = None
            if w.replica:
                part = await _replica_read(ctx, w, min(w.max_bytes, remaining), total == 0)
                total += len(part["records"])
                remaining -= len(part["records"])
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
                    data = b"".join(batches)
                    if committed and data:
                        aborted = _aborted(p, w.fetch_offset, limit)
                    total += len(data)
                    remaining -= len(data)
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
        "records": b"".join(got.batches),
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
            if part["records"]:
                metrics.topic(w.partition.topic).bytes_out.inc(len(part["records"]))
                metrics.fetched_by_rack(broker_rack, rack, len(part["records"]))
            if part["error_code"]:
                metrics.partition_error(ApiKey.FETCH, part["error_code"])


async def handle(ctx: HandlerContext, request: Request) -> dict | Deferred:
    """Read at once; when that is less than min_bytes, the long poll is a Deferred (it
    holds no state), so the connection's next request need not wait for it."""
    body = request.body
    if getattr(body, "session_id", 0) != 0:  # sessions exist from v7
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.fetch_session_id_not_found,
            "session_id": 0,
            "responses": [],
            "node_endpoints": [],
        }
    max_bytes = getattr(body, "max_bytes", 2**31 - 1)
    plan = _resolve(ctx, request)
    deadline = time.monotonic() + body.max_wait.total_seconds()
    committed = getattr(body, "isolation_level", 0) == 1
    rack = _rack(request)
    responses, total, any_error = await _read_all(ctx, plan, max_bytes, committed, rack)
    watched = [w.partition for _, ws in plan for w in ws if w.partition is not None]
    if total < body.min_bytes and not any_error and watched and deadline > time.monotonic():
        first = (responses, total, any_error)
        return Deferred(
            _long_poll(ctx, plan, max_bytes, committed, body.min_bytes, deadline, first, rack)
        )
    return _answer(ctx, plan, responses, total, any_error, rack)


async def _long_poll(
    ctx: HandlerContext,
    plan,
    max_bytes: int,
    committed: bool,
    min_bytes: int,
    deadline: float,
    first,
    rack: str,
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
    return _answer(ctx, plan, responses, total, any_error, rack)


def _answer(
    ctx: HandlerContext, plan, responses: list[dict], total: int, any_error: bool, rack: str
) -> dict:
    _count(ctx, plan, responses, total, any_error, rack)
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "session_id": 0,
        "responses": responses,
        "node_endpoints": [],
    }
