"""DescribeClientQuotas and AlterClientQuotas (KIP-546): client quotas by user and
client id, kept in the cluster's metadata document (`kafka-configs --entity-type users
|clients`). They need DESCRIBE_CONFIGS and ALTER_CONFIGS on the cluster. The server throttles
by them (broker.security.quotas)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.handlers.auth import cluster_allowed
from broker.security.acl import Operation
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

ENTITY_TYPES = ("user", "client-id", "ip")
KEYS = {
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
    "connection_creation_rate",
}
_EXACT, _DEFAULT, _ANY = 0, 1, 2


def _entity_key(entity) -> tuple[tuple[str, str | None], ...]:
    return tuple(sorted((e.entity_type, e.entity_name) for e in entity))


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    if not cluster_allowed(ctx, request, Operation.DESCRIBE_CONFIGS):
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.cluster_authorization_failed,
            "error_message": None,
            "entries": None,
        }
    entries = []
    for q in ctx.logs.meta.quotas:
        entity = {t: n for t, n in q["entity"]}
        ok = True
        for c in b.components:
            if c.entity_type not in entity:
                ok = False
            elif c.match_type == _EXACT:
                ok = ok and entity[c.entity_type] == c.match
            elif c.match_type == _DEFAULT:
                ok = ok and entity[c.entity_type] is None
        if b.strict and set(entity) != {c.entity_type for c in b.components}:
            ok = False
        if ok:
            entries.append(
                {
                    "entity": [{"entity_type": t, "entity_name": n} for t, n in q["entity"]],
                    "values": [{"key": k, "value": v} for k, v in sorted(q["values"].items())],
                }
            )
    return {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "entries": entries,
    }


async def handle_alter(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    allowed = cluster_allowed(ctx, request, Operation.ALTER_CONFIGS)
    results, changes = [], []
    for entry in b.entries:
        entity = [
            {"entity_type": e.entity_type, "entity_name": e.entity_name} for e in entry.entity
        ]
        error, message = ErrorCode.none, None
        if not allowed:
            error = ErrorCode.cluster_authorization_failed
        elif not entry.entity or any(e.entity_type not in ENTITY_TYPES for e in entry.entity):
            error, message = ErrorCode.invalid_request, "unknown quota entity type"
        elif any(op.key not in KEYS for op in entry.ops):
            error, message = ErrorCode.invalid_request, "unknown quota key"
        elif any(not op.remove and op.value <= 0 for op in entry.ops):
            error, message = ErrorCode.invalid_request, "a quota must be positive"
        else:
            changes.append((_entity_key(entry.entity), entry.ops))
        results.append({"error_code": error, "error_message": message, "entity": entity})
    if changes and not b.validate_only:

        def change() -> None:
            by_key = {
                tuple(sorted((t, n) for t, n in q["entity"])): dict(q["values"])
                for q in ctx.logs.meta.quotas
            }
            for key, ops in changes:
                values = by_key.setdefault(key, {})
                for op in ops:
                    if op.remove:
                        values.pop(op.key, None)
                    else:
                        values[op.key] = float(op.value)
            ctx.logs.meta.quotas = [
                {"entity": [list(e) for e in key], "values": values}
                for key, values in by_key.items()
                if values
            ]

        await ctx.logs.meta.update(change)
    return {"throttle_time": 0, "entries": results}
