"""The seeded fault schedule: which fault, against what, for how long (pure, no I/O).

A schedule is a list of `Fault`s run one after the other, each healed before the next. The
kinds are dealt round-robin in an order shuffled per round, so N faults give every kind
about N / len(kinds) turns; targets, durations and the quiet gaps in between come from the
seed alone, so a seed reproduces a run's faults exactly (the timing of the load around them
is the machine's).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

KINDS = (
    "kill9",  # SIGKILL a broker, start it again on its data directory
    "sigstop",  # SIGSTOP a broker for longer than its lease, then SIGCONT
    "restart",  # SIGTERM (graceful hand-off), start again
    "etcd_kill",  # SIGKILL etcd, start it again on its data
    "etcd_cut",  # the proxy in front of etcd stops forwarding (a partition)
    "s3_slow",  # the proxy in front of the object store delays every request
    "s3_error",  # the proxy answers 500 InternalError or 503 SlowDown
    "s3_down",  # the proxy blackholes the object store (unreachable)
    "disk_full",  # a broker's WAL filesystem (tmpfs) filled to the last byte
)
LEASE_KINDS = frozenset({"kill9", "sigstop", "etcd_kill", "etcd_cut"})
"""Faults after which a broker may lose its lease (and in wal mode its un-uploaded tail)."""


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    target: int | None  # broker id, for the kinds aimed at one broker
    seconds: float  # how long the fault holds before it is healed
    gap: float  # quiet seconds before it starts
    detail: str = ""  # s3_error: the status; s3_slow: the delay

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_schedule(
    count: int,
    seed: int,
    brokers: Sequence[int],
    lease_s: float,
    kinds: Sequence[str] = KINDS,
    outage_s: float = 0.0,
    counts: dict[str, int] | None = None,
) -> list[Fault]:
    """`count` faults from `seed`, the kinds dealt round-robin; or, with `counts`, exactly
    that many of each kind in a shuffled order (`count` and `kinds` unused). `lease_s`: a
    SIGSTOP holds longer than it. `outage_s`: if set, every s3_down lasts exactly that
    long (the long-outage figure)."""
    unknown = (set(kinds) | set(counts or ())) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    rng = random.Random(seed)
    out: list[Fault] = []
    order: list[str] = []
    deck = [k for k, n in sorted((counts or {}).items()) for _ in range(n)]
    if counts is not None:
        rng.shuffle(deck)
        count = len(deck)
    for i in range(count):
        if counts is not None:
            kind = deck[i]
        else:
            if not order:
                order = list(kinds)
                rng.shuffle(order)
            kind = order.pop()
        target = (
            rng.choice(list(brokers))
            if kind in ("kill9", "sigstop", "restart", "disk_full")
            else None
        )
        detail = ""
        if kind == "kill9":
            seconds = rng.uniform(0.5, 3.0)  # down time before the restart
        elif kind == "sigstop":
            seconds = lease_s + rng.uniform(1.0, 3.0)
        elif kind == "restart":
            seconds = rng.uniform(0.0, 1.0)
        elif kind in ("etcd_kill", "etcd_cut"):
            seconds = rng.uniform(1.0, lease_s + 2.0)
        elif kind == "s3_slow":
            seconds = rng.uniform(3.0, 8.0)
            detail = f"{rng.choice((0.3, 1.0, 2.5))}"
        elif kind == "s3_error":
            seconds = rng.uniform(3.0, 8.0)
            detail = rng.choice(("500", "503"))
        elif kind == "s3_down":
            seconds = outage_s or rng.uniform(3.0, 10.0)
        else:  # disk_full
            seconds = rng.uniform(3.0, 8.0)
        out.append(
            Fault(i, kind, target, round(seconds, 2), round(rng.uniform(1.0, 3.0), 2), detail)
        )
    return out
