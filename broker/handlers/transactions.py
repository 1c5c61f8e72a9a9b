"""AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit, WriteTxnMarkers,
DescribeTransactions, ListTransactions and DescribeProducers: thin shells over
broker.txn.coordinator, the offset store and the partitions' producer state.

InitProducerId's transactional path is in broker.handlers.producer_id.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from broker.groups.committed import OFFSETS_TOPIC, CommittedOffset
from broker.handlers.auth import GROUP, TOPIC, TXN_ID, allowed, cluster_allowed
from broker.handlers.offsets import COMMIT_FAILURES, mark_failed
from broker.handlers.resolve import coordinates, partition, served
from broker.security.acl import Operation
from broker.txn.state import TxnState
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)


async def handle_add_partitions(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if request.header.api_version > 3:  # v4+: broker-to-broker verification batches
        return {"throttle_time": 0, "error_code": ErrorCode.unsupported_version}
    wanted: set[tuple[str, int]] = set()
    unknown: set[tuple[str, int]] = set()
    denied: set[str] = set()
    txn_denied = not allowed(ctx, request, Operation.WRITE, TXN_ID, b.v3_and_below_transactional_id)
    for t in b.v3_and_below_topics:
        if not txn_denied and not allowed(ctx, request, Operation.WRITE, TOPIC, t.name):
            denied.add(t.name)
            continue
        for index in t.partitions:
            if t.name == OFFSETS_TOPIC or partition(ctx.logs.topics.get(t.name), index) is None:
                unknown.add((t.name, index))
            else:
                wanted.add((t.name, index))
    if txn_denied:
        error: ErrorCode | None = ErrorCode.transactional_id_authorization_failed
    elif unknown or denied:
        # as Kafka: nothing is added, the unknown ones say why, the others abort
        error = None
    else:
        error = await ctx.transactions.add_partitions(
            b.v3_and_below_transactional_id,
            b.v3_and_below_producer_id,
            b.v3_and_below_producer_epoch,
            wanted,
        )
    by_topic: dict[str, list[dict]] = {}
    for t in b.v3_and_below_topics:
        for index in t.partitions:
            if error is not None:
                code = error
            elif t.name in denied:
                code = ErrorCode.topic_authorization_failed
            elif (t.name, index) in unknown:
                code = ErrorCode.unknown_topic_or_partition
            else:
                code = ErrorCode.operation_not_attempted
            by_topic.setdefault(t.name, []).append(
                {"partition_index": index, "partition_error_code": code}
            )
    return {
        "throttle_time": 0,
        "results_by_topic_v3_and_below": [
            {"name": name, "results_by_partition": parts} for name, parts in by_topic.items()
        ],
    }


async def handle_add_offsets(ctx: HandlerContext, request: Request) -> dict:
    """The group's offsets partition joins the transaction, so its marker makes the
    transaction's offset commits visible."""
    b = request.body
    if not allowed(ctx, request, Operation.WRITE, TXN_ID, b.transactional_id):
        return {"throttle_time": 0, "error_code": ErrorCode.transactional_id_authorization_failed}
    if not allowed(ctx, request, Operation.READ, GROUP, b.group_id):
        return {"throttle_time": 0, "error_code": ErrorCode.group_authorization_failed}
    if not b.group_id:
        return {"throttle_time": 0, "error_code": ErrorCode.invalid_group_id}
    await ctx.offsets.ensure_topic()
    offsets_partition = (OFFSETS_TOPIC, ctx.offsets.partition_for(b.group_id))
    error = await ctx.transactions.add_partitions(
        b.transactional_id, b.producer_id, b.producer_epoch, {offsets_partition}
    )
    return {"throttle_time": 0, "error_code": error}


