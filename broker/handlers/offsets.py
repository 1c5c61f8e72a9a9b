"""OffsetCommit, OffsetFetch, OffsetDelete and OffsetForLeaderEpoch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from broker.groups.committed import CommittedOffset
from broker.groups.group import GroupState
from broker.groups.offset_store import CommitFenced, CommitTimedOut
from broker.handlers.auth import GROUP, TOPIC, allowed
from broker.handlers.resolve import coordinates, partition, served
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode
from wal import WalFailure

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

MAX_METADATA = 4096  # offset.metadata.max.bytes


def _partition_exists(ctx: HandlerContext, topic: str, index: int) -> bool:
    return partition(ctx.logs.topics.get(topic), index) is not None


async def handle_commit(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not b.group_id:
        refusal: ErrorCode | None = ErrorCode.invalid_group_id
    elif not allowed(ctx, request, Operation.READ, GROUP, b.group_id):
        refusal = ErrorCode.group_authorization_failed
    elif not coordinates(ctx, b.group_id):
        refusal = ErrorCode.not_coordinator
    else:
        refusal = ctx.groups.commit_error(
            b.group_id,
            b.generation_id_or_member_epoch,
            b.member_id,
            getattr(b, "group_instance_id", None),
            [(t.name, p.partition_index) for t in b.topics for p in t.partitions],
        )
    to_commit: dict[tuple[str, int], CommittedOffset] = {}
    topics = []
    for t in b.topics:
        parts = []
        topic_ok = refusal is not None or allowed(ctx, request, Operation.READ, TOPIC, t.name)
        for p in t.partitions:
            error = refusal or (
                ErrorCode.none if topic_ok else ErrorCode.topic_authorization_failed
            )
            metadata = p.committed_metadata or ""
            if error == ErrorCode.none:
                if not _partition_exists(ctx, t.name, p.partition_index):
                    error = ErrorCode.unknown_topic_or_partition
                elif len(metadata.encode()) > MAX_METADATA:
                    error = ErrorCode.offset_metadata_too_large
                else:
                    to_commit[(t.name, p.partition_index)] = CommittedOffset(
                        p.committed_offset, getattr(p, "committed_leader_epoch", -1), metadata, 0
                    )
            parts.append({"partition_index": p.partition_index, "error_code": error})
        topics.append({"name": t.name, "partitions": parts})
    if to_commit:
        group = ctx.groups.group(b.group_id)
        try:
            await ctx.offsets.commit(b.group_id, to_commit, group.protocol_type if group else None)
        except COMMIT_FAILURES as e:  # the client retries
            mark_failed(topics, to_commit, e)
    return {"throttle_time": 0, "topics": topics}


COMMIT_FAILURES = (WalFailure, CommitFenced, CommitTimedOut)


def mark_failed(topics: list[dict], committed: Iterable[tuple[str, int]], e: Exception) -> None:
    """A commit that was not stored: its partitions answer with the retriable error."""
    code = {
        CommitFenced: ErrorCode.not_coordinator,
        CommitTimedOut: ErrorCode.request_timed_out,
    }.get(type(e), ErrorCode.coordinator_not_available)
    for t in topics:
        for part in t["partitions"]:
            if (t["name"], part["partition_index"]) in committed:
                part["error_code"] = code


def _fetch_group(
    ctx: HandlerContext, request: Request, group_id: str, topics, require_stable: bool = False
) -> tuple[list[dict], ErrorCode]:
    """`require_stable` (KIP-447): a partition whose offset an open transaction is
    committing answers UNSTABLE_OFFSET_COMMIT, and the client asks again. Needs DESCRIBE
    on the group; topics the principal may not DESCRIBE are left out of a fetch of all,
    and answer TOPIC_AUTHORIZATION_FAILED when named."""
    if not allowed(ctx, request, Operation.DESCRIBE, GROUP, group_id):
        return [], ErrorCode.group_authorization_failed
    if not coordinates(ctx, group_id):
        return [], ErrorCode.not_coordinator
    store = ctx.offsets
    if topics is None:  # every partition the group has offsets for
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(store.of_group(group_id)):
            by_topic.setdefault(topic, []).append(partition)
        wanted = [
            (t, ps)
            for t, ps in by_topic.items()
            if allowed(ctx, request, Operation.DESCRIBE, TOPIC, t, audit=False)
        ]
    else:
        wanted = [(t.name, list(t.partition_indexes)) for t in topics]
    out = []
    for topic, partitions in wanted:
        parts = []
        if not allowed(ctx, request, Operation.DESCRIBE, TOPIC, topic):
            denied = ErrorCode.topic_authorization_failed
            parts = [
                {
                    "partition_index": partition,
                    "committed_offset": -1,
                    "committed_leader_epoch": -1,
                    "metadata": "",
                    "error_code": denied,
                }
                for partition in partitions
            ]
            out.append({"name": topic, "partitions": parts})
            continue
        for partition in partitions:
            c = store.get(group_id, topic, partition)
            unstable = require_stable and store.is_pending(group_id, topic, partition)
            parts.append(
                {
                    "partition_index": partition,
                    "committed_offset": c.offset if c else -1,
                    "committed_leader_epoch": c.leader_epoch if c else -1,
                    "metadata": c.metadata if c else "",
                    "error_code": ErrorCode.unstable_offset_commit if unstable else ErrorCode.none,
                }
            )
        out.append({"name": topic, "partitions": parts})
    return out, ErrorCode.none


async def handle_fetch(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    stable = getattr(b, "require_stable", False)
    if request.header.api_version >= 8:
        groups = []
        for g in b.groups:
            topics, error = _fetch_group(ctx, request, g.group_id, g.topics, stable)
            groups.append({"group_id": g.group_id, "topics": topics, "error_code": error})
        return {"throttle_time": 0, "groups": groups}
    topics, error = _fetch_group(ctx, request, b.group_id, b.topics, stable)
    return {"throttle_time": 0, "topics": topics, "error_code": error}


async def handle_delete(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not allowed(ctx, request, Operation.DELETE, GROUP, b.group_id):
        denied = ErrorCode.group_authorization_failed
        return {"error_code": denied, "throttle_time": 0, "topics": []}
    if not coordinates(ctx, b.group_id):
        return {"error_code": ErrorCode.not_coordinator, "throttle_time": 0, "topics": []}
    group = ctx.groups.group(b.group_id)
    if group is None and not ctx.offsets.of_group(b.group_id):
        return {"error_code": ErrorCode.group_id_not_found, "throttle_time": 0, "topics": []}
    subscribed: set[str] = set()
    if group is not None and group.state != GroupState.EMPTY:
        known = group.subscribed_topics()
        if known is None:  # an active group whose subscriptions we cannot read
            return {"error_code": ErrorCode.non_empty_group, "throttle_time": 0, "topics": []}
        subscribed = known
    deleting = []
    topics = []
    for t in b.topics:
        parts = []
        for p in t.partitions:
            error = ErrorCode.none
            if not allowed(ctx, request, Operation.READ, TOPIC, t.name):
                error = ErrorCode.topic_authorization_failed
            elif t.name in subscribed:
                error = ErrorCode.group_subscribed_to_topic
            elif not _partition_exists(ctx, t.name, p.partition_index):
                error = ErrorCode.unknown_topic_or_partition
            else:
                deleting.append((t.name, p.partition_index))
            parts.append({"partition_index": p.partition_index, "error_code": error})
        topics.append({"name": t.name, "partitions": parts})
    await ctx.offsets.delete(b.group_id, deleting)
    return {"error_code": ErrorCode.none, "throttle_time": 0, "topics": topics}


async def handle_leader_epoch(ctx: HandlerContext, request: Request) -> dict:
    """The current epoch ends at the log end; an earlier one where the current one began,
    as far as this broker knows (never earlier than it really ended, so no truncation is
    reported falsely). A consumer that read past that point from a broker that failed
    over in wal mode (records the new leader never had) is told so, and resets."""
    topics = []
    for t in request.body.topics:
        state = ctx.logs.topics.get(t.topic)
        denied = not allowed(ctx, request, Operation.DESCRIBE, TOPIC, t.topic)
        parts = []
        for p in t.partitions:
            part, error = served(ctx, state, p.partition, getattr(p, "current_leader_epoch", -1))
            if denied:
                part, error = None, ErrorCode.topic_authorization_failed
            entry = {
                "partition": p.partition,
                "error_code": error,
                "leader_epoch": -1,
                "end_offset": -1,
            }
            if part is not None and error == ErrorCode.none:
                if p.leader_epoch < part.leader_epoch:
                    # an earlier epoch ended where the current one began (at most)
                    entry["leader_epoch"] = p.leader_epoch
                    entry["end_offset"] = part.epoch_start_offset
                else:
                    entry["leader_epoch"] = part.leader_epoch
                    entry["end_offset"] = part.log_end_offset
            parts.append(entry)
        topics.append({"topic": t.topic, "partitions": parts})
    return {"throttle_time": 0, "topics": topics}
