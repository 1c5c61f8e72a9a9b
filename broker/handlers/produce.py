"""Produce: validate each batch's header, assign offsets, append to the WAL, ack when durable.

Durable means synced in the WAL, or in `object` mode uploaded to the object store.
Split as validate -> append -> wait for durability -> answer. A topic whose
`compression.type` asks for another codec than a batch's has it recompressed first, in a
thread (the only await before the append); from there up to the WAL append nothing
awaits; the wait is returned as a Deferred, so the connection's next request (often the
next produce) starts while this one waits for its fsync. When too much data waits for the
object store, new batches get NOT_ENOUGH_REPLICAS (retriable: the store is this broker's
replication) instead of growing the WAL without bound.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.deferred import Deferred
from broker.errors import CloseConnection
from broker.handlers.auth import TOPIC, TXN_ID, allowed
from broker.handlers.resolve import leader_error, partition
from broker.links.model import mirror_link
from broker.log.cleaner import is_compacted
from broker.log.partition import Partition
from broker.log.produce_prep import InvalidRecords, Work, prepare_all
from broker.log.recompress import RecompressError, needs_recompression, wanted_codec
from broker.security.acl import Operation
from protocol import records
from protocol.codec import Request
from protocol.errors import ErrorCode
from protocol.versions import ApiKey
from wal import WalFailure

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)


def _partition_result(
    index: int,
    error: ErrorCode,
    base_offset: int = -1,
    log_start: int = -1,
    append_time: int = -1,
    message: str | None = None,
) -> dict:
    return {
        "index": index,
        "error_code": error,
        "base_offset": base_offset,
        "log_append_time": append_time,
        "log_start_offset": log_start,
        "record_errors": [],
        "error_message": message,
    }


@dataclass
class _Appended:
    """What a produce request appended: the WAL position to wait for, the results that
    turn into errors if the wait fails, and each one's partition with its fence count."""

    wal_end: int = 0
    results: list[tuple[dict, Partition, int]] = field(default_factory=list)


async def handle(ctx: HandlerContext, request: Request) -> dict | Deferred | None:
    """Validate and append (the request takes effect, in arrival order), then defer the
    wait for durability, so the connection's next request starts meanwhile."""
    body = request.body
    replaced = await _prepared(ctx, request)
    responses, appended = _append_all(ctx, request, replaced)
    if body.acks == 0:
        failed = [r for t in responses for r in t["partition_responses"] if r["error_code"]]
        if failed:
            raise CloseConnection(f"acks=0 produce failed: {failed[0]['error_code'].name}")
        return None
    if not appended.wal_end:
        return _answer(ctx, responses)
    return Deferred(_acknowledge(ctx, body.timeout.total_seconds(), responses, appended))


async def _prepared(ctx: HandlerContext, request: Request) -> dict:
    """The batches to append instead of those produced, or the errors refusing them, by
    id() of their partition data, worked out in a thread: recompressed for topics whose
    compression.type wants another codec, key-checked for compacted topics."""
    by_id = request.header.api_version >= 13
    logs = ctx.logs
    work = []
    for t in request.body.topic_data:
        state = logs.topics_by_id.get(t.topic_id.bytes) if by_id else logs.topics.get(t.name)
        if state is None or state.record.internal:
            continue
        codec = wanted_codec(logs.topic_config(state, "compression.type"))
        keys = is_compacted(logs.topic_config(state, "cleanup.policy"))
        for pd in t.partition_data:
            if not pd.records:
                continue
            recompress = needs_recompression(pd.records, codec)
            if recompress or keys:
                item = Work(pd.records, codec if recompress else None, keys)
                work.append((id(pd), item, f"{state.name}-{pd.index}"))
    if not work:
        return {}
    return await asyncio.to_thread(prepare_all, work)


