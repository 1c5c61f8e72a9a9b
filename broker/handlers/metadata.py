"""Metadata: brokers, topics, partitions and leaders; auto-creates topics when allowed."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from broker.handlers.auth import TOPIC, allowed, cluster_allowed, listener_of, operations
from broker.log.partition import Partition
from broker.log.topics import TopicState
from broker.naming import topic_name_error
from broker.security.acl import CLUSTER_NAME, Operation, ResourceType
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)

_NO_AUTH_OPS = -2147483648
_ZERO_UUID = uuid.UUID(int=0)


def _partition_entry(ctx: HandlerContext, p: Partition) -> dict:
    """The bucket is the only replica; a partition's one replica is its leader."""
    leader, epoch = ctx.leadership.leader_of(p)
    return {
        "error_code": ErrorCode.none if leader >= 0 else ErrorCode.leader_not_available,
        "partition_index": p.index,
        "leader_id": leader,
        "leader_epoch": epoch,
        "replica_nodes": (leader,) if leader >= 0 else (),
        "isr_nodes": (leader,) if leader >= 0 else (),
        "offline_replicas": (),
    }


def topic_entry(ctx: HandlerContext, state: TopicState, ops: int = _NO_AUTH_OPS) -> dict:
    return {
        "error_code": ErrorCode.none,
        "name": state.name,
        "topic_id": state.record.uuid,
        "is_internal": state.record.internal,
        "partitions": [_partition_entry(ctx, p) for p in state.partitions],
        "topic_authorized_operations": ops,
    }


def _error_entry(name: str | None, topic_id: uuid.UUID | None, error: ErrorCode) -> dict:
    return {
        "error_code": error,
        "name": name,
        "topic_id": topic_id or _ZERO_UUID,
        "is_internal": False,
        "partitions": [],
        "topic_authorized_operations": _NO_AUTH_OPS,
    }


async def _auto_create(ctx: HandlerContext, name: str) -> TopicState:
    try:
        return await ctx.logs.create_topic(name, ctx.settings.num_partitions, {})
    except FileExistsError:  # created meanwhile by another request or broker
        return ctx.logs.topics[name]


async def handle(ctx: HandlerContext, request: Request) -> dict:
    body = request.body
    version = request.header.api_version
    logs = ctx.logs
    requested = body.topics
    if version == 0 and not requested:
        requested = None  # v0: an empty list means every topic
    allow_auto = (
        getattr(body, "allow_auto_topic_creation", True) and ctx.settings.auto_create_topics
    )

    with_ops = getattr(body, "include_topic_authorized_operations", False)

    def entry(state: TopicState) -> dict:
        ops = operations(ctx, request, TOPIC, state.name) if with_ops else _NO_AUTH_OPS
        return topic_entry(ctx, state, ops)

    def may_describe(name: str, audit: bool = True) -> bool:
        return allowed(ctx, request, Operation.DESCRIBE, TOPIC, name, audit)

    topics: list[dict] = []
    if requested is None:  # every topic the principal may describe
        topics = [entry(t) for t in list(logs.topics.values()) if may_describe(t.name, False)]
    else:
        for t in requested:
            name = getattr(t, "name", None)
            topic_id = getattr(t, "topic_id", None)
            if name is None and topic_id is not None and topic_id != _ZERO_UUID:
                state = logs.topics_by_id.get(topic_id.bytes)
                if state is None:
                    topics.append(_error_entry(None, topic_id, ErrorCode.unknown_topic_id))
                elif not may_describe(state.name):
                    denied = ErrorCode.topic_authorization_failed
                    topics.append(_error_entry(None, topic_id, denied))
                else:
                    topics.append(entry(state))
                continue
            if name is not None and not may_describe(name):
                topics.append(_error_entry(name, None, ErrorCode.topic_authorization_failed))
                continue
            state = logs.topics.get(name) if name is not None else None
            if state is None:
                problem = topic_name_error(name)
                if problem is not None:
                    topics.append(_error_entry(name, None, ErrorCode.invalid_topic_exception))
                    continue
                if not allow_auto:
                    topics.append(_error_entry(name, None, ErrorCode.unknown_topic_or_partition))
                    continue
                if not (
                    cluster_allowed(ctx, request, Operation.CREATE, audit=False)
                    or allowed(ctx, request, Operation.CREATE, TOPIC, name)
                ):
                    denied = ErrorCode.topic_authorization_failed
                    topics.append(_error_entry(name, None, denied))
                    continue
                state = await _auto_create(ctx, name)
            topics.append(entry(state))

    return {
        "throttle_time": 0,
        "brokers": [
            {
                "node_id": b.broker_id,
                "host": b.reachable(listener_of(request))[0],
                "port": b.reachable(listener_of(request))[1],
                "rack": b.rack,
            }
            for b in ctx.leadership.brokers()
        ],
        "cluster_id": logs.meta.cluster_id,
        "controller_id": ctx.leadership.controller_id(),
        "topics": topics,
        "cluster_authorized_operations": (
            operations(ctx, request, ResourceType.CLUSTER, CLUSTER_NAME)
            if getattr(body, "include_cluster_authorized_operations", False)
            else _NO_AUTH_OPS
        ),
        "error_code": ErrorCode.none,
    }