async def handle_end_txn(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not allowed(ctx, request, Operation.WRITE, TXN_ID, b.transactional_id):
        return {"throttle_time": 0, "error_code": ErrorCode.transactional_id_authorization_failed}
    error = await ctx.transactions.end_transaction(
        b.transactional_id, b.producer_id, b.producer_epoch, b.committed
    )
    return {"throttle_time": 0, "error_code": error}


async def handle_txn_offset_commit(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not allowed(ctx, request, Operation.WRITE, TXN_ID, b.transactional_id):
        refusal: ErrorCode | None = ErrorCode.transactional_id_authorization_failed
    elif not allowed(ctx, request, Operation.READ, GROUP, b.group_id):
        refusal = ErrorCode.group_authorization_failed
    elif not coordinates(ctx, b.group_id):
        refusal = ErrorCode.not_coordinator
    elif getattr(b, "member_id", "") or getattr(b, "generation_id", -1) >= 0:
        # KIP-447: a member's commit is checked like OffsetCommit's, so a zombie of
        # an older generation cannot commit
        refusal = ctx.groups.commit_error(
            b.group_id,
            getattr(b, "generation_id", -1),
            getattr(b, "member_id", ""),
            getattr(b, "group_instance_id", None),
        )
    else:
        refusal = None
    to_commit: dict[tuple[str, int], CommittedOffset] = {}
    topics = []
    for t in b.topics:
        parts = []
        topic_ok = refusal is not None or allowed(ctx, request, Operation.READ, TOPIC, t.name)
        for p in t.partitions:
            error = refusal or ErrorCode.none
            if not topic_ok:
                error = ErrorCode.topic_authorization_failed
            if error == ErrorCode.none:
                if partition(ctx.logs.topics.get(t.name), p.partition_index) is None:
                    error = ErrorCode.unknown_topic_or_partition
                else:
                    to_commit[(t.name, p.partition_index)] = CommittedOffset(
                        p.committed_offset,
                        getattr(p, "committed_leader_epoch", -1),
                        p.committed_metadata or "",
                        0,
                    )
            parts.append({"partition_index": p.partition_index, "error_code": error})
        topics.append({"name": t.name, "partitions": parts})
    if to_commit:
        try:
            await ctx.offsets.txn_commit(b.group_id, b.producer_id, b.producer_epoch, to_commit)
        except COMMIT_FAILURES as e:
            mark_failed(topics, to_commit, e)
    return {"throttle_time": 0, "topics": topics}


async def handle_write_markers(ctx: HandlerContext, request: Request) -> dict:
    """From another broker's transaction coordinator: markers for partitions led here."""
    if not cluster_allowed(ctx, request, Operation.CLUSTER_ACTION):
        denied = ErrorCode.cluster_authorization_failed
        return {
            "markers": [
                {
                    "producer_id": m.producer_id,
                    "topics": [
                        {
                            "name": t.name,
                            "partitions": [
                                {"partition_index": i, "error_code": denied}
                                for i in t.partition_indexes
                            ],
                        }
                        for t in m.topics
                    ],
                }
                for m in request.body.markers
            ]
        }
    out = []
    for m in request.body.markers:
        wanted = [(t.name, index) for t in m.topics for index in t.partition_indexes]
        results = await ctx.txn_markers.write_local(
            m.producer_id, m.producer_epoch, m.transaction_result, m.coordinator_epoch, wanted
        )
        by_topic: dict[str, list[dict]] = {}
        for (topic, index), error in results.items():
            by_topic.setdefault(topic, []).append({"partition_index": index, "error_code": error})
        out.append(
            {
                "producer_id": m.producer_id,
                "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
            }
        )
    return {"markers": out}


async def handle_describe_transactions(ctx: HandlerContext, request: Request) -> dict:
    states = []
    for txn_id in request.body.transactional_ids:
        error, meta = ctx.transactions.describe(txn_id)
        if not allowed(ctx, request, Operation.DESCRIBE, TXN_ID, txn_id):
            error, meta = ErrorCode.transactional_id_authorization_failed, None
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(meta.partitions if meta else ()):
            by_topic.setdefault(topic, []).append(index)
        states.append(
            {
                "error_code": error,
                "transactional_id": txn_id,
                "transaction_state": str(meta.state) if meta else "",
                "transaction_timeout": meta.timeout_ms if meta else 0,
                "transaction_start_time": meta.start_ms if meta else -1,
                "producer_id": meta.producer_id if meta else -1,
                "producer_epoch": meta.producer_epoch if meta else -1,
                "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
            }
        )
    return {"throttle_time": 0, "transaction_states": states}


async def handle_list_transactions(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    known = {str(s) for s in TxnState}
    state_filters = set(b.state_filters)
    pid_filters = set(b.producer_id_filters)
    min_duration = getattr(b, "duration_filter", -1)
    pattern = getattr(b, "transactional_id_pattern", None)  # v2, KIP-1152
    try:
        matcher = re.compile(pattern) if pattern else None
    except re.error as e:
        log.info("ListTransactions: bad pattern %r: %s", pattern, e)
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.invalid_regular_expression,
            "unknown_state_filters": [],
            "transaction_states": [],
        }
    now = int(time.time() * 1000)
    listed = []
    for meta in ctx.transactions.listing():
        if state_filters and str(meta.state) not in state_filters:
            continue
        if pid_filters and meta.producer_id not in pid_filters:
            continue
        if min_duration >= 0 and (meta.start_ms < 0 or now - meta.start_ms < min_duration):
            continue
        if matcher is not None and not matcher.fullmatch(meta.transactional_id):
            continue
        if not allowed(
            ctx, request, Operation.DESCRIBE, TXN_ID, meta.transactional_id, audit=False
        ):
            continue
        listed.append(
            {
                "transactional_id": meta.transactional_id,
                "producer_id": meta.producer_id,
                "transaction_state": str(meta.state),
            }
        )
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "unknown_state_filters": sorted(state_filters - known),
        "transaction_states": listed,
    }


async def handle_describe_producers(ctx: HandlerContext, request: Request) -> dict:
    topics = []
    for t in request.body.topics:
        parts = []
        for index in t.partition_indexes:
            p, error = served(ctx, ctx.logs.topics.get(t.name), index)
            if not allowed(ctx, request, Operation.READ, TOPIC, t.name):
                p, error = None, ErrorCode.topic_authorization_failed
            active = []
            if p is not None and error == ErrorCode.none:
                for pid, epoch, last_seq, last_ts in p.producers.describe():
                    active.append(
                        {
                            "producer_id": pid,
                            "producer_epoch": epoch,
                            "last_sequence": last_seq,
                            "last_timestamp": last_ts,
                            "coordinator_epoch": -1,
                            "current_txn_start_offset": p.txns.first_offset_of(pid),
                        }
                    )
            parts.append(
                {
                    "partition_index": index,
                    "error_code": error,
                    "error_message": None,
                    "active_producers": active,
                }
            )
        topics.append({"name": t.name, "partitions": parts})
    return {"throttle_time": 0, "topics": topics}
