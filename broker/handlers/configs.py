"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers.

Topic configs and the live broker defaults change live: handlers read them at each
request, so a change applies to the next produce or fetch, and it is persisted before
it is acknowledged. Broker resources are named "" (the cluster-wide default,
`kafka-configs --entity-default`) or this broker's id; see broker.broker_configs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker.broker_configs import ReadOnlyConfig
from broker.groups import group_configs
from broker.handlers.auth import allowed, cluster_allowed
from broker.security.acl import CLUSTER_NAME, Operation, ResourceType
from broker.topic_config import (
    TOPIC_CONFIGS,
    InvalidConfig,
    describe_topic_configs,
    validate_topic_configs,
)
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext
    from broker.log.topics import TopicState

log = logging.getLogger(__name__)

TOPIC = 2
BROKER = 4
_GROUP = 32
_CLIENT_METRICS = 16

SET, DELETE, APPEND, SUBTRACT = range(4)


class _Refused(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error


def _check_access(ctx: HandlerContext, request: Request, r, op: Operation) -> None:
    """DESCRIBE_CONFIGS or ALTER_CONFIGS on the topic, the cluster (a broker's configs)
    or the group; raises _Refused with Kafka's authorization error."""
    checks = {
        TOPIC: (ResourceType.TOPIC, r.resource_name, ErrorCode.topic_authorization_failed),
        BROKER: (ResourceType.CLUSTER, CLUSTER_NAME, ErrorCode.cluster_authorization_failed),
        _GROUP: (ResourceType.GROUP, r.resource_name, ErrorCode.group_authorization_failed),
    }
    check = checks.get(r.resource_type)
    if check is not None and not allowed(ctx, request, op, check[0], check[1]):
        raise _Refused(check[2], "Authorization failed.")


def _topic(ctx: HandlerContext, name: str) -> TopicState:
    state = ctx.logs.topics.get(name)
    if state is None:
        raise _Refused(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
    return state


async def handle_describe(ctx: HandlerContext, request: Request) -> dict:
    b = request.body
    synonyms = getattr(b, "include_synonyms", False)
    results = []
    for r in b.resources:
        keys = set(r.configuration_keys) if r.configuration_keys is not None else None
        entry = {
            "error_code": ErrorCode.none,
            "error_message": None,
            "resource_type": r.resource_type,
            "resource_name": r.resource_name,
            "configs": [],
        }
        try:
            _check_access(ctx, request, r, Operation.DESCRIBE_CONFIGS)
            if r.resource_type == TOPIC:
                state = _topic(ctx, r.resource_name)
                entry["configs"] = describe_topic_configs(
                    state.record.configs, ctx.settings.topic_default_layers(), keys, synonyms
                )
            elif r.resource_type == BROKER:
                _broker_scope(ctx, r.resource_name)
                entry["configs"] = ctx.settings.describe(keys, synonyms)
            elif r.resource_type == _GROUP:
                entry["configs"] = group_configs.describe(
                    _holder(ctx, r.resource_name, ()).configs(r.resource_name),
                    {**ctx.groups.consumer.config_defaults(), **ctx.groups.share.config_defaults()},
                    keys,
                    synonyms,
                )
            else:
                raise _Refused(
                    ErrorCode.invalid_request, f"Resource type {r.resource_type} unsupported"
                )
        except _Refused as e:
            entry.update(error_code=e.error, error_message=str(e))
        results.append(entry)
    return {"throttle_time": 0, "results": results}


def _broker_scope(ctx: HandlerContext, name: str) -> str:
    try:
        return ctx.settings.check_scope(name)
    except InvalidConfig as e:
        raise _Refused(ErrorCode.invalid_request, str(e)) from None


def _incremental_broker(current: dict[str, str], changes) -> dict[str, str | None]:
    """A dynamic broker layer after `changes`; None marks a key deleted (validated by
    the caller). Kafka's broker settings that take lists are not alterable here."""
    out: dict[str, str | None] = dict(current)
    for c in changes:
        if c.config_operation == SET:
            out[c.name] = c.value
        elif c.config_operation == DELETE:
            out[c.name] = None
        else:
            raise _Refused(ErrorCode.invalid_config, f"{c.name} is not a list")
    return out


async def _alter_broker(ctx: HandlerContext, r, incremental: bool, validate_only: bool) -> None:
    scope = _broker_scope(ctx, r.resource_name)
    settings = ctx.settings

    def edit(current: dict[str, str]) -> dict[str, str | None]:
        if incremental:
            return _incremental_broker(current, r.configs)
        return {c.name: c.value for c in r.configs}  # AlterConfigs: the whole layer

    try:
        if validate_only:
            settings.validated(edit(dict(ctx.logs.meta.broker_configs.get(scope, {}))))
        else:
            await settings.alter(scope, edit)
    except ReadOnlyConfig as e:
        raise _Refused(ErrorCode.invalid_request, str(e)) from None
    except InvalidConfig as e:
        raise _Refused(ErrorCode.invalid_config, str(e)) from None
    if not validate_only:
        log.info(
            "broker configs %s now %s",
            "default" if scope == "" else f"of broker {scope}",
            ctx.logs.meta.broker_configs.get(scope, {}),
        )


def _incremental(current: dict[str, str], changes) -> dict[str, str]:
    out = dict(current)
    for c in changes:
        if c.name not in TOPIC_CONFIGS:
            raise _Refused(ErrorCode.invalid_config, f"Unknown topic config name: {c.name}")
        op = c.config_operation
        if op == SET:
            out[c.name] = c.value
        elif op == DELETE:
            out.pop(c.name, None)
        elif op in (APPEND, SUBTRACT):
            if c.name != "cleanup.policy":
                raise _Refused(ErrorCode.invalid_config, f"{c.name} is not a list")
            items = [v for v in out.get(c.name, TOPIC_CONFIGS[c.name][0]).split(",") if v]
            for v in (c.value or "").split(","):
                if op == APPEND and v and v not in items:
                    items.append(v)
                elif op == SUBTRACT and v in items:
                    items.remove(v)
            out[c.name] = ",".join(items)
        else:
            raise _Refused(ErrorCode.invalid_request, f"Unknown config operation {op}")
    return out


async def _alter(ctx: HandlerContext, request: Request, incremental: bool) -> dict:
    b = request.body
    responses = []
    for r in b.resources:
        entry = {
            "error_code": ErrorCode.none,
            "error_message": None,
            "resource_type": r.resource_type,
            "resource_name": r.resource_name,
        }
        try:
            _check_access(ctx, request, r, Operation.ALTER_CONFIGS)
            if r.resource_type == BROKER:
                await _alter_broker(ctx, r, incremental, b.validate_only)
                responses.append(entry)
                continue
            if r.resource_type == _GROUP:
                await _alter_group(ctx, r, incremental, b.validate_only)
                responses.append(entry)
                continue
            if r.resource_type != TOPIC:
                raise _Refused(
                    ErrorCode.invalid_request, f"Resource type {r.resource_type} unsupported"
                )
            state = _topic(ctx, r.resource_name)
            if state.record.internal:
                raise _Refused(ErrorCode.invalid_request, f"{state.name} is internal")
            if incremental:
                wanted = _incremental(state.record.configs, r.configs)
            else:
                wanted = {c.name: c.value for c in r.configs}
            try:
                configs = validate_topic_configs(wanted)
            except InvalidConfig as e:
                raise _Refused(ErrorCode.invalid_config, str(e)) from None
            if not b.validate_only:
                await ctx.logs.set_topic_configs(state, configs)
        except _Refused as e:
            log.info("config change for %s refused: %s", r.resource_name, e)
            entry.update(error_code=e.error, error_message=str(e))
        responses.append(entry)
    return {"throttle_time": 0, "responses": responses}


def _holder(ctx: HandlerContext, group_id: str, names):
    """Who keeps a group's configs: the share coordinator for a share group (or a group
    not known yet whose first configs are share ones), else the consumer groups'."""
    if ctx.groups.share.group(group_id) is not None:
        return ctx.groups.share
    if ctx.groups.consumer.group(group_id) is None and any(n.startswith("share.") for n in names):
        return ctx.groups.share
    return ctx.groups.consumer


async def _alter_group(ctx: HandlerContext, r, incremental: bool, validate_only: bool) -> None:
    """A KIP-848 or share group's configs (broker.groups.group_configs), kept with its
    state."""
    consumer = _holder(ctx, r.resource_name, [c.name for c in r.configs])
    if ctx.groups.group(r.resource_name) is not None:
        raise _Refused(ErrorCode.invalid_request, f"Group {r.resource_name} is a classic group")
    current = consumer.configs(r.resource_name)
    wanted = dict(current) if incremental else {}
    for c in r.configs:
        op = c.config_operation if incremental else SET
        if op == SET and c.value is not None:
            wanted[c.name] = c.value
        elif op == DELETE or (op == SET and c.value is None):
            wanted.pop(c.name, None)
        else:
            raise _Refused(ErrorCode.invalid_config, f"{c.name} is not a list")
    try:
        valid = group_configs.validate(
            wanted,
            {**ctx.groups.consumer.config_defaults(), **ctx.groups.share.config_defaults()},
        )
    except group_configs.InvalidGroupConfig as e:
        raise _Refused(ErrorCode.invalid_config, str(e)) from None
    if not validate_only:
        await consumer.set_configs(r.resource_name, {**{k: None for k in current}, **valid})


async def handle_alter(ctx: HandlerContext, request: Request) -> dict:
    """AlterConfigs: the given set replaces the topic's explicit configs."""
    return await _alter(ctx, request, incremental=False)


async def handle_incremental_alter(ctx: HandlerContext, request: Request) -> dict:
    return await _alter(ctx, request, incremental=True)


async def handle_list_config_resources(ctx: HandlerContext, request: Request) -> dict:
    """ListConfigResources (`kafka-configs --list`): topics, brokers and groups; v0 (client
    metrics only) and client metrics ask for none Strata has."""
    wanted = set(getattr(request.body, "resource_types", ()))
    if request.header.api_version == 0:
        wanted = {_CLIENT_METRICS}
    elif not wanted:
        wanted = {TOPIC, BROKER, _GROUP}
    unknown = wanted - {TOPIC, BROKER, _GROUP, _CLIENT_METRICS}
    if unknown:
        return {
            "throttle_time": 0,
            "error_code": ErrorCode.unsupported_version,
            "config_resources": [],
        }
    if not cluster_allowed(ctx, request, Operation.DESCRIBE_CONFIGS):
        denied = ErrorCode.cluster_authorization_failed
        return {"throttle_time": 0, "error_code": denied, "config_resources": []}
    out = []
    if TOPIC in wanted:
        out += [{"resource_name": n, "resource_type": TOPIC} for n in sorted(ctx.logs.topics)]
    if BROKER in wanted:
        brokers = ctx.leadership.brokers()
        out += [{"resource_name": str(b.broker_id), "resource_type": BROKER} for b in brokers]
    if _GROUP in wanted:
        groups = {
            *ctx.groups.groups,
            *ctx.groups.consumer.known_ids(),
            *ctx.groups.share.known_ids(),
        }
        out += [{"resource_name": g, "resource_type": _GROUP} for g in sorted(groups)]
    return {"throttle_time": 0, "error_code": ErrorCode.none, "config_resources": out}
