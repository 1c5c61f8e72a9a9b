"""FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups,
ListGroups and DeleteGroups: thin shells over broker.groups.coordinator."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from broker.deferred import Deferred
from broker.groups.coordinator import Answer
from broker.groups.responses import join_error, sync_error
from broker.handlers.auth import (
    GROUP,
    TXN_ID,
    allowed,
    cluster_allowed,
    listener_of,
    operations,
)
from broker.handlers.resolve import coordinates, coordinator_of, txn_coordinator_of
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)

GROUP_KEY = 0
TRANSACTION_KEY = 1


_NOT_COORDINATOR = ErrorCode.not_coordinator
_DENIED = ErrorCode.group_authorization_failed


def _may_read(ctx: HandlerContext, request: Request) -> bool:
    """Joining, syncing, heartbeating and leaving need READ on the group."""
    return allowed(ctx, request, Operation.READ, GROUP, request.body.group_id)


def _no_coordinator(key: str, error: ErrorCode, message: str) -> dict:
    return {
        "key": key,
        "node_id": -1,
        "host": "",
        "port": -1,
        "error_code": error,
        "error_message": message,
    }


def _coordinator_entry(
    ctx: HandlerContext, key: str, key_type: int, request: Request | None = None
) -> dict:
    listener = listener_of(request) if request is not None else None
    if key_type not in (GROUP_KEY, TRANSACTION_KEY):
        return _no_coordinator(key, ErrorCode.invalid_request, f"unknown key type {key_type}")
    if not key:
        return _no_coordinator(key, ErrorCode.invalid_request, "empty key")
    if request is not None:
        if key_type == TRANSACTION_KEY and not allowed(
            ctx, request, Operation.DESCRIBE, TXN_ID, key
        ):
            return _no_coordinator(key, ErrorCode.transactional_id_authorization_failed, None)
        if key_type == GROUP_KEY and not allowed(ctx, request, Operation.DESCRIBE, GROUP, key):
            return _no_coordinator(key, ErrorCode.group_authorization_failed, None)
    find = txn_coordinator_of if key_type == TRANSACTION_KEY else coordinator_of
    node = find(ctx, key)
    if node is None:  # its offsets (or transaction state) partition has no live leader
        return _no_coordinator(
            key, ErrorCode.coordinator_not_available, "the coordinator is moving; retry"
        )
    return {
        "key": key,
        "node_id": node.broker_id,
        "host": node.reachable(listener)[0],
        "port": node.reachable(listener)[1],
        "error_code": ErrorCode.none,
        "error_message": None,
    }


async def handle_find_coordinator(ctx: HandlerContext, request: Request) -> dict:
    body = request.body
    key_type = getattr(body, "key_type", GROUP_KEY)
    if request.header.api_version >= 4:
        entries = [_coordinator_entry(ctx, key, key_type, request) for key in body.coordinator_keys]
        return {"throttle_time": 0, "coordinators": entries}
    entry = _coordinator_entry(ctx, body.key, key_type, request)
    return {"throttle_time": 0, **entry}


def _peer_host(request: Request) -> str:
    return request.peer.rsplit(":", 1)[0] if request.peer else ""


async def _when_done(parked: asyncio.Future[dict]) -> dict:
    return {"throttle_time": 0, **await parked}


def _answer(answer: Answer) -> dict | Deferred:
    """The request has taken effect; a member parked until the rebalance completes
    holds no state while it waits, so its wait is deferred."""
    if isinstance(answer, asyncio.Future):
        return Deferred(_when_done(answer))
    return {"throttle_time": 0, **answer}


async def handle_join(ctx: HandlerContext, request: Request) -> dict | Deferred:
    b = request.body
    if not _may_read(ctx, request):
        return {"throttle_time": 0, **join_error(_DENIED, b.member_id)}
    if not coordinates(ctx, b.group_id):
        return {"throttle_time": 0, **join_error(_NOT_COORDINATOR, b.member_id)}
    session = int(b.session_timeout.total_seconds() * 1000)
    rebalance = getattr(b, "rebalance_timeout", None)
    rebalance_ms = int(rebalance.total_seconds() * 1000) if rebalance is not None else session
    answer = ctx.groups.start_join(
        group_id=b.group_id,
        member_id=b.member_id,
        group_instance_id=getattr(b, "group_instance_id", None),
        client_id=request.header.client_id or "",
        client_host="/" + _peer_host(request),
        session_timeout_ms=session,
        rebalance_timeout_ms=rebalance_ms,
        protocol_type=b.protocol_type,
        protocols=[(p.name, p.metadata) for p in b.protocols],
        require_known_member_id=request.header.api_version >= 4,
    )
    return _answer(answer)


async def handle_sync(ctx: HandlerContext, request: Request) -> dict | Deferred:
    b = request.body
    if not _may_read(ctx, request):
        return {"throttle_time": 0, **sync_error(_DENIED)}
    if not coordinates(ctx, b.group_id):
        return {"throttle_time": 0, **sync_error(_NOT_COORDINATOR)}
    answer = ctx.groups.start_sync(
        b.group_id,
        b.generation_id,
        b.member_id,
        getattr(b, "group_instance_id", None),
        getattr(b, "protocol_type", None),
        getattr(b, "protocol_name", None),
        {a.member_id: a.assignment for a in b.assignments},
    )
    return _answer(answer)


async def handle_heartbeat(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not _may_read(ctx, request):
        return {"throttle_time": 0, "error_code": _DENIED}
    if not coordinates(ctx, b.group_id):
        return {"throttle_time": 0, "error_code": _NOT_COORDINATOR}
    error = ctx.groups.heartbeat(
        b.group_id, b.generation_id, b.member_id, getattr(b, "group_instance_id", None)
    )
    return {"throttle_time": 0, "error_code": error}


async def handle_leave(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not _may_read(ctx, request):
        return {"throttle_time": 0, "error_code": _DENIED, "members": []}
    if not coordinates(ctx, b.group_id):
        if request.header.api_version < 3:
            return {"throttle_time": 0, "error_code": _NOT_COORDINATOR}
        return {"throttle_time": 0, "error_code": _NOT_COORDINATOR, "members": []}
    if request.header.api_version < 3:
        (error,) = ctx.groups.leave(b.group_id, [(b.member_id, None)])
        return {"throttle_time": 0, "error_code": error}
    leaving = [(m.member_id, m.group_instance_id) for m in b.members]
    errors = ctx.groups.leave(b.group_id, leaving)
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "members": [
            {"member_id": mid, "group_instance_id": iid, "error_code": err}
            for (mid, iid), err in zip(leaving, errors, strict=True)
        ],
    }


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    groups = []
    for g in request.body.groups:
        entry = ctx.groups.describe(g)
        if not allowed(ctx, request, Operation.DESCRIBE, GROUP, g):
            entry = {**entry, "error_code": _DENIED, "group_state": "", "members": []}
        elif not coordinates(ctx, g):
            entry = {**entry, "error_code": _NOT_COORDINATOR, "group_state": "", "members": []}
        if getattr(request.body, "include_authorized_operations", False):
            entry = {**entry, "authorized_operations": operations(ctx, request, GROUP, g)}
        groups.append(entry)
    return {"throttle_time": 0, "groups": groups}


async def handle_list(ctx: HandlerContext, request: Request) -> dict:
    states = {s.lower() for s in getattr(request.body, "states_filter", ())} or None
    types = {t.lower() for t in getattr(request.body, "types_filter", ())}
    groups = ctx.groups.listing(states)
    if not cluster_allowed(ctx, request, Operation.DESCRIBE, audit=False):
        groups = [
            g
            for g in groups
            if allowed(ctx, request, Operation.DESCRIBE, GROUP, g["group_id"], audit=False)
        ]
    if types:  # KIP-848: "classic" and/or "consumer"
        groups = [g for g in groups if g["group_type"].lower() in types]
    return {"throttle_time": 0, "error_code": ErrorCode.none, "groups": groups}


async def handle_delete(ctx: HandlerContext, request: Request) -> dict:
    results = []
    for group_id in request.body.groups_names:
        error = ctx.groups.delete_error(group_id)
        if not coordinates(ctx, group_id):
            error = _NOT_COORDINATOR
        if not allowed(ctx, request, Operation.DELETE, GROUP, group_id):
            error = _DENIED
        elif error is None:
            share = ctx.groups.share.is_consumer_group(group_id)
            ctx.groups.forget(group_id)  # first: a join arriving meanwhile starts afresh
            if share:  # its share-partitions' state goes too
                keys = [(uuid.UUID(bytes=t), p) for t, p in ctx.shares.of_group(group_id)]
                await ctx.shares.delete(group_id, keys)
            await ctx.offsets.delete_group(group_id)
            log.info("deleted group %s", group_id)
            error = ErrorCode.none
        results.append({"group_id": group_id, "error_code": error})
    return {"throttle_time": 0, "results": results}
