"""Links as the cluster metadata stores them, and the pure rules over them.

A link is a plain dict in the metadata document (broker.metadata_store: the bucket's
document, or etcd in cluster mode), so every broker sees the same links:

    {"name": "prod", "source_bootstrap": "kafka:9092", "topics": "agent-.*",
     "groups": ".*", "source_security": {"security.protocol": ..., ...},
     "on_source_gap": "stop" | "continue", "gaps_accepted_ms": ...,
     "state": "active" | "paused", "created_ms": ...,
     "mirrors": {"agent-a": {"state": "mirroring" | "promoting" | "promoted",
                             "partitions": 6, "promoted_ms": ..., "final_offsets": {...}}}}

A topic in `mirrors` that is not promoted is read-only to clients; promoted topics stay
listed (with where the mirror stopped) and are never fetched again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MIRRORING, PROMOTING, PROMOTED = "mirroring", "promoting", "promoted"
ACTIVE, PAUSED = "active", "paused"
# what a partition does when the source deleted records it had not mirrored yet
GAP_STOP, GAP_CONTINUE = "stop", "continue"
GROUP_MARKER = "strata-link:"  # metadata of offsets a link synced: "strata-link:<name>"

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class LinkError(ValueError):
    """A request about links that cannot be honoured; the message says why."""


def new_link(
    name: str,
    source_bootstrap: str,
    topics: str,
    groups: str,
    now_ms: int,
    source_security: Mapping[str, str] | None = None,
    on_source_gap: str = GAP_STOP,
) -> dict:
    if not _NAME.match(name):
        raise LinkError(f"link name {name!r}: letters, digits, '.', '_' and '-' only")
    if not source_bootstrap or any(":" not in s for s in source_bootstrap.split(",")):
        raise LinkError(f"source bootstrap {source_bootstrap!r}: HOST:PORT[,HOST:PORT...]")
    if on_source_gap not in (GAP_STOP, GAP_CONTINUE):
        raise LinkError(f"on_source_gap {on_source_gap!r}: {GAP_STOP!r} or {GAP_CONTINUE!r}")
    for what, pattern in (("topics", topics), ("groups", groups)):
        try:
            re.compile(pattern)
        except re.error as e:
            raise LinkError(f"{what} pattern {pattern!r}: {e}") from None
    return {
        "name": name,
        "source_bootstrap": source_bootstrap,
        "topics": topics,
        "groups": groups,
        "source_security": dict(source_security or {}),
        "on_source_gap": on_source_gap,
        "state": ACTIVE,
        "created_ms": now_ms,
        "mirrors": {},
    }


def matches(pattern: str, name: str) -> bool:
    """Kafka's convention for topic patterns: the whole name matches."""
    return not name.startswith("__") and re.fullmatch(pattern, name) is not None


def mirror_link(links: Mapping[str, dict], topic: str) -> str | None:
    """The link that mirrors `topic` and keeps it read-only, if any."""
    for name, link in links.items():
        m = link.get("mirrors", {}).get(topic)
        if m is not None and m.get("state") != PROMOTED:
            return name
    return None


def fetched(link: dict) -> list[str]:
    """The link's topics still taking the source's records."""
    if link.get("state") != ACTIVE:
        return []
    return [t for t, m in link.get("mirrors", {}).items() if m.get("state") != PROMOTED]


def claimable(links: Mapping[str, dict], link_name: str, topic: str) -> bool:
    """Whether `link_name` may start mirroring `topic`: it matches and no other link has it."""
    link = links[link_name]
    if topic in link.get("mirrors", {}) or not matches(link["topics"], topic):
        return False
    return all(
        topic not in other.get("mirrors", {}) for n, other in links.items() if n != link_name
    )


def group_syncable(
    link_name: str, pattern: str, group: str, local: Mapping[tuple[str, int], tuple[int, str]]
) -> bool:
    """Whether a source group's offsets may be copied: it matches, and every offset it has
    on Strata was written by this link (metadata GROUP_MARKER + name). An offset a
    consumer committed on Strata means the group moved: the link leaves it alone."""
    if not matches(pattern, group):
        return False
    marker = GROUP_MARKER + link_name
    return all(meta == marker for _, meta in local.values())


def offsets_to_sync(
    source: Mapping[tuple[str, int], int],
    local: Mapping[tuple[str, int], tuple[int, str]],
    mirrored_ends: Mapping[tuple[str, int], int],
) -> dict[tuple[str, int], int]:
    """The source's committed offsets to write on Strata: those of mirrored partitions
    that differ from what Strata has and that the mirror already holds (an offset past
    the mirror's end waits until the mirror gets there, so a consumer moved early
    never skips records)."""
    out = {}
    for tp, offset in source.items():
        end = mirrored_ends.get(tp)
        if end is None or offset > end:
            continue
        have = local.get(tp)
        if have is None or have[0] != offset:
            out[tp] = offset
    return out
