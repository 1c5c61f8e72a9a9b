"""The authorizer as handlers ask it: may this request's principal do this (a denial
is audited with the API's name), and on which listener did the request come."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.metrics.counters import api_name
from broker.security.acl import CLUSTER_NAME, Operation, ResourceType
from protocol.codec import Request

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

TOPIC = ResourceType.TOPIC
GROUP = ResourceType.GROUP
CLUSTER = ResourceType.CLUSTER
TXN_ID = ResourceType.TRANSACTIONAL_ID


def listener_of(request: Request) -> str | None:
    return request.session.listener.name if request.session is not None else None


def allowed(
    ctx: HandlerContext,
    request: Request,
    op: Operation,
    rtype: ResourceType,
    name: str,
    audit: bool = True,
) -> bool:
    return ctx.security.allowed(
        request.session, op, rtype, name, api_name(request.header.api_key), audit
    )


def cluster_allowed(
    ctx: HandlerContext, request: Request, op: Operation, audit: bool = True
) -> bool:
    return allowed(ctx, request, op, CLUSTER, CLUSTER_NAME, audit)


def operations(ctx: HandlerContext, request: Request, rtype: ResourceType, name: str) -> int:
    return ctx.security.operations(request.session, rtype, name)
