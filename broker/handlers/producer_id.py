"""InitProducerId: idempotent producers get an id here; transactional ones from their
transaction coordinator (broker.txn.coordinator)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker.handlers.auth import TOPIC, TXN_ID, allowed, cluster_allowed
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)

_MAX_EPOCH = 32767


def _refused(error: ErrorCode) -> dict:
    return {"throttle_time": 0, "error_code": error, "producer_id": -1, "producer_epoch": -1}


async def handle(ctx: HandlerContext, request: Request) -> dict:
    body = request.body
    pid = getattr(body, "producer_id", -1)
    epoch = getattr(body, "producer_epoch", -1)
    if body.transactional_id and not allowed(
        ctx, request, Operation.WRITE, TXN_ID, body.transactional_id
    ):
        return _refused(ErrorCode.transactional_id_authorization_failed)
    if not body.transactional_id and not (
        cluster_allowed(ctx, request, Operation.IDEMPOTENT_WRITE, audit=False)
        or ctx.security.any_allowed(request.session, Operation.WRITE, TOPIC)
    ):
        cluster_allowed(ctx, request, Operation.IDEMPOTENT_WRITE)  # audited
        return _refused(ErrorCode.cluster_authorization_failed)
    if body.transactional_id:  # an empty id means none, as in Kafka
        timeout_ms = int(body.transaction_timeout.total_seconds() * 1000)
        error, pid, epoch = await ctx.transactions.init_producer_id(
            body.transactional_id, timeout_ms, pid, epoch
        )
        return {
            "throttle_time": 0,
            "error_code": error,
            "producer_id": pid,
            "producer_epoch": epoch,
        }
    if 0 <= pid < ctx.logs.meta.producer_id_limit and 0 <= epoch < _MAX_EPOCH - 1:
        # KIP-360: an idempotent producer re-initialising keeps its id with a bumped epoch.
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.none,
            "producer_id": pid,
            "producer_epoch": epoch + 1,
        }
    pid = await ctx.logs.allocate_producer_id()
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "producer_id": pid,
        "producer_epoch": 0,
    }
