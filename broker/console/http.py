"""The console's WSGI app, on the HTTP listener's threads (broker.metrics.http).

Every page has a stable URL and the same view model as JSON under /api (for the CLI
and scripts): `/`, `/topics`, `/topics/{name}`, `/topics/{name}/messages`, `/groups`,
`/groups/{id}`, `/objects`, `/sessions?topic=&key=`, `/sessions/diff?topic=&a=&b=`.
Changes are POSTs: `/topics` (create), `/topics/{name}/config`, `/topics/{name}/delete`
(the form must repeat the topic's name).

The figures are gathered on the event loop (broker.console.source) through `run`; the
view models, record decoding and HTML are built here, off the loop.

Each request passes `Access.allows(principal, action, resource)` before its route runs:
today there is no login and every principal (None) may do everything; the security
work puts its check there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from broker.console import html, views
from broker.console.history import CounterHistory, LagHistory
from broker.console.source import ConsoleSource, NotFound, Refused
from broker.peers import PeerUnavailable
from broker.replay.core import Query
from broker.replay.render import to_dict
from broker.replay.sources import UnknownTopic
from protocol.record_codec import decode_records
from protocol.records import iter_headers

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOP_TIMEOUT_S = 30.0
REPLAY_TIMEOUT_S = 120.0
SESSION_LIMIT = 10_000
MAX_FORM_BYTES = 64 * 1024

LoopRunner = Callable[[Callable[[], Awaitable[Any]], float], Any]


class Access(Protocol):
    def allows(self, principal: str | None, action: str, resource: str) -> bool: ...


class OpenAccess:
    """No login yet: everyone may describe and change everything."""

    def allows(self, principal: str | None, action: str, resource: str) -> bool:
        return True


@dataclass
class ConsoleRequest:
    method: str
    path: str
    params: dict[str, list[str]]
    form: dict[str, list[str]] = field(default_factory=dict)
    api: bool = False  # under /api: answer JSON
    fragment: bool = False  # the live part only
    principal: str | None = None  # who asks; None until logins exist

    def one(self, name: str, source: dict[str, list[str]] | None = None) -> str:
        values = (self.params if source is None else source).get(name) or [""]
        return values[-1].strip()


@dataclass
class Answer:
    status: int
    data: dict
    page: html.Rendered | None = None
    location: str | None = None  # a redirect after a form's change


class HttpError(Exception):
    def __init__(self, status: int, message: str, page: html.Rendered | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.page = page


_STATUS = {
    200: "200 OK",
    201: "201 Created",
    303: "303 See Other",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    502: "502 Bad Gateway",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

_ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    # method, path, handler name, action (for Access)
    ("GET", re.compile(r"/"), "cluster", "describe"),
    ("GET", re.compile(r"/topics"), "topics", "describe"),
    ("POST", re.compile(r"/topics"), "create_topic", "create"),
    ("GET", re.compile(r"/topics/([^/]+)"), "topic", "describe"),
    ("GET", re.compile(r"/topics/([^/]+)/messages"), "messages", "read"),
    ("POST", re.compile(r"/topics/([^/]+)/config"), "alter_topic", "alter"),
    ("POST", re.compile(r"/topics/([^/]+)/delete"), "delete_topic", "delete"),
    ("GET", re.compile(r"/groups"), "groups", "describe"),
    ("GET", re.compile(r"/groups/([^/]+)"), "group", "describe"),
    ("GET", re.compile(r"/objects"), "objects", "describe"),
    ("GET", re.compile(r"/sessions"), "session", "read"),
    ("GET", re.compile(r"/sessions/diff"), "diff", "read"),
]


class ConsoleHttp:
    def __init__(
        self,
        source: ConsoleSource,
        *,
        store_name: str,
        ready: Callable[[], bool] = lambda: True,
        access: Access | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`ready()`: the broker has opened its log and serves clients (until then, and
        once it shuts down, pages answer 503)."""
        self.source = source
        self.ready = ready
        self.store_name = store_name
        self.access = access or OpenAccess()
        self.clock = clock
        self.lag = LagHistory()
        self.counters = CounterHistory()

    # --- WSGI ---------------------------------------------------------------------------

    def app(self, environ: dict, start_response: Callable, run: LoopRunner) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :], start_response)
        api = path == "/api" or path.startswith("/api/")
        if api:
            path = path[len("/api") :] or "/"
        if len(path) > 1:
            path = path.rstrip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        req = ConsoleRequest(
            method,
            path,
            parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            api=api,
            fragment=environ.get("HTTP_X_CONSOLE_FRAGMENT") == "1",
        )
        try:
            if not self.ready():
                raise HttpError(503, "the broker is starting or stopping; try again shortly")
            if method == "POST":
                req.form = self._read_form(environ)
            answer = self._dispatch(req, run)
        except HttpError as e:
            page = e.page or html.error_page(str(e))
            answer = Answer(e.status, {"error": str(e)}, page)
        except Exception as e:
            log.exception("console: %s %s failed", method, path)
            answer = Answer(500, {"error": f"{e!r}"}, html.error_page(f"failed: {e!r}"))
        return self._respond(req, answer, start_response)

    def _read_form(self, environ: dict) -> dict[str, list[str]]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_FORM_BYTES:
            raise HttpError(400, "form too large")
        body = environ["wsgi.input"].read(length) if length else b""
        if environ.get("CONTENT_TYPE", "").startswith("application/json"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                raise HttpError(400, "the body is not JSON") from None
            if not isinstance(data, dict):
                raise HttpError(400, "the body must be a JSON object")
            out: dict[str, list[str]] = {}
            for k, v in data.items():
                if isinstance(v, dict):  # configs as an object
                    v = ",".join(f"{a}={b}" for a, b in v.items())
                out[k] = [str(v)]
            return out
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def _dispatch(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        allowed_methods = set()
        for method, pattern, name, action in _ROUTES:
            m = pattern.fullmatch(req.path)
            if m is None:
                continue
            allowed_methods.add(method)
            if method != req.method:
                continue
            args = [unquote(g) for g in m.groups()]
            resource = args[0] if args else req.path
            if not self.access.allows(req.principal, action, resource):
                raise HttpError(403, f"not allowed to {action} {resource}")
            return getattr(self, "_" + name)(req, run, *args)
        if allowed_methods:
            raise HttpError(405, f"{req.method} is not accepted here")
        raise HttpError(
            404,
            f"no page at {req.path}",
            html.Rendered(
                "Not found (404)",
                f"<p>No page at <code>{html.e(req.path)}</code>. "
                'Try <a href="/">the cluster</a>.</p>',
            ),
        )

    def _respond(self, req: ConsoleRequest, a: Answer, start_response: Callable) -> list[bytes]:
        status = _STATUS.get(a.status, f"{a.status} Status")
        headers = [("Cache-Control", "no-store")]
        if a.location is not None and not req.api:
            status = _STATUS[303]
            headers.append(("Location", a.location))
            body = b""
        elif req.api or a.page is None:
            body = json.dumps(a.data, default=str).encode()
            headers.append(("Content-Type", "application/json"))
        else:
            text = a.page.live if req.fragment else html.document(a.page)
            body = text.encode()
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def _static(self, name: str, start_response: Callable) -> list[bytes]:
        kinds = {".js": "text/javascript", ".css": "text/css"}
        p = STATIC / name
        if "/" in name or p.suffix not in kinds or not p.is_file():
            start_response(_STATUS[404], [("Content-Type", "text/plain")])
            return [b"no such file\n"]
        data = p.read_bytes()
        start_response(
            _STATUS[200],
            [
                ("Content-Type", f"{kinds[p.suffix]}; charset=utf-8"),
                ("Cache-Control", "max-age=300"),
                ("Content-Length", str(len(data))),
            ],
        )
        return [data]

    # --- helpers ------------------------------------------------------------------------

    @staticmethod
    def _loop(run: LoopRunner, fn: Callable[[], Any], timeout: float = LOOP_TIMEOUT_S) -> Any:
        """`fn()` on the event loop: a coroutine's result, or a plain call's."""

        async def call() -> Any:
            out = fn()
            if hasattr(out, "__await__"):
                out = await out
            return out

        try:
            return run(call, timeout)
        except PeerUnavailable as e:
            raise HttpError(502, f"a broker did not answer: {e}") from None
        except TimeoutError as e:
            raise HttpError(502, f"the broker did not answer in time: {e}") from None

    @staticmethod
    def _unknown_topic(name: str) -> HttpError:
        return HttpError(
            404, f"unknown topic {name!r}", html.not_found_page("topic", name, "/topics")
        )

    # --- pages --------------------------------------------------------------------------

    def _cluster(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        s = self.source
        brokers, controller, leads, moving = self._loop(run, s.cluster)
        v = views.cluster_view(
            brokers,
            controller,
            leads,
            moving,
            "cluster" if s.cluster_mode else "embedded",
            s.broker_id,
        )
        return Answer(200, v, html.cluster_page(v))

    def _topics_view(self, req: ConsoleRequest, run: LoopRunner) -> dict:
        page = self._page(req)
        show_internal = req.one("internal") == "1"
        topics = self._loop(run, self.source.topics)
        v = views.topics_view(topics, {}, page, show_internal)
        shown = [t["name"] for t in v["topics"]]
        counts = dict(topics)

        async def messages() -> dict[str, int]:
            out = {}

            async def one(name: str) -> None:
                try:
                    got = await self.source.offsets(name, range(counts[name]))
                except NotFound:
                    return  # deleted meanwhile
                out[name] = sum(
                    o.end - o.start
                    for o in got.values()
                    if o.end is not None and o.start is not None
                )

            await asyncio.gather(*(one(name) for name in shown))
            return out

        return views.topics_view(topics, self._loop(run, messages), page, show_internal)

    def _topics(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        v = self._topics_view(req, run)
        return Answer(200, v, html.topics_page(v))

    @staticmethod
    def _page(req: ConsoleRequest) -> views.Page:
        try:
            return views.parse_page(req.params)
        except views.FormError as e:
            raise HttpError(400, str(e)) from None

    def _topic_view(self, req: ConsoleRequest, run: LoopRunner, name: str) -> dict:
        s = self.source
        page = self._page(req)

        async def gather() -> tuple:
            total = s.partitions_of(name)
            where = views.page_of(total, page)
            shown = list(range(where["start"], where["end"]))
            leaders = s.leaders(name, shown)
            local = s.local_bytes(name, shown)
            offsets = await s.offsets(name, shown)
            configs = await s.configs(name)
            return total, where, shown, leaders, local, offsets, configs

        try:
            total, where, shown, leaders, local, offsets, configs = self._loop(run, gather)
        except NotFound:
            raise self._unknown_topic(name) from None
        figures = []
        for i in shown:
            o = offsets.get(i)
            wal, bucket = local.get(i, (None, None))
            leader, epoch = leaders[i]
            figures.append(
                views.PartitionFigures(
                    i,
                    leader,
                    epoch,
                    o.start if o else None,
                    o.end if o else None,
                    wal,
                    bucket,
                    o.error if o else "no answer",
                )
            )
        return views.topic_view(name, total, figures, where, configs)

    def _topic(self, req: ConsoleRequest, run: LoopRunner, name: str) -> Answer:
        v = self._topic_view(req, run, name)
        return Answer(200, v, html.topic_page(v))

    def _create_topic(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        try:
            name, partitions, configs = views.parse_new_topic(req.form)
            self._loop(run, lambda: self.source.create_topic(name, partitions, configs))
        except (views.FormError, Refused) as e:
            field = e.field if isinstance(e, views.FormError) else "name"
            v = self._topics_view(req, run)
            raise HttpError(400, str(e), html.topics_page(v, str(e), field)) from None
        href = html.topic_href(name)
        return Answer(201, {"created": name, "partitions": partitions}, location=href)

    def _alter_topic(self, req: ConsoleRequest, run: LoopRunner, name: str) -> Answer:
        key = req.one("key", req.form)
        value = req.one("value", req.form) or None
        try:
            if not key:
                raise views.FormError("key", "name the config to change")
            self._loop(run, lambda: self.source.alter_config(name, key, value))
        except (views.FormError, Refused) as e:
            page = self._topic_error(req, run, name, str(e), "key")
            raise HttpError(400, str(e), page) from None
        return Answer(
            200, {"topic": name, "config": key, "value": value}, location=html.topic_href(name)
        )

    def _topic_error(
        self, req: ConsoleRequest, run: LoopRunner, name: str, message: str, field: str
    ) -> html.Rendered:
        v = self._topic_view(ConsoleRequest("GET", req.path, {}), run, name)
        return html.topic_page(v, message, field)

    def _delete_topic(self, req: ConsoleRequest, run: LoopRunner, name: str) -> Answer:
        if req.one("confirm", req.form) != name:
            message = f"type the topic's name ({name}) to confirm the deletion"
            raise HttpError(400, message, self._topic_error(req, run, name, message, "confirm"))
        try:
            self._loop(run, lambda: self.source.delete_topic(name))
        except NotFound:
            raise self._unknown_topic(name) from None
        except Refused as e:
            raise HttpError(
                400, str(e), self._topic_error(req, run, name, str(e), "confirm")
            ) from None
        return Answer(200, {"deleted": name}, location="/topics")

    def _messages(self, req: ConsoleRequest, run: LoopRunner, name: str) -> Answer:
        s = self.source
        try:
            partitions = self._loop(run, lambda: s.partitions_of(name))
        except NotFound:
            raise self._unknown_topic(name) from None
        form = {k: req.one(k) for k in ("partition", "offset", "time", "limit", "key")}
        try:
            b = views.parse_browse(req.params, partitions)
            messages, note = (
                self._by_key(run, name, b) if b.key is not None else self._browse(run, name, b)
            )
        except views.FormError as e:
            page = html.messages_page(name, partitions, form, None, None, str(e), e.field)
            raise HttpError(400, str(e), page) from None
        following = messages[-1]["offset"] + 1 if messages and b.key is None else None
        data = {
            "topic": name,
            "partitions": partitions,
            "messages": messages,
            "note": note,
            "next_offset": following,
        }
        page = html.messages_page(name, partitions, form, messages, note, None, None, following)
        return Answer(200, data, page)

    def _by_key(self, run: LoopRunner, name: str, b: views.Browse) -> tuple[list[dict], str]:
        assert b.key is not None
        q = Query(b.key.encode(), limit=b.limit)
        try:
            result = self._loop(run, lambda: self.source.replay(name, q), REPLAY_TIMEOUT_S)
        except UnknownTopic:
            raise self._unknown_topic(name) from None
        rows = [
            views.message_row(r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)
            for r in result.records
        ]
        st = result.stats
        note = (
            f"{len(rows)} records with key {b.key!r} (the replay key index: {st.blocks_read} of "
            f"{st.blocks_total} blocks read, {st.gets} GETs)"
            + (", more past the limit" if result.truncated else "")
        )
        return rows, note

    def _browse(self, run: LoopRunner, name: str, b: views.Browse) -> tuple[list[dict], str]:
        s = self.source
        offset = b.offset
        if b.time_ms is not None:
            offset = self._loop(run, lambda: s.offset_for_time(name, b.partition, b.time_ms))
            if offset is None:
                return (
                    [],
                    f"no record in partition {b.partition} at or after {views.iso(b.time_ms)}",
                )
        if offset is None:
            got = self._loop(run, lambda: s.offsets(name, [b.partition]))[b.partition]
            if got.end is None:
                raise HttpError(502, f"partition {b.partition}: {got.error}")
            offset = max(got.start or 0, got.end - b.limit)
        fetched = self._loop(run, lambda: s.fetch(name, b.partition, offset))
        if fetched.error == "offset_out_of_range":
            raise views.FormError(
                "offset",
                f"offset {offset} is outside partition {b.partition}'s log "
                f"({fetched.log_start} to {fetched.high_watermark})"
                if fetched.log_start >= 0
                else f"offset {offset} is outside partition {b.partition}'s log",
            )
        if fetched.error:
            raise HttpError(502, f"partition {b.partition}: {fetched.error}")
        rows = []
        view = memoryview(fetched.batches)
        for pos, h in iter_headers(view):
            if h.is_control or h.last_offset < offset:
                continue
            for r in decode_records(bytes(view[pos : pos + h.size])):
                if r.offset >= offset and len(rows) < b.limit:
                    rows.append(
                        views.message_row(
                            b.partition, r.offset, r.timestamp, r.key, r.value, r.headers
                        )
                    )
            if len(rows) >= b.limit:
                break
        note = (
            f"partition {b.partition} from offset {offset}: {len(rows)} records "
            f"(log {fetched.log_start} to {fetched.high_watermark})"
        )
        return rows, note

    def _groups(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        page = self._page(req)
        groups = self._loop(run, self.source.groups)
        v = views.groups_view(groups, page)
        return Answer(200, v, html.groups_page(v))

    def _group(self, req: ConsoleRequest, run: LoopRunner, group_id: str) -> Answer:
        try:
            g = self._loop(run, lambda: self.source.group(group_id))
        except NotFound:
            raise HttpError(
                404,
                f"unknown group {group_id!r}",
                html.not_found_page("group", group_id, "/groups"),
            ) from None
        lags = views.lag_rows(g["committed"], g["ends"])
        total = sum(r["lag"] or 0 for r in lags)
        history = self.lag.record(group_id, self.clock(), total)
        v = views.group_view(
            group_id,
            g["state"],
            g["protocol_type"],
            g["protocol"],
            g["coordinator"],
            g["members"],
            lags,
            history,
        )
        return Answer(200, v, html.group_page(v))

    def _objects(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        figures = self._loop(run, self.source.object_figures)
        series = self.counters.record(self.clock(), figures)
        rates = {k: views.rate(series[k]) for k in ("puts", "gets", "bytes_up", "bytes_down")}
        v = {**views.objects_view(figures, rates), "broker": self.source.broker_id}
        return Answer(200, v, html.objects_page(v, self.source.broker_id, self.store_name))

    def _events(self, run: LoopRunner, topic: str, key: str) -> list[dict]:
        q = Query(key.encode(), limit=SESSION_LIMIT)
        try:
            result = self._loop(run, lambda: self.source.replay(topic, q), REPLAY_TIMEOUT_S)
        except UnknownTopic:
            raise self._unknown_topic(topic) from None
        return [to_dict(r) for r in result.records]

    def _session(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        form = {k: req.one(k) for k in ("topic", "key")}
        if not form["topic"] and not form["key"]:
            return Answer(200, {}, html.session_page(None, form, None, None))
        for k in ("topic", "key"):
            if not form[k]:
                message = f"give the session's {k}"
                raise HttpError(400, message, html.session_page(None, form, message, k))
        v = views.timeline_view(
            form["topic"], form["key"], self._events(run, form["topic"], form["key"])
        )
        return Answer(200, v, html.session_page(v, form, None, None))

    def _diff(self, req: ConsoleRequest, run: LoopRunner) -> Answer:
        form = {k: req.one(k) for k in ("topic", "a", "b", "fields")}
        if not any(form.values()):
            return Answer(200, {}, html.diff_page(None, form, None, None))
        try:
            for k in ("topic", "a", "b"):
                if not form[k]:
                    raise views.FormError(
                        k, f"give {'the topic' if k == 'topic' else 'session ' + k}"
                    )
            fields = views.parse_fields(req.params)
        except views.FormError as e:
            raise HttpError(400, str(e), html.diff_page(None, form, str(e), e.field)) from None
        a = self._events(run, form["topic"], form["a"])
        b = self._events(run, form["topic"], form["b"])
        v = views.diff_view(form["topic"], form["a"], a, form["b"], b, fields)
        return Answer(200, v, html.diff_page(v, form, None, None))


__all__ = ["ConsoleHttp", "OpenAccess"]
