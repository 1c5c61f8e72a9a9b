"""CreateTopics and DeleteTopics."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from broker.handlers.auth import TOPIC, allowed, cluster_allowed
from broker.naming import topic_name_error
from broker.security.acl import Operation
from broker.topic_config import InvalidConfig, describe_topic_configs, validate_topic_configs
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)

_ZERO_UUID = uuid.UUID(int=0)


class _Refused(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def _config_entries(ctx: HandlerContext, configs: dict[str, str]) -> list[dict]:
    return describe_topic_configs(configs, ctx.settings.topic_default_layers())


def _check(ctx: HandlerContext, t, seen: set[str]) -> tuple[int, int, dict[str, str]]:
    if t.name in seen:
        raise _Refused(
            ErrorCode.invalid_request, f"Topic {t.name} appears more than once in the request"
        )
    problem = topic_name_error(t.name)
    if problem:
        raise _Refused(ErrorCode.invalid_topic_exception, problem)
    if t.name in ctx.logs.topics:
        raise _Refused(ErrorCode.topic_already_exists, f"Topic '{t.name}' already exists.")
    partitions = t.num_partitions
    if t.assignments:
        if partitions != -1 or t.replication_factor != -1:
            raise _Refused(
                ErrorCode.invalid_request,
                "Both numPartitions or replicationFactor and replicasAssignments were set.",
            )
        partitions = len(t.assignments)
    elif partitions == -1:
        partitions = ctx.settings.num_partitions
    if partitions <= 0:
        raise _Refused(ErrorCode.invalid_partitions, "Number of partitions must be larger than 0.")
    replication = t.replication_factor
    if replication == 0 or replication < -1:
        raise _Refused(
            ErrorCode.invalid_replication_factor, "Replication factor must be larger than 0."
        )
    try:
        configs = validate_topic_configs({c.name: c.value for c in t.configs})
    except InvalidConfig as e:
        raise _Refused(ErrorCode.invalid_config, str(e)) from None
    return partitions, max(replication, 1), configs


async def handle_create(ctx: HandlerContext, request: Request) -> dict:
    body = request.body
    results = []
    seen: set[str] = set()
    may_create = cluster_allowed(ctx, request, Operation.CREATE, audit=False)
    for t in body.topics:
        try:
            if not (may_create or allowed(ctx, request, Operation.CREATE, TOPIC, t.name)):
                raise _Refused(ErrorCode.topic_authorization_failed, "Authorization failed.")
            partitions, replication, configs = _check(ctx, t, seen)
            topic_id = _ZERO_UUID
            if not body.validate_only:
                try:
                    state = await ctx.logs.create_topic(t.name, partitions, configs)
                except FileExistsError:
                    raise _Refused(
                        ErrorCode.topic_already_exists, f"Topic '{t.name}' already exists."
                    ) from None
                topic_id = state.record.uuid
            results.append(
                {
                    "name": t.name,
                    "topic_id": topic_id,
                    "error_code": ErrorCode.none,
                    "error_message": None,
                    "num_partitions": partitions,
                    "replication_factor": replication,
                    "configs": _config_entries(ctx, configs),
                }
            )
        except _Refused as e:
            log.info("CreateTopics %s refused: %s", t.name, e.message)
            results.append(
                {
                    "name": t.name,
                    "topic_id": _ZERO_UUID,
                    "error_code": e.error,
                    "error_message": e.message,
                    "num_partitions": -1,
                    "replication_factor": -1,
                    "configs": [],
                }
            )
        seen.add(t.name)
    return {"throttle_time": 0, "topics": results}


async def handle_delete(ctx: HandlerContext, request: Request) -> dict:
    body = request.body
    logs = ctx.logs
    if request.header.api_version >= 6:
        wanted = [(t.name, t.topic_id) for t in body.topics]
    else:
        wanted = [(name, None) for name in body.topic_names]
    responses = []
    for name, topic_id in wanted:
        error, message = ErrorCode.none, None
        if name is None and topic_id is not None:
            state = logs.topics_by_id.get(topic_id.bytes)
            if state is None:
                error, message = ErrorCode.unknown_topic_id, "Topic id not found"
            else:
                name = state.name
        elif not allowed(ctx, request, Operation.DELETE, TOPIC, name):
            error, message = ErrorCode.topic_authorization_failed, "Authorization failed."
        elif name not in logs.topics:
            error, message = (
                ErrorCode.unknown_topic_or_partition,
                "This server does not host this topic",
            )
        if error == ErrorCode.none and not allowed(ctx, request, Operation.DELETE, TOPIC, name):
            error, message = ErrorCode.topic_authorization_failed, "Authorization failed."
        if error == ErrorCode.none and logs.topics[name].record.internal:
            error, message = ErrorCode.invalid_topic_exception, f"{name} is internal"
        if error == ErrorCode.none:
            topic_id = logs.topics[name].record.uuid
            try:
                await logs.delete_topic(name)
                await ctx.offsets.forget_topic(name)
            except KeyError:
                error, message = (
                    ErrorCode.unknown_topic_or_partition,
                    "Topic was deleted concurrently",
                )
        responses.append(
            {
                "name": name,
                "topic_id": topic_id or _ZERO_UUID,
                "error_code": error,
                "error_message": message,
            }
        )
    return {"throttle_time": 0, "responses": responses}
