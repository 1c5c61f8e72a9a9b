"""`GET /v1/topics/{topic}/records?key=&from=&to=&limit=&isolation=` on the HTTP listener.

A WSGI app like the rest of the listener (broker.metrics.http), run on its thread: the
request is parsed and checked there, the replay itself runs on the event loop (the
log's indexes change only there) through `run`, and the answer is JSON lines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote

from broker.metrics.counters import ReplayCounters
from broker.replay.core import DEFAULT_LIMIT, MAX_LIMIT, Query, Replayer, ReplayResult
from broker.replay.render import BadTime, json_lines, parse_time
from broker.replay.sources import LogSource, UnknownTopic

log = logging.getLogger(__name__)

PREFIX = "/v1/topics/"
REPLAY_TIMEOUT_S = 120.0

# runs a coroutine on the broker's event loop from the HTTP thread and waits for it
LoopRunner = Callable[[Callable[[], Awaitable[Any]], float], Any]


class BadRequest(ValueError):
    pass


def parse_query(params: dict[str, list[str]]) -> Query:
    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    key = one("key")
    if key is None:
        raise BadRequest("missing the key parameter: ?key=...")
    try:
        start, end = parse_time(one("from")), parse_time(one("to"))
    except BadTime as e:
        raise BadRequest(str(e)) from None
    raw_limit = one("limit")
    try:
        limit = DEFAULT_LIMIT if raw_limit is None else int(raw_limit)
    except ValueError:
        raise BadRequest(f"limit {raw_limit!r} is not a number") from None
    if limit <= 0 or limit > MAX_LIMIT:
        raise BadRequest(f"limit {limit} out of range: 1 to {MAX_LIMIT}")
    if start is not None and end is not None and start > end:
        raise BadRequest("from is after to")
    isolation = one("isolation") or "read_uncommitted"
    if isolation not in ("read_uncommitted", "read_committed"):
        raise BadRequest(f"isolation {isolation!r}: read_uncommitted or read_committed")
    return Query(key.encode(), start, end, limit, isolation == "read_committed")


class ReplayHttp:
    def __init__(self, source: LogSource, replayer: Replayer, counters: ReplayCounters) -> None:
        self.source = source
        self.replayer = replayer
        self.counters = counters

    async def replay(self, topic: str, q: Query) -> ReplayResult:
        partitions = await self.source.partitions(topic)
        return await self.replayer.replay(partitions, q)

    def app(self, environ: dict, start_response: Callable, run: LoopRunner) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        parts = path[len(PREFIX) :].split("/")
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            return self._error(start_response, "405 Method Not Allowed", "only GET")
        if not path.startswith(PREFIX) or len(parts) != 2 or parts[1] != "records" or not parts[0]:
            return self._error(
                start_response, "404 Not Found", "try /v1/topics/{topic}/records?key=..."
            )
        topic = unquote(parts[0])
        try:
            q = parse_query(parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        except BadRequest as e:
            self.counters.refused("bad_request")
            return self._error(start_response, "400 Bad Request", str(e))
        started = time.perf_counter()
        try:
            result: ReplayResult = run(lambda: self.replay(topic, q), REPLAY_TIMEOUT_S)
        except UnknownTopic:
            self.counters.refused("not_found")
            return self._error(start_response, "404 Not Found", f"unknown topic {topic!r}")
        except Exception as e:
            log.exception("replay of %s failed", topic)
            self.counters.refused("error")
            return self._error(start_response, "500 Internal Server Error", f"replay failed: {e!r}")
        s = result.stats
        self.counters.served(time.perf_counter() - started, s.gets, s.bytes, len(result.records))
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/x-ndjson"),
                ("X-Strata-Replay-Gets", str(s.gets)),
                ("X-Strata-Replay-Bytes", str(s.bytes)),
                ("X-Strata-Replay-Blocks", f"{s.blocks_read}/{s.blocks_total}"),
                ("X-Strata-Replay-Truncated", "true" if result.truncated else "false"),
            ],
        )
        return list(json_lines(result.records))

    @staticmethod
    def _error(start_response: Callable, status: str, message: str) -> list[bytes]:
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps({"error": message}).encode() + b"\n"]
