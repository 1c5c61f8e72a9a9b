"""The view models (broker.console.views) as HTML. Pure functions of dicts.

A page has a live part, which the script refreshes in place (the same URL asked with
`X-Console-Fragment: 1` answers that part alone), and a still part: the forms, which a
refresh must not clear while someone types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

NAV = (
    ("/", "Cluster"),
    ("/topics", "Topics"),
    ("/groups", "Groups"),
    ("/objects", "Objects"),
    ("/sessions", "Sessions"),
)


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    live: str  # refreshed in place every `refresh_ms` (0: never)
    still: str = ""
    refresh_ms: int = 0
    section: str = "/"


def e(x: object) -> str:
    return escape("" if x is None else str(x))


def num(x: int | float | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.3f}".rstrip("0").rstrip(".")
    return f"{x:,}"


def size(x: int | float | None) -> str:
    if x is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:,.0f} {unit}" if unit == "B" else f"{x:,.1f} {unit}"
        x /= 1024
    return str(x)


def document(r: Rendered) -> str:
    nav = "".join(
        f'<a href="{href}"{" class=on" if r.section == href else ""}>{e(label)}</a>'
        for href, label in NAV
    )
    refresh = f' data-refresh="{r.refresh_ms}"' if r.refresh_ms else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(r.title)} · Strata</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel=icon href="data:,"><link rel=stylesheet href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        f'<header><a class=brand href="/">Strata</a><nav>{nav}</nav>'
        "<span id=status class=status></span></header>"
        f"<main><h1>{e(r.title)}</h1>"
        f"<div id=live{refresh}>{r.live}</div>{r.still}</main></body></html>"
    )


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """`rows` hold HTML already escaped."""
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = (
        "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        or f"<tr><td colspan={len(head)} class=empty>none</td></tr>"
    )
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def pager(where: dict, base: str, params: dict[str, str] | None = None) -> str:
    if where["pages"] <= 1:
        return f"<p class=pager>{num(where['total'])} in all</p>"
    links = []

    def link(n: int, label: str) -> str:
        q = urlencode({**(params or {}), "page": n, "per": where["per"]})
        return f'<a href="{e(base)}?{e(q)}">{e(label)}</a>'

    if where["page"] > 1:
        links.append(link(where["page"] - 1, "← previous"))
    links.append(
        f"<span>page {where['page']} of {where['pages']}, "
        f"{num(where['start'] + 1)}–{num(where['end'])} of {num(where['total'])}</span>"
    )
    if where["page"] < where["pages"]:
        links.append(link(where["page"] + 1, "next →"))
    return f"<p class=pager>{' '.join(links)}</p>"


def figures(items: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<div class=figure><span class=label>{e(k)}</span>"
        f'<span class=value data-figure="{e(k)}">{v}</span></div>'
        for k, v in items
    )
    return f"<div class=figures>{cells}</div>"


def form_error(message: str | None, field: str | None = None) -> str:
    if not message:
        return ""
    return f'<p class=form-error role=alert data-field="{e(field)}">{e(message)}</p>'


def topic_href(name: str) -> str:
    return "/topics/" + quote(name, safe="")


def group_href(group_id: str) -> str:
    return "/groups/" + quote(group_id, safe="")


# --- pages ------------------------------------------------------------------------------


def cluster_page(v: dict) -> Rendered:
    b = v["balance"]
    live = figures(
        [
            ("mode", e(v["mode"])),
            ("brokers", num(len(v["brokers"]))),
            ("controller", num(v["controller"])),
            ("topics", num(v["topics"])),
            ("partitions", num(v["partitions"])),
            ("leader skew", f"{b['skew']:.2f}× (most {b['most']}, fair {b['fair_share']})"),
            ("partitions moving", num(len(v["moving"]))),
            ("racks", e(", ".join(v["racks"]) or "–")),
        ]
    )
    live += "<h2>Brokers</h2>" + table(
        ["id", "address", "rack", "role", "leaders", "internal leaders"],
        [
            [
                num(x["id"]) + (" (this one)" if x["id"] == v["this_broker"] else ""),
                e(x["address"]),
                e(x["rack"] or "–"),
                "controller" if x["controller"] else "broker",
                num(x["leaders"]),
                num(x["internal_leaders"]),
            ]
            for x in v["brokers"]
        ],
        "brokers",
    )
    live += "<h2>Partitions moving</h2>" + table(
        ["topic", "partition", "from", "to"],
        [
            [
                f'<a href="{e(topic_href(m["topic"]))}">{e(m["topic"])}</a>',
                num(m["partition"]),
                num(m["from"]),
                num(m["to"]),
            ]
            for m in v["moving"]
        ],
    )
    return Rendered("Cluster", live, refresh_ms=3000, section="/")


def topics_page(v: dict, error: str | None = None, field: str | None = None) -> Rendered:
    rows = [
        [
            f'<a href="{e(topic_href(t["name"]))}">{e(t["name"])}</a>',
            num(t["partitions"]),
            num(t["messages"]),
        ]
        for t in v["topics"]
    ]
    live = table(["topic", "partitions", "messages"], rows, "topics") + pager(
        v["pagination"], "/topics", {"internal": "1"} if v["internal_shown"] else None
    )
    toggle = (
        '<p><a href="/topics">hide internal topics</a></p>'
        if v["internal_shown"]
        else '<p><a href="/topics?internal=1">show internal topics</a></p>'
    )
    still = (
        toggle
        + "<h2>Create a topic</h2>"
        + form_error(error, field)
        + '<form method=post action="/topics" class=create data-confirm="Create this topic?">'
        '<label>name <input name=name required pattern="[A-Za-z0-9._\\-]+"></label>'
        "<label>partitions <input name=partitions type=number min=1 value=1></label>"
        '<label>configs <input name=configs placeholder="retention.ms=86400000"></label>'
        "<button type=submit>Create</button></form>"
    )
    return Rendered("Topics", live, still, refresh_ms=5000, section="/topics")


def topic_page(v: dict, error: str | None = None, field: str | None = None) -> Rendered:
    name = v["name"]
    href = topic_href(name)
    defaults = [c for c in v["configs"] if not c["overridden"]]
    rows = [
        [
            num(p["partition"]),
            num(p["leader"]),
            num(p["epoch"]),
            f'<span data-cell="start-{p["partition"]}">{num(p["log_start"])}</span>',
            f'<span data-cell="end-{p["partition"]}">{num(p["log_end"])}</span>',
            num(p["messages"]),
            size(p["wal_bytes"]) if p["wal_bytes"] is not None else f"on broker {p['leader']}",
            size(p["bucket_bytes"]) if p["bucket_bytes"] is not None else "–",
            e(p["error"] or ""),
        ]
        for p in v["partitions"]
    ]
    live = (
        f'<p><a href="{e(href)}/messages">browse messages</a> · '
        f'<a href="/api{e(href)}">JSON</a></p>'
        + table(
            [
                "partition",
                "leader",
                "epoch",
                "log start",
                "log end",
                "messages",
                "WAL",
                "bucket",
                "",
            ],
            rows,
            "partitions",
        )
        + pager(v["pagination"], href)
    )
    still = (
        form_error(error, field)
        + "<h2>Configs set on the topic</h2>"
        + table(
            ["name", "value"],
            [[e(c["name"]), e(c["value"])] for c in v["configs"] if c["overridden"]],
            "configs",
        )
        + f"<details><summary>{len(defaults)} defaults</summary>"
        + table(["name", "value"], [[e(c["name"]), e(c["value"])] for c in defaults])
        + "</details>"
        + "<h2>Change</h2>"
        + f'<form method=post action="{e(href)}/config" class=alter '
        'data-confirm="Change this config?">'
        "<label>config <input name=key required></label>"
        '<label>value <input name=value placeholder="empty: back to the default"></label>'
        "<button type=submit>Set</button></form>"
        f'<form method=post action="{e(href)}/delete" class=delete '
        'data-confirm="Delete this topic and all its records?">'
        "<label>type the topic name to delete it <input name=confirm required></label>"
        "<button type=submit class=danger>Delete topic</button></form>"
    )
    return Rendered(f"Topic {name}", live, still, refresh_ms=3000, section="/topics")


def _value_html(m: dict) -> str:
    v = m["value"]
    if m["value_kind"] == "json":
        return f"<pre class=json>{e(json.dumps(v, indent=2, sort_keys=True))}</pre>"
    return f"<code>{e(v)}</code>"


def messages_page(
    name: str,
    partitions: int,
    form: dict[str, str],
    messages: list[dict] | None,
    note: str | None,
    error: str | None,
    field: str | None,
    next_offset: int | None = None,
) -> Rendered:
    """`next_offset`: where the next page of a partition's records starts."""
    href = topic_href(name)

    def val(k: str) -> str:
        return e(form.get(k, ""))

    options = "".join(
        f"<option value={i}{' selected' if form.get('partition') == str(i) else ''}>{i}</option>"
        for i in range(min(partitions, 10_000))
    )
    still = (
        form_error(error, field) + f'<form method=get action="{e(href)}/messages" class=browse>'
        f"<label>partition <select name=partition>{options}</select></label>"
        f'<label>offset <input name=offset value="{val("offset")}" placeholder="latest"></label>'
        f'<label>or time <input name=time value="{val("time")}" '
        'placeholder="2026-01-15T14:00:00Z or epoch ms"></label>'
        "<label>limit <input name=limit type=number min=1 max=200 "
        f'value="{val("limit") or 20}"></label>'
        "<button type=submit>Browse</button></form>"
        f'<form method=get action="{e(href)}/messages" class=search>'
        f'<label>key <input name=key value="{val("key")}" placeholder="session id"></label>'
        "<button type=submit>Search by key</button></form>"
    )
    live = f'<p><a href="{e(href)}">← topic {e(name)}</a></p>'
    if note:
        live += f"<p class=note>{e(note)}</p>"
    if messages is not None:
        live += table(
            ["partition", "offset", "time", "key", "value", "headers"],
            [
                [
                    num(m["partition"]),
                    num(m["offset"]),
                    e(m["time"]),
                    _key_html(name, m["key"]),
                    _value_html(m),
                    e(json.dumps(m["headers"])) if m["headers"] else "",
                ]
                for m in messages
            ],
            "messages",
        )
    if next_offset is not None and messages:
        q = urlencode(
            {
                "partition": form.get("partition") or "0",
                "offset": next_offset,
                "limit": form.get("limit") or 20,
            }
        )
        live += f'<p class=pager><a href="{e(href)}/messages?{e(q)}">next →</a></p>'
    return Rendered(f"Messages of {name}", live, still, section="/topics")


