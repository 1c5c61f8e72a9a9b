"""Share groups (KIP-932): ShareGroupHeartbeat and ShareGroupDescribe (thin shells over
broker.groups.share_coordinator), ShareFetch and ShareAcknowledge (over
broker.groups.share_state: share sessions, acquisition from the log, acknowledgements
answered once durable)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from broker.deferred import Deferred
from broker.groups.consumer_group import HeartbeatRequest, error_response
from broker.groups.share_persister import StateFenced, StateUnavailable
from broker.groups.share_state import FINAL_EPOCH
from broker.handlers.auth import GROUP, TOPIC, allowed
from broker.handlers.consumer_groups import _topics
from broker.handlers.resolve import coordinates, served
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode
from protocol.records import parse_header
from s3stream.store import ObjectNotFound, ObjectStoreError
from wal import TrimmedRead

if TYPE_CHECKING:
    from broker.groups.share_partition import SharePartition
    from broker.handlers.context import HandlerContext
    from broker.log.partition import Partition

log = logging.getLogger(__name__)

_NO_LEADER = {"leader_id": -1, "leader_epoch": -1}


def _leader(ctx: HandlerContext, p: Partition | None) -> dict:
    if p is None:
        return _NO_LEADER
    leader, epoch = ctx.leadership.leader_of(p)
    return {"leader_id": leader, "leader_epoch": epoch}


# --- membership -------------------------------------------------------------------------


async def handle_heartbeat(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not allowed(ctx, request, Operation.READ, GROUP, b.group_id):
        return {
            "throttle_time": 0,
            **error_response(ErrorCode.group_authorization_failed, "", b.member_id),
        }
    if not coordinates(ctx, b.group_id):
        return {
            "throttle_time": 0,
            **error_response(ErrorCode.not_coordinator, "not the coordinator", b.member_id),
        }
    if ctx.groups.group(b.group_id) is not None or ctx.groups.consumer.is_consumer_group(
        b.group_id
    ):
        return {
            "throttle_time": 0,
            **error_response(
                ErrorCode.group_id_not_found,
                f"Group {b.group_id} is not a share group.",
                b.member_id,
            ),
        }
    req = HeartbeatRequest(
        group_id=b.group_id,
        member_id=b.member_id,
        member_epoch=b.member_epoch,
        instance_id=None,
        rack_id=b.rack_id,
        rebalance_timeout_ms=-1,
        subscribed_topic_names=b.subscribed_topic_names,
        subscribed_topic_regex=None,
        server_assignor=None,
        owned=None,
        client_id=request.header.client_id or "",
        client_host="/" + (request.peer.rsplit(":", 1)[0] if request.peer else ""),
    )
    answer = await ctx.groups.share.heartbeat(req, _topics(ctx, request))
    if b.member_epoch == FINAL_EPOCH and answer["error_code"] == ErrorCode.none:
        ctx.shares.forget_member(b.group_id, b.member_id)
    return {"throttle_time": 0, **answer}


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    names = {t.record.uuid: name for name, t in ctx.logs.topics.items()}
    share = ctx.groups.share
    out = []
    for group_id in request.body.group_ids:
        if not allowed(ctx, request, Operation.DESCRIBE, GROUP, group_id):
            entry = share.describe("", names)
            entry.update(group_id=group_id, error_code=ErrorCode.group_authorization_failed)
        elif not coordinates(ctx, group_id):
            entry = share.describe("", names)
            entry.update(
                group_id=group_id,
                error_code=ErrorCode.not_coordinator,
                error_message="not the coordinator",
            )
        else:
            entry = share.describe(group_id, names)
            if entry["error_code"] == ErrorCode.group_id_not_found and (
                ctx.groups.group(group_id) or ctx.groups.consumer.is_consumer_group(group_id)
            ):
                entry["error_message"] = f"Group {group_id} is not a share group."
        out.append({**entry, "authorized_operations": -2147483648})
    return {"throttle_time": 0, "groups": out}


# --- fetching and acknowledging ---------------------------------------------------------


async def _ready(
    ctx: HandlerContext, group_id: str, topic_id: uuid.UUID, index: int
) -> tuple[Partition | None, ErrorCode]:
    """The partition, if this broker leads it, with its share-partition state loaded at
    the current leader epoch (read from the group's coordinator after a move)."""
    p, error = _partition_of(ctx, topic_id, index)
    if p is None or error != ErrorCode.none:
        return p, error
    try:
        await ctx.shares.load(group_id, topic_id, index, p.leader_epoch)
    except StateUnavailable as e:
        log.warning("share group %s: %s-%d state not loaded: %s", group_id, topic_id, index, e)
        return p, ErrorCode.coordinator_not_available
    if not ctx.leadership.serves(p):
        return p, ErrorCode.not_leader_or_follower
    return p, ErrorCode.none


async def _acknowledge(ctx: HandlerContext, group_id: str, member_id: str, topics) -> dict:
    """Apply the acknowledgement batches; (topic id, partition) -> error code."""
    out: dict[tuple[uuid.UUID, int], ErrorCode] = {}
    for t in topics:
        for part in t.partitions:
            if not part.acknowledgement_batches:
                continue
            key = (t.topic_id, part.partition_index)
            _, error = await _ready(ctx, group_id, t.topic_id, part.partition_index)
            sp = None
            if error == ErrorCode.none:
                sp = ctx.shares.existing(group_id, t.topic_id, part.partition_index)
            if error != ErrorCode.none:
                pass
            elif sp is None:
                error = ErrorCode.invalid_record_state
            else:
                for ab in part.acknowledgement_batches:
                    e = sp.acknowledge(
                        member_id,
                        ab.first_offset,
                        ab.last_offset,
                        list(ab.acknowledge_types),
                        time.monotonic(),
                    )
                    if e is not None:
                        error = e
                        log.info(
                            "share group %s: member %s acknowledging %s-%d [%d, %d]: %s",
                            group_id,
                            member_id,
                            t.topic_id,
                            part.partition_index,
                            ab.first_offset,
                            ab.last_offset,
                            e.name,
                        )
            out[key] = error
    if out:
        ctx.shares.notify()  # locks freed, records released: waiting fetches look again
    return out


def _session_error(code: ErrorCode, lock_ms: int = 0) -> dict:
    return {
        "throttle_time": 0,
        "error_code": code,
        "error_message": code.name,
        "acquisition_lock_timeout": lock_ms,
        "responses": [],
        "node_endpoints": [],
    }


def _partition_of(ctx: HandlerContext, topic_id: uuid.UUID, index: int):
    state = ctx.logs.topics_by_id.get(topic_id.bytes)
    if state is None:
        return None, ErrorCode.unknown_topic_id
    return served(ctx, state, index)


async def _acquire_from(
    ctx: HandlerContext,
    group_id: str,
    member_id: str,
    topic_id: uuid.UUID,
    p: Partition,
    max_records: int,
    max_bytes: int,
) -> tuple[bytes, list[dict], ErrorCode]:
    sp: SharePartition = ctx.shares.partition(
        group_id, topic_id, p.index, p.log_start_offset, p.high_watermark
    )
    committed = ctx.shares.read_committed(group_id)
    limit = p.last_stable_offset if committed else p.high_watermark
    start = sp.next_fetch_offset(limit)
    if start is None:
        return b"", [], ErrorCode.none
    try:
        batches = await ctx.logs.read(p, start, max_bytes, limit, first_may_exceed=True)
    except (TrimmedRead, ObjectNotFound) as e:
        log.warning("share fetch %s at %d: %r", p, start, e)
        return b"", [], ErrorCode.offset_out_of_range
    except ObjectStoreError as e:
        log.warning("share fetch %s at %d: object store: %r", p, start, e)
        return b"", [], ErrorCode.kafka_storage_error
    data = b"".join(batches)
    if not data:
        return b"", [], ErrorCode.none
    aborted = (
        [r for r in p.txns.aborted_ranges() if r[2] >= start and r[1] < limit] if committed else []
    )
    pos, last = 0, start - 1
    while pos + 61 <= len(data):
        h = parse_header(data, pos)
        last = max(last, h.last_offset)
        pos += h.size
        if h.is_control or (
            h.is_transactional
            and any(
                pid == h.producer_id and first <= h.base_offset <= end
                for pid, first, end in aborted
            )
        ):
            sp.archive(h.base_offset, h.last_offset)  # never delivered
    ranges = sp.acquire(member_id, start, last, max_records, time.monotonic())
    if not ranges:
        return b"", [], ErrorCode.none
    ctx.shares.write_later(group_id, [(topic_id, p.index)])
    acquired = [{"first_offset": a, "last_offset": b, "delivery_count": c} for a, b, c in ranges]
    return data, acquired, ErrorCode.none


async def _fetch_round(
    ctx: HandlerContext, group_id: str, member_id: str, session, body, acks: dict
) -> tuple[list[dict], int]:
    by_topic: dict[uuid.UUID, list[dict]] = {}
    records = 0
    remaining = max(body.max_bytes, 1)
    max_records = max(body.max_records, 1)
    wanted = sorted(session.partitions | set(acks))
    for topic_id, index in wanted:
        p, error = await _ready(ctx, group_id, topic_id, index)
        data, acquired = b"", []
        if (
            p is not None
            and error == ErrorCode.none
            and (topic_id, index) in session.partitions
            and records < max_records
            and remaining > 0
        ):
            data, acquired, error = await _acquire_from(
                ctx, group_id, member_id, topic_id, p, max_records - records, remaining
            )
            records += sum(a["last_offset"] - a["first_offset"] + 1 for a in acquired)
            remaining -= len(data)
        ack_error = acks.get((topic_id, index), ErrorCode.none)
        if not acquired and error == ErrorCode.none and (topic_id, index) not in acks:
            continue  # nothing to say about it (incremental: absent is "no change")
        by_topic.setdefault(topic_id, []).append(
            {
                "partition_index": index,
                "error_code": error,
                "error_message": None,
                "acknowledge_error_code": ack_error,
                "acknowledge_error_message": None,
                "current_leader": _leader(ctx, p),
                "records": data if acquired else b"",
                "acquired_records": acquired,
            }
        )
    responses = [{"topic_id": t, "partitions": ps} for t, ps in by_topic.items()]
    return responses, records


async def handle_fetch(ctx: HandlerContext, request: Request) -> dict | Deferred:
    b = request.body
    group_id, member_id = b.group_id or "", b.member_id or ""
    lock_ms = ctx.shares.settings(group_id).record_lock_duration_ms if group_id else 0
    if not group_id or not member_id:
        return _session_error(ErrorCode.invalid_request, lock_ms)
    if not allowed(ctx, request, Operation.READ, GROUP, group_id):
        return _session_error(ErrorCode.group_authorization_failed, lock_ms)
    has_acks = any(p.acknowledgement_batches for t in b.topics for p in t.partitions)
    if b.share_session_epoch == 0 and has_acks:
        return _session_error(ErrorCode.invalid_request, lock_ms)
    session = ctx.shares.session(group_id, member_id, b.share_session_epoch)
    if isinstance(session, ErrorCode):
        return _session_error(session, lock_ms)
    for t in b.topics:
        state = ctx.logs.topics_by_id.get(t.topic_id.bytes) if t.topic_id else None
        if state is not None and not allowed(ctx, request, Operation.READ, TOPIC, state.name):
            continue
        for part in t.partitions:
            session.partitions.add((t.topic_id, part.partition_index))
    for ft in b.forgotten_topics_data:
        for index in ft.partitions:
            session.partitions.discard((ft.topic_id, index))
    acks = await _acknowledge(ctx, group_id, member_id, b.topics)
    touched = list(acks)
    if b.share_session_epoch == FINAL_EPOCH:
        ctx.shares.close(group_id, member_id)
        await _durable(ctx, group_id, acks)
        responses, _ = await _fetch_round(ctx, group_id, member_id, type(session)(), b, acks)
        return {**_session_error(ErrorCode.none, lock_ms), "responses": responses}
    if touched:
        await _durable(ctx, group_id, acks)
    responses, records = await _fetch_round(ctx, group_id, member_id, session, b, acks)
    deadline = time.monotonic() + b.max_wait.total_seconds()
    if records == 0 and not acks and session.partitions and time.monotonic() < deadline:
        return Deferred(_long_poll(ctx, group_id, member_id, session, b, deadline, lock_ms))
    return _fetched(responses, lock_ms)


def _fetched(responses: list[dict], lock_ms: int) -> dict:
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "acquisition_lock_timeout": lock_ms,
        "responses": responses,
        "node_endpoints": [],
    }


