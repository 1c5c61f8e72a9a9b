"""CreateAcls, DescribeAcls and DeleteAcls (Kafka's authorizer admin: `kafka-acls`),
and DescribeUserScramCredentials / AlterUserScramCredentials (`kafka-configs
--entity-type users`). ACLs need ALTER (create, delete) or DESCRIBE on the cluster;
without an authorizer the ACL APIs answer SECURITY_DISABLED, as Kafka does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.handlers.auth import cluster_allowed
from broker.security import scram
from broker.security.acl import (
    AclBinding,
    AclFilter,
    InvalidAcl,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    validate,
)
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

_DISABLED = "No Authorizer is configured on the broker (--authorizer acl)"
_DENIED = ErrorCode.cluster_authorization_failed


def _binding(c) -> AclBinding:
    return AclBinding(
        ResourceType(c.resource_type),
        c.resource_name,
        PatternType(getattr(c, "resource_pattern_type", PatternType.LITERAL)),
        c.principal,
        c.host,
        Operation(c.operation),
        Permission(c.permission_type),
    )


def _filter(f) -> AclFilter:
    return AclFilter(
        ResourceType(f.resource_type_filter),
        f.resource_name_filter,
        PatternType(getattr(f, "pattern_type_filter", PatternType.LITERAL)),
        f.principal_filter,
        f.host_filter,
        Operation(f.operation),
        Permission(f.permission_type),
    )


async def handle_create(ctx: HandlerContext, request: Request) -> dict:
    creations = request.body.creations
    if not ctx.security.enabled:
        error = {"error_code": ErrorCode.security_disabled, "error_message": _DISABLED}
        return {"throttle_time": 0, "results": [error for _ in creations]}
    if not cluster_allowed(ctx, request, Operation.ALTER):
        error = {"error_code": _DENIED, "error_message": None}
        return {"throttle_time": 0, "results": [error for _ in creations]}
    results, good = [], []
    for c in creations:
        try:
            b = _binding(c)
            validate(b)
        except (ValueError, InvalidAcl) as e:
            results.append({"error_code": ErrorCode.invalid_request, "error_message": str(e)})
            continue
        good.append(b)
        results.append({"error_code": ErrorCode.none, "error_message": None})
    if good:
        await ctx.security.create_acls(good)
    return {"throttle_time": 0, "results": results}


def _resources(bindings: list[AclBinding]) -> list[dict]:
    by_resource: dict[tuple, list[dict]] = {}
    for b in bindings:
        key = (int(b.resource_type), b.resource_name, int(b.pattern_type))
        by_resource.setdefault(key, []).append(
            {
                "principal": b.principal,
                "host": b.host,
                "operation": int(b.operation),
                "permission_type": int(b.permission),
            }
        )
    return [
        {"resource_type": t, "resource_name": n, "pattern_type": p, "acls": acls}
        for (t, n, p), acls in by_resource.items()
    ]


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    def answer(error: ErrorCode, message: str | None, resources: list) -> dict:
        return {
            "throttle_time": 0,
            "error_code": error,
            "error_message": message,
            "resources": resources,
        }

    if not ctx.security.enabled:
        return answer(ErrorCode.security_disabled, _DISABLED, [])
    if not cluster_allowed(ctx, request, Operation.DESCRIBE):
        return answer(_DENIED, None, [])
    try:
        f = _filter(request.body)
    except ValueError as e:
        return answer(ErrorCode.invalid_request, str(e), [])
    return answer(ErrorCode.none, None, _resources(ctx.security.describe_acls(f)))


async def handle_delete(ctx: HandlerContext, request: Request) -> dict:
    filters = request.body.filters

    def failed(error: ErrorCode, message: str | None) -> dict:
        return {"error_code": error, "error_message": message, "matching_acls": []}

    if not ctx.security.enabled:
        failure = failed(ErrorCode.security_disabled, _DISABLED)
        return {"throttle_time": 0, "filter_results": [failure for _ in filters]}
    if not cluster_allowed(ctx, request, Operation.ALTER):
        return {"throttle_time": 0, "filter_results": [failed(_DENIED, None) for _ in filters]}
    try:
        parsed = [_filter(f) for f in filters]
    except ValueError as e:
        failure = failed(ErrorCode.invalid_request, str(e))
        return {"throttle_time": 0, "filter_results": [failure for _ in filters]}
    deleted = await ctx.security.delete_acls(parsed)
    results = [
        {
            "error_code": ErrorCode.none,
            "error_message": None,
            "matching_acls": [
                {
                    "error_code": ErrorCode.none,
                    "error_message": None,
                    "resource_type": int(b.resource_type),
                    "resource_name": b.resource_name,
                    "pattern_type": int(b.pattern_type),
                    "principal": b.principal,
                    "host": b.host,
                    "operation": int(b.operation),
                    "permission_type": int(b.permission),
                }
                for b in hits
            ],
        }
        for hits in deleted
    ]
    return {"throttle_time": 0, "filter_results": results}


async def handle_describe_scram(ctx: HandlerContext, request: Request) -> dict:
    def answer(error: ErrorCode, results: list) -> dict:
        return {"throttle_time": 0, "error_code": error, "error_message": None, "results": results}

    if not cluster_allowed(ctx, request, Operation.DESCRIBE):
        return answer(_DENIED, [])
    users = ctx.security.users()
    wanted = request.body.users
    names = sorted(users) if wanted is None else [u.name for u in wanted]
    results = []
    for name in names:
        mechs = users.get(name)
        if not mechs:
            results.append(
                {
                    "user": name,
                    "error_code": ErrorCode.resource_not_found,
                    "error_message": f"Attempt to describe a user credential that does not "
                    f"exist: {name}",
                    "credential_infos": [],
                }
            )
            continue
        infos = [
            {"mechanism": scram.TYPE_OF[m], "iterations": i}
            for m, i in sorted(mechs.items())
            if m in scram.TYPE_OF
        ]
        results.append(
            {
                "user": name,
                "error_code": ErrorCode.none,
                "error_message": None,
                "credential_infos": infos,
            }
        )
    return answer(ErrorCode.none, results)


async def handle_alter_scram(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    names = [d.name for d in b.deletions] + [u.name for u in b.upsertions]
    if not cluster_allowed(ctx, request, Operation.ALTER):
        return {
            "throttle_time": 0,
            "results": [
                {"user": n, "error_code": _DENIED, "error_message": None}
                for n in dict.fromkeys(names)
            ],
        }
    errors: dict[str, tuple[ErrorCode, str | None]] = {}
    seen: dict[tuple[str, str], int] = {}
    for n, mech in [(d.name, d.mechanism) for d in b.deletions] + [
        (u.name, u.mechanism) for u in b.upsertions
    ]:
        seen[(n, mech)] = seen.get((n, mech), 0) + 1
        if seen[(n, mech)] > 1:
            errors[n] = (ErrorCode.duplicate_resource, "A user credential cannot be altered twice")
        elif not n:
            errors[n] = (ErrorCode.unacceptable_credential, "Username must not be empty")
        elif mech not in scram.MECHANISM_TYPES:
            errors[n] = (ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism")
    deletions, upserts = [], []
    users = ctx.security.users()
    for d in b.deletions:
        if d.name in errors:
            continue
        mech = scram.MECHANISM_TYPES[d.mechanism]
        if mech not in users.get(d.name, {}):
            errors[d.name] = (
                ErrorCode.resource_not_found,
                "Attempt to delete a user credential that does not exist",
            )
            continue
        deletions.append((d.name, mech))
    for u in b.upsertions:
        if u.name in errors:
            continue
        if not scram.MIN_ITERATIONS <= u.iterations <= scram.MAX_ITERATIONS:
            errors[u.name] = (
                ErrorCode.unacceptable_credential,
                f"Iterations must be between {scram.MIN_ITERATIONS} and {scram.MAX_ITERATIONS}",
            )
            continue
        mech = scram.MECHANISM_TYPES[u.mechanism]
        cred = scram.from_salted(mech, bytes(u.salted_password), bytes(u.salt), u.iterations)
        upserts.append((u.name, mech, cred))
    deletions = [d for d in deletions if d[0] not in errors]
    upserts = [u for u in upserts if u[0] not in errors]
    if deletions or upserts:
        await ctx.security.alter_credentials(upserts, deletions)
    return {
        "throttle_time": 0,
        "results": [
            {
                "user": n,
                "error_code": errors.get(n, (ErrorCode.none, None))[0],
                "error_message": errors.get(n, (ErrorCode.none, None))[1],
            }
            for n in dict.fromkeys(names)
        ],
    }