def _key_html(topic: str, key: str | None) -> str:
    """A key links to its session's timeline."""
    if key is None:
        return "<code>null</code>"
    q = urlencode({"topic": topic, "key": key})
    return f'<a href="/sessions?{e(q)}"><code>{e(key)}</code></a>'


def groups_page(v: dict) -> Rendered:
    rows = [
        [
            f'<a href="{e(group_href(g["group_id"]))}">{e(g["group_id"])}</a>',
            e(g["state"]),
            e(g["protocol_type"] or "–"),
            num(g["coordinator"]),
        ]
        for g in v["groups"]
    ]
    live = table(["group", "state", "protocol", "coordinator"], rows, "groups") + pager(
        v["pagination"], "/groups"
    )
    return Rendered("Consumer groups", live, refresh_ms=3000, section="/groups")


def group_page(v: dict) -> Rendered:
    c = v["chart"]
    chart = (
        f'<svg class=chart width="{c["width"]}" height="{c["height"]}" '
        f'viewBox="0 0 {c["width"]} {c["height"]}" role=img aria-label="lag over time">'
        f'<polyline fill=none stroke="#2a6fdb" stroke-width=2 points="{c["points"]}"/></svg>'
        f"<p class=note>total lag over the last {c['span_s']} s (max {num(c['max'])}), "
        "sampled while this page is open</p>"
    )
    live = figures(
        [
            ("state", e(v["state"])),
            ("members", num(len(v["members"]))),
            ("coordinator", num(v["coordinator"])),
            ("total lag", num(v["total_lag"])),
            ("assignor", e(v["protocol"] or "–")),
        ]
    )
    live += "<h2>Lag</h2>" + chart
    live += table(
        ["topic", "partition", "committed", "end", "lag", "member"],
        [
            [
                f'<a href="{e(topic_href(r["topic"]))}">{e(r["topic"])}</a>',
                num(r["partition"]),
                num(r["committed"]),
                num(r["end"]),
                f'<span data-lag="{e(r["topic"])}-{r["partition"]}">{num(r["lag"])}</span>',
                f"<code>{e(r['member'] or '–')}</code>",
            ]
            for r in v["offsets"]
        ],
        "offsets",
    )
    live += "<h2>Members</h2>" + table(
        ["member", "client", "host", "assignment"],
        [
            [
                f"<code>{e(m['member_id'])}</code>",
                e(m["client_id"]),
                e(m["host"]),
                e(", ".join(f"{t} {p}" for t, p in m["assignment"].items()) or "–"),
            ]
            for m in v["members"]
        ],
        "members",
    )
    return Rendered(f"Group {v['group_id']}", live, refresh_ms=2000, section="/groups")


