"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and broker reads).

Topic configs change live: handlers read them at each request, so a change applies
to the next produce or fetch, and it is persisted before it is acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import TYPE_CHECKING

from broker.topic_config import (
    SOURCE_STATIC_BROKER,
    TOPIC_CONFIGS,
    InvalidConfig,
    describe_topic_configs,
    validate_topic_configs,
)
from protocol.codec import Request
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from broker.app import Broker
    from broker.log_manager import TopicState

log = logging.getLogger(__name__)

TOPIC = 2
BROKER = 4

SET, DELETE, APPEND, SUBTRACT = range(4)


class _Refused(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error


def _topic(broker: Broker, name: str) -> TopicState:
    state = broker.logs.topics.get(name)
    if state is None:
        raise _Refused(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
    return state


def _broker_entries(broker: Broker, keys: set[str] | None) -> list[dict]:
    """The broker's settings, read-only: Strata's broker configuration is static."""
    out = []
    for f in fields(broker.config):
        name = f.name.replace("_", ".")
        if keys is not None and name not in keys:
            continue
        value = getattr(broker.config, f.name)
        out.append(
            {
                "name": name,
                "value": str(value).lower() if isinstance(value, bool) else str(value),
                "read_only": True,
                "config_source": SOURCE_STATIC_BROKER,
                "is_sensitive": False,
                "synonyms": [],
                "config_type": 2,
                "documentation": f.metadata.get("help"),
            }
        )
    return out


async def handle_describe(broker: Broker, request: Request) -> dict:
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
            if r.resource_type == TOPIC:
                state = _topic(broker, r.resource_name)
                entry["configs"] = describe_topic_configs(
                    state.record.configs, broker.config.topic_defaults(), keys, synonyms
                )
            elif r.resource_type == BROKER:
                if r.resource_name not in ("", str(broker.config.broker_id)):
                    raise _Refused(ErrorCode.invalid_request, f"No broker {r.resource_name} here")
                entry["configs"] = _broker_entries(broker, keys)
            else:
                raise _Refused(
                    ErrorCode.invalid_request, f"Resource type {r.resource_type} unsupported"
                )
        except _Refused as e:
            entry.update(error_code=e.error, error_message=str(e))
        results.append(entry)
    return {"throttle_time": 0, "results": results}


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


async def _alter(broker: Broker, request: Request, incremental: bool) -> dict:
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
            if r.resource_type == BROKER:
                raise _Refused(
                    ErrorCode.invalid_request,
                    "Broker settings are static: set them in the config file or flags",
                )
            if r.resource_type != TOPIC:
                raise _Refused(
                    ErrorCode.invalid_request, f"Resource type {r.resource_type} unsupported"
                )
            state = _topic(broker, r.resource_name)
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
                await broker.logs.set_topic_configs(state, configs)
        except _Refused as e:
            log.info("config change for %s refused: %s", r.resource_name, e)
            entry.update(error_code=e.error, error_message=str(e))
        responses.append(entry)
    return {"throttle_time": 0, "responses": responses}


async def handle_alter(broker: Broker, request: Request) -> dict:
    """AlterConfigs: the given set replaces the topic's explicit configs."""
    return await _alter(broker, request, incremental=False)


async def handle_incremental_alter(broker: Broker, request: Request) -> dict:
    return await _alter(broker, request, incremental=True)
