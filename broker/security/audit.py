"""The audit trail: one structured line per authentication and per authorization
denial on its own logger (`strata.audit`), and counters in /metrics.

Each line is a JSON object, whatever --log-format says, so investigators can grep and
parse them: {"event": "authentication", "outcome": "success", "mechanism": ...,
"principal": ..., "client": "host:port", "listener": ...} or {"event":
"authorization", "outcome": "denied", "principal": ..., "client": ..., "api": ...,
"operation": ..., "resource_type": ..., "resource": ...}.
"""

from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("strata.audit")


class Audit:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.authentications = Counter(
            "strata_authentications",
            "Authentications, by mechanism and outcome",
            ["mechanism", "outcome"],
            registry=registry,
        )
        self.denials = Counter(
            "strata_authorization_denials",
            "Requests or resources refused by the authorizer, by operation and resource type",
            ["operation", "resource_type"],
            registry=registry,
        )

    def authenticated(
        self,
        *,
        ok: bool,
        mechanism: str,
        principal: str,
        client: str,
        listener: str,
        reason: str = "",
    ) -> None:
        outcome = "success" if ok else "failure"
        self.authentications.labels(mechanism, outcome).inc()
        event = {
            "event": "authentication",
            "outcome": outcome,
            "mechanism": mechanism,
            "principal": principal,
            "client": client,
            "listener": listener,
        }
        if reason:
            event["reason"] = reason
        log.info("%s", json.dumps(event))

    def denied(
        self,
        *,
        principal: str,
        client: str,
        api: str,
        operation: str,
        resource_type: str,
        resource: str,
    ) -> None:
        self.denials.labels(operation, resource_type).inc()
        event = {
            "event": "authorization",
            "outcome": "denied",
            "principal": principal,
            "client": client,
            "api": api,
            "operation": operation,
            "resource_type": resource_type,
            "resource": resource,
        }
        log.info("%s", json.dumps(event))