_OBJECT_FIGURES = (
    ("objects", "objects", num),
    ("object_bytes", "bytes in objects", size),
    ("uploads", "uploads", num),
    ("upload_failures", "upload failures", num),
    ("upload_backlog_bytes", "upload backlog", size),
    ("compactions", "compactions", num),
    ("objects_deleted", "objects deleted", num),
    ("puts", "PUTs", num),
    ("gets", "GETs", num),
    ("lists", "LISTs", num),
    ("deletes", "DELETEs", num),
    ("errors", "request errors", num),
    ("bytes_up", "bytes up", size),
    ("bytes_down", "bytes down", size),
    ("wal_retained_bytes", "WAL on disk", size),
    ("block_cache_bytes", "block cache", size),
    ("tail_cache_bytes", "tail cache", size),
)


def objects_page(v: dict, broker_id: int, store: str) -> Rendered:
    f, r = v["figures"], v["rates"]

    def per_s(k: str) -> str:
        x = r.get(k)
        return "–" if x is None else f"{x:,.2f}/s"

    live = f"<p class=note>broker {broker_id}, store {e(store)}</p>"
    live += figures(
        [
            ("PUT rate", per_s("puts")),
            ("GET rate", per_s("gets")),
            (
                "upload rate",
                per_s("bytes_up") if r.get("bytes_up") is None else size(r["bytes_up"]) + "/s",
            ),
        ]
    )
    live += figures([(label, fmt(f[k])) for k, label, fmt in _OBJECT_FIGURES if k in f])
    return Rendered("Object store", live, refresh_ms=2000, section="/objects")