async def _long_poll(
    ctx: HandlerContext, group_id: str, member_id: str, session, b, deadline: float, lock_ms: int
) -> dict:
    """Nothing to acquire yet: wait for appends (or a lock expiry, polled) until the
    deadline; the answer is the last round."""
    responses: list[dict] = []
    records = 0
    acks: dict = {}
    while records == 0 and not acks and session.partitions and time.monotonic() < deadline:
        watched = [p for t, i in session.partitions if (p := _partition_of(ctx, t, i)[0])]
        fut = ctx.logs.watch(watched)
        freed = ctx.shares.changed()
        try:
            # appends wake the wait, and so do acknowledgements, releases and expiries
            await asyncio.wait(
                (fut, freed),
                timeout=max(deadline - time.monotonic(), 0.001),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ctx.logs.unwatch(fut, watched)
            ctx.shares.unwait(freed)
        if ctx.shares.sessions.get((group_id, member_id)) is not session:
            break  # closed or reopened meanwhile
        responses, records = await _fetch_round(ctx, group_id, member_id, session, b, acks)
    return _fetched(responses, lock_ms)


async def _durable(ctx: HandlerContext, group_id: str, acks: dict) -> None:
    """Persist the acknowledged share-partitions before answering; a write that fails
    (the coordinator unreachable in time, or a newer leader fenced this one) is answered
    as an error for its partitions, so the client does not count it done."""
    try:
        await ctx.shares.write(group_id, list(acks))
    except StateFenced:
        failed = ErrorCode.not_leader_or_follower
    except Exception as e:
        log.warning("share group %s: acknowledgement not persisted: %r", group_id, e)
        failed = ErrorCode.coordinator_not_available
    else:
        return
    for key, error in acks.items():
        if error == ErrorCode.none:
            acks[key] = failed


async def handle_acknowledge(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    group_id, member_id = b.group_id or "", b.member_id or ""
    lock_ms = ctx.shares.settings(group_id).record_lock_duration_ms if group_id else 0
    if not group_id or not member_id:
        return _session_error(ErrorCode.invalid_request, lock_ms)
    if not allowed(ctx, request, Operation.READ, GROUP, group_id):
        return _session_error(ErrorCode.group_authorization_failed, lock_ms)
    session = ctx.shares.session(group_id, member_id, b.share_session_epoch, opening_allowed=False)
    if isinstance(session, ErrorCode):
        return _session_error(session, lock_ms)
    acks = await _acknowledge(ctx, group_id, member_id, b.topics)
    if b.share_session_epoch == FINAL_EPOCH:
        ctx.shares.close(group_id, member_id)
    await _durable(ctx, group_id, acks)
    by_topic: dict[uuid.UUID, list[dict]] = {}
    for (topic_id, index), error in acks.items():
        p, _ = _partition_of(ctx, topic_id, index)
        by_topic.setdefault(topic_id, []).append(
            {
                "partition_index": index,
                "error_code": error,
                "error_message": None,
                "current_leader": _leader(ctx, p),
            }
        )
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "acquisition_lock_timeout": lock_ms,
        "responses": [{"topic_id": t, "partitions": ps} for t, ps in by_topic.items()],
        "node_endpoints": [],
    }