def _append_all(
    ctx: HandlerContext, request: Request, replaced: dict
) -> tuple[list[dict], _Appended]:
    """Validate every partition's batch and append the good ones; never awaits."""
    body = request.body
    by_id = request.header.api_version >= 13
    logs = ctx.logs
    appended = _Appended()
    responses = []
    txn_id = getattr(body, "transactional_id", None)
    txn_denied = txn_id is not None and not allowed(ctx, request, Operation.WRITE, TXN_ID, txn_id)
    for t in body.topic_data:
        state = logs.topics_by_id.get(t.topic_id.bytes) if by_id else logs.topics.get(t.name)
        name = state.name if state is not None else (None if by_id else t.name)
        denied = (
            ErrorCode.transactional_id_authorization_failed
            if txn_denied
            else ErrorCode.topic_authorization_failed
            if name is not None and not allowed(ctx, request, Operation.WRITE, TOPIC, name)
            else None
        )
        results = []
        for pd in t.partition_data:
            if denied is not None:
                results.append(_partition_result(pd.index, denied))
                continue
            result, p = _check_partition(ctx, body.acks, by_id, state, pd.index)
            if result is None:
                assert p is not None
                replacement = replaced.get(id(pd))
                if isinstance(replacement, InvalidRecords):
                    log.info("batch for %s refused: %s", p, replacement)
                    result = _partition_result(
                        pd.index, ErrorCode.invalid_record, message=str(replacement)
                    )
                    result["record_errors"] = [
                        {"batch_index": i, "batch_index_error_message": m}
                        for i, m in replacement.errors
                    ]
                elif isinstance(replacement, RecompressError):
                    log.warning("batch for %s not recompressed: %s", p, replacement)
                    result = _partition_result(
                        pd.index, ErrorCode.invalid_record, message=str(replacement)
                    )
                else:
                    data = pd.records if replacement is None else replacement
                    result = _append_one(ctx, state, p, pd.index, data)
                wal_end = result.pop("_wal_end", None)
                if wal_end is not None:
                    appended.wal_end = max(appended.wal_end, wal_end)
                    appended.results.append((result, p, p.fenced))
            results.append(result)
        key = {"topic_id": t.topic_id} if by_id else {"name": t.name}
        responses.append({**key, "partition_responses": results})
    return responses, appended


def _check_partition(
    ctx: HandlerContext, acks: int, by_id: bool, state, index: int
) -> tuple[dict | None, Partition | None]:
    """(an error result, None), or (None, the partition) when it may be appended to."""
    if acks not in (0, 1, -1):
        return _partition_result(index, ErrorCode.invalid_required_acks), None
    p = partition(state, index)
    if state is None or p is None:
        unknown = (
            ErrorCode.unknown_topic_id
            if by_id and state is None
            else ErrorCode.unknown_topic_or_partition
        )
        return _partition_result(index, unknown), None
    if state.record.internal:
        message = f"{state.name} is written by the broker only"
        return _partition_result(index, ErrorCode.invalid_topic_exception, message=message), None
    link = mirror_link(ctx.logs.meta.links, state.name)
    if link is not None:
        message = (
            f"{state.name} is a mirror topic of link {link!r}: read-only until "
            "promoted (strata link promote)"
        )
        return _partition_result(index, ErrorCode.invalid_request, message=message), None
    error = leader_error(ctx.leadership, p)
    if error != ErrorCode.none:
        return _partition_result(index, error), None
    return None, p


async def _acknowledge(
    ctx: HandlerContext, timeout_s: float, responses: list[dict], appended: _Appended
) -> dict:
    """Wait until the appended batches are durable by the broker's contract, then answer;
    a failed or timed-out wait, or a partition lost meanwhile, turns them into errors."""
    logs = ctx.logs
    error: tuple[ErrorCode, str | None] | None = None
    try:
        ack = logs.wait_acked(appended.wal_end)
        if logs.settings.object_mode:
            # Kafka's answer when acks=all cannot be met within the request's timeout
            await asyncio.wait_for(asyncio.shield(ack), max(timeout_s, 0.0))
        else:
            await ack
    except TimeoutError:
        message = "not uploaded to the object store within the request timeout"
        error = (ErrorCode.request_timed_out, message)
    except WalFailure as e:
        log.error("produce not acknowledged, WAL failed: %s", e)
        error = (ErrorCode.kafka_storage_error, str(e))
    # cluster mode: if the lease may have expired meanwhile, or a partition was taken
    # away without a hand-off, another broker may lead it from a log without these
    # batches: never acknowledge them
    may_ack = ctx.leadership.may_ack()
    for r, p, fenced in appended.results:
        if error is not None:
            r.update(error_code=error[0], base_offset=-1, error_message=error[1])
        elif r["error_code"] == ErrorCode.none and (not may_ack or p.fenced != fenced):
            r.update(error_code=ErrorCode.not_leader_or_follower, base_offset=-1)
    return _answer(ctx, responses)