def _fields(x: object) -> str:
    if isinstance(x, dict):
        return " ".join(f"<span class=kv>{e(k)}={e(json.dumps(v))}</span>" for k, v in x.items())
    return e(json.dumps(x))


def _session_form(form: dict[str, str]) -> str:
    def val(k: str) -> str:
        return e(form.get(k, ""))

    return (
        '<form method=get action="/sessions" class=session>'
        f'<label>topic <input name=topic value="{val("topic")}" required></label>'
        f'<label>session key <input name=key value="{val("key")}" required></label>'
        "<button type=submit>Timeline</button></form>"
        '<form method=get action="/sessions/diff" class=diff>'
        f'<label>topic <input name=topic value="{val("topic")}" required></label>'
        f'<label>session a <input name=a value="{val("a")}" required></label>'
        f'<label>session b <input name=b value="{val("b")}" required></label>'
        f'<label>fields <input name=fields value="{val("fields")}" '
        'placeholder="event_type,tool,action"></label>'
        "<button type=submit>Compare</button></form>"
    )


def _summary(s: dict) -> str:
    items = [("steps", num(s["steps"])), ("duration", f"{s['duration_s']:.3f} s")]
    items += [
        (k, num(round(x, 6) if isinstance(x, float) else x)) for k, x in sorted(s["totals"].items())
    ]
    return figures(items)


