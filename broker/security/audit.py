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
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("strata.audit")


class AuditSink(Protocol):
    """Where audit events go besides the log (broker.security.audit_topic)."""

    def submit(self, event: dict) -> None: ...


class Audit:
    def __init__(self, registry: CollectorRegistry, sink: AuditSink | None = None) -> None:
        self.sink = sink
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
        self._emit(event)

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
        self._emit(event)

    def _emit(self, event: dict) -> None:
        log.info("%s", json.dumps(event))
        if self.sink is not None:
            self.sink.submit(event)