def _answer(ctx: HandlerContext, responses: list[dict]) -> dict:
    _count_errors(ctx, responses)
    return {"responses": responses, "throttle_time": 0}


def _count_errors(ctx: HandlerContext, responses: list[dict]) -> None:
    for t in responses:
        for r in t["partition_responses"]:
            if r["error_code"]:
                ctx.counters.partition_error(ApiKey.PRODUCE, r["error_code"])


def _append_one(ctx: HandlerContext, state, p, index: int, data: bytes) -> dict:
    """Validate and append one partition's records (as produced, or recompressed for the
    topic); never awaits."""
    logs = ctx.logs
    if not data:
        return _partition_result(index, ErrorCode.invalid_record, message="no records")
    try:
        batches = records.split_batches(data)
    except records.InvalidBatch as e:
        return _partition_result(index, ErrorCode.corrupt_message, message=str(e))
    if len(batches) != 1:
        return _partition_result(
            index,
            ErrorCode.invalid_record,
            message="a produce request must carry exactly one record batch per partition",
        )
    batch = batches[0]
    max_bytes = int(logs.topic_config(state, "max.message.bytes"))
    if len(batch) > max_bytes:
        return _partition_result(
            index,
            ErrorCode.message_too_large,
            message=f"batch of {len(batch)} bytes exceeds max.message.bytes {max_bytes}",
        )
    try:
        h = records.validate(batch)
    except records.CorruptBatch as e:
        log.warning("corrupt batch for %s: %s", p, e)
        return _partition_result(index, ErrorCode.corrupt_message, message=str(e))
    except records.InvalidBatch as e:
        log.warning("invalid batch for %s: %s", p, e)
        return _partition_result(index, ErrorCode.invalid_record, message=str(e))
    if h.is_control:
        return _partition_result(
            index,
            ErrorCode.invalid_record,
            message="control batches are written by the transaction coordinator only",
        )
    if h.is_transactional:
        error = ctx.transactions.verify(h.producer_id, h.producer_epoch, state.name, p.index)
        if error != ErrorCode.none:
            return _partition_result(index, error, log_start=p.log_start_offset)
    verdict = p.producers.check(h)
    if verdict.error != ErrorCode.none:
        return _partition_result(index, verdict.error, log_start=p.log_start_offset)
    if verdict.duplicate_of is not None:
        result = _partition_result(index, ErrorCode.none, verdict.duplicate_of, p.log_start_offset)
        if verdict.duplicate_of >= p.high_watermark:  # the original may still be syncing
            result["_wal_end"] = logs.wal.end_position
        return result
    if logs.backlog_full:
        return _partition_result(
            index,
            ErrorCode.not_enough_replicas,
            message=(
                f"{logs.uploader.backlog_bytes} bytes wait for the object store "
                f"(bound {logs.max_backlog_bytes}); retry later"
            ),
        )
    try:
        appended = logs.append(state, p, batch, h)
    except WalFailure as e:
        return _partition_result(index, ErrorCode.kafka_storage_error, message=str(e))
    ctx.counters.topic(state.name).appended(len(batch), h.record_count)
    result = _partition_result(
        index, ErrorCode.none, appended.base_offset, p.log_start_offset, appended.log_append_time
    )
    result["_wal_end"] = appended.wal_end
    return result
