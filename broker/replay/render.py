"""Replayed records as text: JSON lines, a timeline, and two sessions side by side.

Pure functions of records (dicts as the HTTP API sends them), shared by the HTTP
listener and the `strata replay` / `strata diff` commands.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.replay.core import ReplayRecord

MAIN_FIELDS = ("event_type", "type", "tool", "action", "status", "step")


class BadTime(ValueError):
    """A time that is neither ISO 8601 nor epoch milliseconds."""


def parse_time(text: str | None) -> int | None:
    """Epoch milliseconds from ISO 8601 (`2026-01-15T14:00:00Z`) or a number of ms."""
    if text is None or text == "":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(f"malformed time {text!r}: expected ISO 8601 or epoch ms") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def bytes_field(b: bytes | None) -> tuple[str, object]:
    """How a key, value or header is shown: JSON if it parses, else text, else base64."""
    if b is None:
        return "text", None
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(b).decode()
    try:
        return "json", json.loads(text)
    except ValueError:
        return "text", text


def to_dict(r: ReplayRecord) -> dict:
    kind, value = bytes_field(r.value)
    out = {
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": _text(r.key),
        "headers": {k: _text(v) for k, v in r.headers},
        "value": value,
    }
    if kind == "base64":
        out["value_encoding"] = "base64"
    return out


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(b).decode()


def json_lines(records: Iterable[ReplayRecord]) -> Iterable[bytes]:
    for r in records:
        yield json.dumps(to_dict(r), separators=(",", ":")).encode() + b"\n"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def timeline(events: Sequence[dict]) -> str:
    """One line per event: time since the session's start, its type, its main fields."""
    if not events:
        return "(no records)\n"
    start = events[0]["timestamp"]
    lines = [f"session {events[0]['key']} from {_iso(start)}, {len(events)} events"]
    for i, e in enumerate(events, 1):
        v = e["value"]
        kind = "-"
        fields = ""
        if isinstance(v, dict):
            kind = str(v.get("event_type", v.get("type", "-")))
            shown = [f"{k}={json.dumps(v[k])}" for k in v if k not in ("event_type", "type")][:6]
            fields = " ".join(shown)
        elif v is not None:
            fields = json.dumps(v)[:120]
        rel = (e["timestamp"] - start) / 1000
        lines.append(
            f"{i:>5}  +{rel:>9.3f}s  p{e['partition']}@{e['offset']:<8} {kind:<16} {fields}"
        )
    return "\n".join(lines) + "\n"


# --- diff -------------------------------------------------------------------------------


@dataclass
class Divergence:
    step: int | None  # 1-based; None: the sessions agree on every step both have
    a: dict | None
    b: dict | None


def _signature(e: dict, fields: Sequence[str]) -> tuple:
    v = e["value"] if isinstance(e["value"], dict) else {}
    return tuple(json.dumps(v.get(f), sort_keys=True) for f in fields)


def first_divergence(a: Sequence[dict], b: Sequence[dict], fields: Sequence[str]) -> Divergence:
    for i in range(max(len(a), len(b))):
        ea = a[i] if i < len(a) else None
        eb = b[i] if i < len(b) else None
        if ea is None or eb is None or _signature(ea, fields) != _signature(eb, fields):
            return Divergence(i + 1, ea, eb)
    return Divergence(None, None, None)


def summary(events: Sequence[dict]) -> dict:
    """Steps, duration and the totals of numeric value fields (cost, tokens, ...)."""
    totals: dict[str, float] = {}
    for e in events:
        v = e["value"]
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(x, int | float) and not isinstance(x, bool) and k != "step":
                    totals[k] = totals.get(k, 0) + x
    duration = (events[-1]["timestamp"] - events[0]["timestamp"]) / 1000 if events else 0.0
    return {"steps": len(events), "duration_s": duration, "totals": totals}


def diff_report(
    name_a: str, a: Sequence[dict], name_b: str, b: Sequence[dict], fields: Sequence[str]
) -> str:
    d = first_divergence(a, b, fields)
    lines = []
    if d.step is None:
        lines.append(f"no divergence on {','.join(fields)}: {len(a)} steps alike")
    else:
        lines.append(f"first divergence at step {d.step} (on {','.join(fields)}):")
        for name, e in ((name_a, d.a), (name_b, d.b)):
            shown = "(no such step)" if e is None else json.dumps(e["value"], sort_keys=True)
            lines.append(f"  {name}: {shown}")
    sa, sb = summary(a), summary(b)
    w = max(len(name_a), len(name_b), 12)
    lines.append("")
    lines.append(f"{'':<16} {name_a:>{w}} {name_b:>{w}}")
    lines.append(f"{'steps':<16} {sa['steps']:>{w}} {sb['steps']:>{w}}")
    lines.append(f"{'duration (s)':<16} {sa['duration_s']:>{w}.3f} {sb['duration_s']:>{w}.3f}")
    for k in sorted({*sa["totals"], *sb["totals"]}):
        ta, tb = sa["totals"].get(k, 0), sb["totals"].get(k, 0)
        lines.append(f"{k:<16} {ta:>{w}.6g} {tb:>{w}.6g}")
    return "\n".join(lines) + "\n"