def session_page(
    v: dict | None, form: dict[str, str], error: str | None, field: str | None
) -> Rendered:
    still = form_error(error, field) + _session_form(form)
    if v is None:
        return Rendered("Sessions", "", still, section="/sessions")
    live = f"<p class=note>session <code>{e(v['key'])}</code> in {e(v['topic'])}"
    live += f", from {e(v['start'])}</p>" if v["start"] else ": no records</p>"
    live += _summary(v["summary"])
    live += table(
        ["step", "time", "type", "duration", "cost", "tokens", "fields", "at"],
        [
            [
                num(x["step"]),
                f"+{x['rel_s']:.3f} s",
                f"<b>{e(x['type'])}</b>",
                "–" if x["duration_s"] is None else f"{x['duration_s']:.3f} s",
                num(x["cost"]),
                num(x["tokens"]),
                _fields(x["fields"]),
                f"p{x['partition']}@{x['offset']}",
            ]
            for x in v["events"]
        ],
        "timeline",
    )
    return Rendered(f"Session {v['key']}", live, still, section="/sessions")


def _side(x: dict | None) -> str:
    if x is None:
        return "<span class=empty>(no such step)</span>"
    return (
        f"<b>{e(x['type'])}</b> <small>+{x['rel_s']:.3f} s</small> "
        f"<span class=fields>{_fields(x['fields'])}</span>"
    )


def diff_page(
    v: dict | None, form: dict[str, str], error: str | None, field: str | None
) -> Rendered:
    still = form_error(error, field) + _session_form(form)
    if v is None:
        return Rendered("Compare sessions", "", still, section="/sessions")
    d = v["divergence"]
    live = (
        f'<p class=verdict data-divergence="{"" if d is None else d}">'
        + (
            f"first divergence at step <b>{d}</b> (on {e(', '.join(v['fields']))})"
            if d is not None
            else f"no divergence on {e(', '.join(v['fields']))}"
        )
        + "</p>"
    )
    live += (
        "<div class=sides>" + _summary(v["summary"]["a"]) + _summary(v["summary"]["b"]) + "</div>"
    )
    head = ["step", f"a: {v['a']}", f"b: {v['b']}"]
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = ""
    for r in v["rows"]:
        cls = "diverges" if r["divergence"] else ("after" if r["after"] else "same")
        body += (
            f'<tr class={cls} data-step="{r["step"]}"><td>{r["step"]}</td>'
            f"<td>{_side(r['a'])}</td><td>{_side(r['b'])}</td></tr>"
        )
    live += f"<table class=diff><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    return Rendered(f"Compare {v['a']} and {v['b']}", live, still, section="/sessions")


def not_found_page(what: str, name: str, back: str) -> Rendered:
    live = (
        f"<div class=notfound><p>There is no {e(what)} named <code>{e(name)}</code>.</p>"
        f'<p><a href="{e(back)}">See every {e(what)}</a></p></div>'
    )
    return Rendered("Not found (404)", live, section=back)


def error_page(message: str) -> Rendered:
    return Rendered("Error", f"<p class=form-error>{e(message)}</p>")
