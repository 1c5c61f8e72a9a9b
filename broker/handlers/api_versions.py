"""ApiVersions: what this broker speaks, so clients can pick versions (KIP-35, KIP-511)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.codec import Request
from protocol.errors import ErrorCode
from protocol.versions import SUPPORTED

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext


def api_versions_body(error: ErrorCode = ErrorCode.none) -> dict:
    return {
        "error_code": error,
        "api_keys": [
            {"api_key": key, "min_version": lo, "max_version": hi}
            for key, (lo, hi) in sorted(SUPPORTED.items())
        ],
        "throttle_time": 0,
        "supported_features": [],
        "finalized_features": [],
    }


_BODY = api_versions_body()


async def handle(ctx: HandlerContext, request: Request) -> dict:
    return _BODY
