"""The links API on the HTTP listener (`--http-listen`), beside the replay API:

    GET    /v1/links                      the links, in short
    POST   /v1/links                      {"name", "source_bootstrap", "topics", "groups"?,
                                           "source_security"?: {"security.protocol": ...},
                                           "on_source_gap"?: "stop" | "continue"}
    GET    /v1/links/{name}               state, topics, lag per partition, groups, errors
    POST   /v1/links/{name}/pause         stop fetching (mirror topics stay read-only)
    POST   /v1/links/{name}/resume        {"accept_gaps"?: true}: stopped gaps go on
    POST   /v1/links/{name}/promote       {"topic", "timeout_s"?}: the cutover of one topic
    DELETE /v1/links/{name}

A WSGI app run on the listener's thread; the operations run on the event loop.
Answers are JSON; errors are {"error": message} with a 4xx or 5xx status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from broker.links.model import LinkError
from broker.links.service import LinkService, UnknownLink
from broker.replay.http import LoopRunner

log = logging.getLogger(__name__)

PREFIX = "/v1/links"
CALL_TIMEOUT_S = 30.0
MAX_BODY = 64 * 1024
DEFAULT_PROMOTE_TIMEOUT_S = 60.0


class LinksHttp:
    def __init__(self, service: LinkService) -> None:
        self.service = service

    def app(self, environ: dict, start_response: Callable, run: LoopRunner) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        parts = [unquote(p) for p in path[len(PREFIX) :].strip("/").split("/") if p]
        try:
            body = _body(environ) if method in ("POST", "PUT") else {}
            status, answer = self._route(method, parts, body, run)
        except UnknownLink as e:
            status, answer = "404 Not Found", {"error": f"no link named {e.args[0]!r}"}
        except (LinkError, _BadRequest) as e:
            status, answer = "400 Bad Request", {"error": str(e)}
        except TimeoutError as e:
            status, answer = "504 Gateway Timeout", {"error": str(e)}
        except Exception as e:
            log.exception("links API: %s %s failed", method, path)
            status, answer = "500 Internal Server Error", {"error": repr(e)}
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(answer, indent=1).encode() + b"\n"]

    def _route(self, method: str, parts: list[str], body: dict, run: LoopRunner) -> tuple[str, Any]:
        s = self.service
        if not parts:
            if method == "GET":
                return "200 OK", {"links": run(_now(s.list), CALL_TIMEOUT_S)}
            if method == "POST":
                name = _field(body, "name")
                bootstrap = _field(body, "source_bootstrap")
                topics = _field(body, "topics")
                groups = str(body.get("groups") or ".*")
                sec = body.get("source_security") or {}
                if not isinstance(sec, dict):
                    raise _BadRequest("source_security must be an object of strings")
                on_gap = str(body.get("on_source_gap") or "stop")
                created = run(
                    lambda: s.create(name, bootstrap, topics, groups, sec, on_gap),
                    CALL_TIMEOUT_S,
                )
                return "201 Created", created
            return _not_allowed()
        name = parts[0]
        if len(parts) == 1:
            if method == "GET":
                return "200 OK", run(_now(lambda: s.describe(name)), CALL_TIMEOUT_S)
            if method == "DELETE":
                run(lambda: s.delete(name), CALL_TIMEOUT_S)
                return "200 OK", {"deleted": name}
            return _not_allowed()
        if len(parts) == 2 and method == "POST":
            action = parts[1]
            if action in ("pause", "resume"):
                state = "paused" if action == "pause" else "active"
                accept = action == "resume" and body.get("accept_gaps") is True
                return "200 OK", run(lambda: s.set_state(name, state, accept), CALL_TIMEOUT_S)
            if action == "promote":
                topic = _field(body, "topic")
                try:
                    timeout = float(body.get("timeout_s", DEFAULT_PROMOTE_TIMEOUT_S))
                except (TypeError, ValueError):
                    raise _BadRequest("timeout_s must be a number") from None
                answer = run(lambda: s.promote(name, topic, timeout), timeout + CALL_TIMEOUT_S)
                done = answer.get("state") == "promoted"
                return ("200 OK" if done else "202 Accepted"), {"topic": topic, **answer}
        return "404 Not Found", {"error": f"try {PREFIX}, {PREFIX}/NAME or {PREFIX}/NAME/ACTION"}


class _BadRequest(ValueError):
    pass


def _not_allowed() -> tuple[str, Any]:
    return "405 Method Not Allowed", {"error": "method not allowed here"}


def _now(fn: Callable[[], Any]) -> Callable[[], Any]:
    """A coroutine factory for a plain function that must run on the event loop."""

    async def call() -> Any:
        return fn()

    return call


def _field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"missing {name!r}")
    return value


def _body(environ: dict) -> dict:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _BadRequest("bad Content-Length") from None
    if length > MAX_BODY:
        raise _BadRequest("request body too large")
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body
