"""View models of the console's pages: plain dicts built from plain figures.

No IO here: broker.console.source gathers the figures, broker.console.html renders
what these functions return, and the JSON endpoints send it as it is.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.replay.render import (
    MAIN_FIELDS,
    BadTime,
    bytes_field,
    first_divergence,
    parse_time,
    summary,
)

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_MESSAGES = 200
DEFAULT_MESSAGES = 20
DIFF_FIELDS = ("event_type", "tool", "action")  # as `strata diff` aligns sessions
COST_FIELDS = ("cost", "cost_usd", "usd", "price")
DURATION_FIELDS = ("duration_ms", "latency_ms", "elapsed_ms")
TOKEN_FIELDS = ("tokens", "total_tokens", "input_tokens", "output_tokens")


class FormError(ValueError):
    """Input a form sent that cannot be used; `field` names the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    v = values[-1].strip()
    return v or None


def _int(params: Mapping[str, Sequence[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = _one(params, name)
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise FormError(name, f"{name} {raw!r} is not a whole number") from None
    if not lo <= n <= hi:
        raise FormError(name, f"{name} {n} is out of range: {lo} to {hi}")
    return n


# --- pagination -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    number: int  # 1-based
    per: int

    @property
    def start(self) -> int:
        return (self.number - 1) * self.per


def parse_page(params: Mapping[str, Sequence[str]]) -> Page:
    return Page(
        _int(params, "page", 1, 1, 10**9), _int(params, "per", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    )


def page_of(total: int, page: Page) -> dict:
    """Where `page` is in `total` items: the slice to show and the links around it."""
    pages = max(1, math.ceil(total / page.per))
    number = min(page.number, pages)
    start = (number - 1) * page.per
    return {
        "page": number,
        "pages": pages,
        "per": page.per,
        "total": total,
        "start": start,
        "end": min(start + page.per, total),
    }


# --- the cluster ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    port: int
    rack: str | None


@dataclass(frozen=True, slots=True)
class PartitionLead:
    topic: str
    partition: int
    leader: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Moving:
    topic: str
    partition: int
    leader: int
    target: int


def cluster_view(
    brokers: Sequence[BrokerInfo],
    controller: int,
    leads: Sequence[PartitionLead],
    moving: Sequence[Moving],
    mode: str,
    this_broker: int,
) -> dict:
    """Brokers with their share of the leaders of client topics (internal ones apart),
    and how even that share is: the most leaders on one broker over the fair share."""
    user = [x for x in leads if not x.topic.startswith("__")]
    per_broker = {b.broker_id: 0 for b in brokers}
    internal = {b.broker_id: 0 for b in brokers}
    unled = 0
    for x in leads:
        table = internal if x.topic.startswith("__") else per_broker
        if x.leader in table:
            table[x.leader] += 1
        elif not x.topic.startswith("__"):
            unled += 1
    fair = len(user) / len(brokers) if brokers else 0.0
    most = max(per_broker.values(), default=0)
    return {
        "mode": mode,
        "this_broker": this_broker,
        "controller": controller,
        "brokers": [
            {
                "id": b.broker_id,
                "address": f"{b.host}:{b.port}",
                "rack": b.rack,
                "controller": b.broker_id == controller,
                "leaders": per_broker[b.broker_id],
                "internal_leaders": internal[b.broker_id],
            }
            for b in sorted(brokers, key=lambda b: b.broker_id)
        ],
        "racks": sorted({b.rack for b in brokers if b.rack}),
        "topics": len({x.topic for x in user}),
        "partitions": len(user),
        "without_leader": unled,
        "balance": {
            "fair_share": round(fair, 2),
            "most": most,
            "skew": round(most / fair, 2) if fair else 1.0,
        },
        "moving": [
            {"topic": m.topic, "partition": m.partition, "from": m.leader, "to": m.target}
            for m in sorted(moving, key=lambda m: (m.topic, m.partition))
        ],
    }


# --- topics -----------------------------------------------------------------------------


def topics_view(
    names_partitions: Sequence[tuple[str, int]],
    messages: Mapping[str, int],
    page: Page,
    show_internal: bool,
) -> dict:
    """The topics list; `messages[name]`: end minus start offsets summed over the
    partitions, for the topics of the page shown (asked only for those)."""
    rows = sorted((n, p) for n, p in names_partitions if show_internal or not n.startswith("__"))
    where = page_of(len(rows), page)
    shown = rows[where["start"] : where["end"]]
    return {
        "topics": [
            {
                "name": n,
                "partitions": p,
                "internal": n.startswith("__"),
                "messages": messages.get(n),
            }
            for n, p in shown
        ],
        "pagination": where,
        "internal_shown": show_internal,
    }


@dataclass(frozen=True, slots=True)
class PartitionFigures:
    partition: int
    leader: int
    epoch: int
    log_start: int | None  # None: its leader did not answer
    log_end: int | None
    wal_bytes: int | None  # None: held by another broker (its figures are there)
    bucket_bytes: int | None
    error: str | None = None


def topic_view(
    name: str,
    partitions_total: int,
    figures: Sequence[PartitionFigures],
    where: dict,
    configs: Sequence[tuple[str, str | None, bool]],
) -> dict:
    """One topic: the partitions of the page shown, and its configs (name, value,
    whether set on the topic rather than a default)."""
    rows = []
    for f in figures:
        messages = (
            f.log_end - f.log_start if f.log_end is not None and f.log_start is not None else None
        )
        rows.append(
            {
                "partition": f.partition,
                "leader": f.leader,
                "epoch": f.epoch,
                "log_start": f.log_start,
                "log_end": f.log_end,
                "messages": messages,
                "wal_bytes": f.wal_bytes,
                "bucket_bytes": f.bucket_bytes,
                "error": f.error,
            }
        )
    return {
        "name": name,
        "internal": name.startswith("__"),
        "partitions_total": partitions_total,
        "partitions": rows,
        "pagination": where,
        "configs": [
            {"name": n, "value": v, "overridden": o}
            for n, v, o in sorted(configs, key=lambda c: c[0])
        ],
    }


def parse_configs(text: str) -> list[tuple[str, str]]:
    """`name=value` lines (or comma-separated) for a new topic's configs."""
    out = []
    for part in text.replace(",", "\n").splitlines():
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise FormError("configs", f"config {part!r}: expected name=value")
        k, v = part.split("=", 1)
        if not k.strip():
            raise FormError("configs", f"config {part!r}: no name")
        out.append((k.strip(), v.strip()))
    return out


def parse_new_topic(params: Mapping[str, Sequence[str]]) -> tuple[str, int, list[tuple[str, str]]]:
    name = _one(params, "name")
    if name is None:
        raise FormError("name", "a topic needs a name")
    if len(name) > 249 or not all(c.isalnum() or c in "._-" for c in name):
        raise FormError("name", f"topic name {name!r}: letters, digits, '.', '_' and '-' only")
    partitions = _int(params, "partitions", 1, 1, 100_000)
    return name, partitions, parse_configs(_one(params, "configs") or "")


# --- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Browse:
    partition: int
    offset: int | None  # None with time_ms None: the latest records
    time_ms: int | None
    limit: int
    key: str | None  # search by key (the replay index) instead


def parse_browse(params: Mapping[str, Sequence[str]], partitions: int) -> Browse:
    """The messages form: a partition and an offset or a time, or a key."""
    key = _one(params, "key")
    limit = _int(params, "limit", DEFAULT_MESSAGES, 1, MAX_MESSAGES)
    partition = _int(params, "partition", 0, 0, max(partitions - 1, 0))
    raw_offset, raw_time = _one(params, "offset"), _one(params, "time")
    if raw_offset is not None and raw_time is not None:
        raise FormError("offset", "give an offset or a time, not both")
    offset = None
    if raw_offset is not None:
        if not raw_offset.isdigit():
            raise FormError("offset", f"offset {raw_offset!r} is not a whole number ≥ 0")
        offset = int(raw_offset)
    time_ms = None
    if raw_time is not None:
        try:
            time_ms = parse_time(raw_time)
        except BadTime as e:
            raise FormError("time", str(e)) from None
    return Browse(partition, offset, time_ms, limit, key)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def decoded(b: bytes | None) -> tuple[str, object]:
    """("json", value) if `b` parses as JSON, else ("text", str), else ("base64", str)."""
    if b is None:
        return "null", None
    return bytes_field(b)  # the same reading as the replay API's


def message_row(
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]],
) -> dict:
    kind, v = decoded(value)
    _, k = decoded(key)
    return {
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
        "time": iso(timestamp),
        "key": k if isinstance(k, str) or k is None else json.dumps(k),
        "value": v,
        "value_kind": kind,
        "headers": {h: decoded(x)[1] for h, x in headers},
    }


# --- groups -----------------------------------------------------------------------------


def decode_assignment(data: bytes) -> dict[str, list[int]]:
    """The consumer protocol's assignment (version, [topic, [partition]], user data);
    {} for another protocol's or an empty one."""
    try:
        pos = 2
        (n,) = struct.unpack_from(">i", data, pos)
        pos += 4
        out: dict[str, list[int]] = {}
        for _ in range(max(n, 0)):
            (size,) = struct.unpack_from(">h", data, pos)
            pos += 2
            topic = data[pos : pos + size].decode()
            pos += size
            (m,) = struct.unpack_from(">i", data, pos)
            pos += 4
            parts = list(struct.unpack_from(f">{max(m, 0)}i", data, pos))
            pos += 4 * max(m, 0)
            out.setdefault(topic, []).extend(parts)
        return out
    except (struct.error, UnicodeDecodeError):
        return {}


@dataclass(frozen=True, slots=True)
class GroupMember:
    member_id: str
    instance_id: str | None
    client_id: str
    host: str
    assignment: Mapping[str, Sequence[int]]


def lag_rows(
    committed: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int | None]
) -> list[dict]:
    """Lag per partition: its end (the high watermark) minus the committed offset."""
    rows = []
    for (topic, partition), c in sorted(committed.items()):
        end = ends.get((topic, partition))
        lag = None if end is None or c < 0 else max(end - c, 0)
        rows.append(
            {"topic": topic, "partition": partition, "committed": c, "end": end, "lag": lag}
        )
    return rows


def group_view(
    group_id: str,
    state: str,
    protocol_type: str,
    protocol: str,
    coordinator: int,
    members: Sequence[GroupMember],
    lags: Sequence[dict],
    history: Sequence[tuple[float, int]],
) -> dict:
    owner = {}
    for m in members:
        for topic, parts in m.assignment.items():
            for p in parts:
                owner[(topic, p)] = m.member_id
    rows = [{**r, "member": owner.get((r["topic"], r["partition"]))} for r in lags]
    return {
        "group_id": group_id,
        "state": state,
        "protocol_type": protocol_type,
        "protocol": protocol,
        "coordinator": coordinator,
        "members": [
            {
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": {t: sorted(p) for t, p in sorted(m.assignment.items())},
            }
            for m in members
        ],
        "offsets": rows,
        "total_lag": sum(r["lag"] or 0 for r in rows),
        "lag_history": [{"t": t, "lag": lag} for t, lag in history],
        "chart": lag_chart(history),
    }


def lag_chart(history: Sequence[tuple[float, int]], width: int = 480, height: int = 120) -> dict:
    """SVG polyline points for lag over time (the newest on the right)."""
    if not history:
        return {"width": width, "height": height, "points": "", "max": 0, "span_s": 0.0}
    t0, t1 = history[0][0], history[-1][0]
    span = max(t1 - t0, 1e-9)
    top = max(lag for _, lag in history) or 1
    pad = 4
    pts = []
    for t, lag in history:
        x = pad + (width - 2 * pad) * ((t - t0) / span if len(history) > 1 else 1.0)
        y = height - pad - (height - 2 * pad) * (lag / top)
        pts.append(f"{x:.1f},{y:.1f}")
    return {
        "width": width,
        "height": height,
        "points": " ".join(pts),
        "max": max(lag for _, lag in history),
        "span_s": round(t1 - t0, 1),
    }


def groups_view(groups: Sequence[dict], page: Page) -> dict:
    rows = sorted(groups, key=lambda g: g["group_id"])
    where = page_of(len(rows), page)
    return {"groups": rows[where["start"] : where["end"]], "pagination": where}


# --- the object store -------------------------------------------------------------------


def rate(samples: Sequence[tuple[float, float]]) -> float | None:
    """Per second between the oldest and the newest sample; None with fewer than two."""
    if len(samples) < 2:
        return None
    (t0, v0), (t1, v1) = samples[0], samples[-1]
    if t1 <= t0:
        return None
    return max(v1 - v0, 0) / (t1 - t0)


def objects_view(figures: Mapping[str, float], rates: Mapping[str, float | None]) -> dict:
    return {
        "figures": dict(figures),
        "rates": {k: None if v is None else round(v, 3) for k, v in rates.items()},
    }


# --- sessions ---------------------------------------------------------------------------


def _event_type(v: object) -> str:
    if isinstance(v, dict):
        for f in MAIN_FIELDS:
            if f in v and f != "step":
                return str(v[f])
    return "-"


def _number(v: Mapping, names: Sequence[str]) -> float | None:
    for n in names:
        x = v.get(n)
        if isinstance(x, int | float) and not isinstance(x, bool):
            return x
    return None


def timeline_view(topic: str, key: str, events: Sequence[dict]) -> dict:
    """One session's events (dicts as the replay API sends them) as timeline rows:
    time since the start, the type, the duration (a duration field, else the gap to the
    next event) and the cost and tokens where the event has such fields."""
    start = events[0]["timestamp"] if events else 0
    rows = []
    for i, e in enumerate(events):
        v = e["value"] if isinstance(e["value"], dict) else {}
        given = _number(v, DURATION_FIELDS)
        if given is not None:
            duration: float | None = given / 1000
        elif i + 1 < len(events):
            duration = (events[i + 1]["timestamp"] - e["timestamp"]) / 1000
        else:
            duration = None
        shown = {
            k: x
            for k, x in v.items()
            if k not in ("event_type", "type") and k not in COST_FIELDS + DURATION_FIELDS
        }
        rows.append(
            {
                "step": i + 1,
                "rel_s": round((e["timestamp"] - start) / 1000, 3),
                "time": iso(e["timestamp"]),
                "type": _event_type(e["value"]),
                "duration_s": None if duration is None else round(duration, 3),
                "cost": _number(v, COST_FIELDS),
                "tokens": _number(v, TOKEN_FIELDS),
                "fields": shown if v else e["value"],
                "partition": e["partition"],
                "offset": e["offset"],
            }
        )
    return {
        "topic": topic,
        "key": key,
        "start": iso(start) if events else None,
        "events": rows,
        "summary": summary(events),
    }


def diff_view(
    topic: str,
    name_a: str,
    a: Sequence[dict],
    name_b: str,
    b: Sequence[dict],
    fields: Sequence[str] = DIFF_FIELDS,
) -> dict:
    """Two sessions step by step, side by side; the first step where they differ on
    `fields` (broker.replay.render.first_divergence, as `strata diff`) is marked, and
    so is every step after it."""
    d = first_divergence(a, b, fields)
    ta, tb = timeline_view(topic, name_a, a), timeline_view(topic, name_b, b)
    rows = []
    for i in range(max(len(a), len(b))):
        step = i + 1
        rows.append(
            {
                "step": step,
                "a": ta["events"][i] if i < len(a) else None,
                "b": tb["events"][i] if i < len(b) else None,
                "divergence": d.step == step,
                "after": d.step is not None and step > d.step,
            }
        )
    return {
        "topic": topic,
        "a": name_a,
        "b": name_b,
        "fields": list(fields),
        "divergence": d.step,
        "rows": rows,
        "summary": {"a": ta["summary"], "b": tb["summary"]},
    }


def parse_fields(params: Mapping[str, Sequence[str]]) -> list[str]:
    raw = _one(params, "fields")
    if raw is None:
        return list(DIFF_FIELDS)
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    if not fields:
        raise FormError("fields", "fields: name at least one value field, e.g. event_type")
    return fields
