"""Fetch sessions (KIP-227): the broker's cache of what each consumer fetches, so an
incremental fetch names only the partitions that changed and its answer carries only
the partitions with news.

A pure core: no asyncio, no I/O. The Fetch handler asks `FetchSessionCache.context` what
a request is, reads, filters its answer through the session (`FetchSession.must_send`),
and after a full fetch offers the partitions it answered to `create`. Kafka's rules
(`FetchManager.newContext`, `FetchSessionCache`):

| session id | epoch | meaning |
|---|---|---|
| 0 | -1 | a full fetch without a session (librdkafka always sends this) |
| 0 | 0 | a full fetch asking for a session: the answer carries its id, or 0 without a slot |
| N | 0 or -1 | closes session N, then as the two rows above |
| N | E > 0 | incremental: FETCH_SESSION_ID_NOT_FOUND unless N is cached, |
| | | INVALID_FETCH_SESSION_EPOCH unless E is the epoch N expects next |

The cache holds at most `max_slots` sessions (`max.incremental.fetch.session.cache.slots`).
A full cache takes a new session only by evicting one: first any session unused for
`eviction_ms`; else the least valuable session older than `eviction_ms` (unprivileged
before privileged, then fewest partitions) when the new one is worth more. Privileged
sessions (followers) may also evict younger unprivileged ones. Consumers' sessions
are unprivileged; Strata has no follower fetches, but the rule is kept as Kafka has it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from protocol.errors import ErrorCode

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
EVICTION_MS = 120_000  # Kafka's min.incremental.fetch.session.eviction.ms

TopicKey = Hashable  # a topic's name (Fetch < v13) or its id (v13+)
PartitionKey = tuple[TopicKey, int]


def next_epoch(epoch: int) -> int:
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == 2**31 - 1 else epoch + 1


@dataclass(frozen=True, slots=True)
class Wanted:
    """A partition as a fetch request names it."""

    fetch_offset: int
    max_bytes: int
    leader_epoch: int = -1


@dataclass(slots=True)
class CachedPartition:
    fetch_offset: int
    max_bytes: int
    leader_epoch: int
    # what the last answer told the client; -2: nothing yet, so the first answer includes it
    high_watermark: int = -2
    last_stable_offset: int = -2
    log_start_offset: int = -2


@dataclass(slots=True)
class FetchSession:
    id: int
    privileged: bool
    uses_topic_ids: bool
    created_ms: int
    last_used_ms: int
    epoch: int = 1  # the epoch the next incremental request must carry
    partitions: dict[PartitionKey, CachedPartition] = field(default_factory=dict)

    def update(
        self, wanted: Iterable[tuple[PartitionKey, Wanted]], forgotten: Iterable[PartitionKey]
    ) -> None:
        """An incremental request: partitions added or changed, and those to forget."""
        parts = self.partitions
        for key, w in wanted:
            cached = parts.get(key)
            if cached is None:
                parts[key] = CachedPartition(w.fetch_offset, w.max_bytes, w.leader_epoch)
            else:
                cached.fetch_offset = w.fetch_offset
                cached.max_bytes = w.max_bytes
                cached.leader_epoch = w.leader_epoch
        for key in forgotten:
            parts.pop(key, None)

    def must_send(
        self,
        key: PartitionKey,
        *,
        records: int,
        error: int,
        high_watermark: int,
        last_stable_offset: int,
        log_start_offset: int,
        redirected: bool = False,
    ) -> bool:
        """Whether an incremental answer includes this partition (records, an error, a
        preferred replica, or offsets the client has not been told), remembering what it
        is told. A partition that returned records moves to the end of the session, so the
        next fetches start with the others (max_bytes is shared fairly)."""
        p = self.partitions.get(key)
        if p is None:
            return bool(records or error)
        send = bool(records) or bool(error) or redirected
        if p.high_watermark != high_watermark:
            p.high_watermark = high_watermark
            send = True
        if p.last_stable_offset != last_stable_offset:
            p.last_stable_offset = last_stable_offset
            send = True
        if p.log_start_offset != log_start_offset:
            p.log_start_offset = log_start_offset
            send = True
        if records:
            self.partitions[key] = self.partitions.pop(key)
        return send


class Mode(Enum):
    SESSIONLESS = "sessionless"  # a full fetch, answered with session id 0
    FULL = "full"  # a full fetch that may open a session (`create` after the answer)
    INCREMENTAL = "incremental"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class FetchContext:
    mode: Mode
    uses_topic_ids: bool  # Fetch v13+: topics by id
    session: FetchSession | None = None
    error: ErrorCode = ErrorCode.none


class FetchSessionCache:
    def __init__(
        self,
        max_slots: int,
        eviction_ms: int = EVICTION_MS,
        new_id: Callable[[], int] | None = None,
    ) -> None:
        self.max_slots = max_slots
        self.eviction_ms = eviction_ms
        self._new_id = new_id or (lambda: random.randint(1, 2**31 - 1))
        self.sessions: dict[int, FetchSession] = {}
        # counters for /metrics
        self.created = 0
        self.evictions = 0
        self.requests = dict.fromkeys(Mode, 0)
        self.not_found = 0
        self.invalid_epoch = 0

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def partitions(self) -> int:
        return sum(len(s.partitions) for s in self.sessions.values())

    def context(
        self,
        session_id: int,
        epoch: int,
        wanted: Iterable[tuple[PartitionKey, Wanted]],
        forgotten: Iterable[PartitionKey],
        *,
        uses_topic_ids: bool,
        now_ms: int,
    ) -> FetchContext:
        """What a fetch request is (see the module docstring). For an incremental one the
        session is updated with the request's partitions and its epoch moves on."""
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                self.close(session_id)  # a full fetch closes the session named
            mode = Mode.SESSIONLESS if epoch == FINAL_EPOCH else Mode.FULL
            return self._counted(FetchContext(mode, uses_topic_ids))
        session = self.sessions.get(session_id)
        if session is None:
            self.not_found += 1
            return self._counted(
                FetchContext(Mode.ERROR, uses_topic_ids, error=ErrorCode.fetch_session_id_not_found)
            )
        if session.epoch != epoch:
            self.invalid_epoch += 1
            return self._counted(
                FetchContext(
                    Mode.ERROR, uses_topic_ids, error=ErrorCode.invalid_fetch_session_epoch
                )
            )
        if session.uses_topic_ids != uses_topic_ids:  # the client changed Fetch versions
            return self._counted(
                FetchContext(
                    Mode.ERROR, uses_topic_ids, error=ErrorCode.fetch_session_topic_id_error
                )
            )
        session.update(wanted, forgotten)
        if not session.partitions:  # nothing left to fetch: the session ends
            del self.sessions[session.id]
            return self._counted(FetchContext(Mode.SESSIONLESS, uses_topic_ids))
        session.last_used_ms = now_ms
        session.epoch = next_epoch(epoch)
        return self._counted(FetchContext(Mode.INCREMENTAL, uses_topic_ids, session))

    def close(self, session_id: int) -> None:
        """Forget a session (a full fetch naming it, or a throttled answer that opened it
        but was sent empty); an unknown id is no error."""
        self.sessions.pop(session_id, None)

    def _counted(self, ctx: FetchContext) -> FetchContext:
        self.requests[ctx.mode] += 1
        return ctx

    def create(
        self,
        partitions: dict[PartitionKey, CachedPartition],
        *,
        uses_topic_ids: bool,
        now_ms: int,
        privileged: bool = False,
    ) -> int:
        """A session for the partitions a full fetch answered (with what it told the
        client); its id, or 0 (INVALID_SESSION_ID) when there are none or no slot."""
        if not partitions or self.max_slots <= 0:
            return INVALID_SESSION_ID
        if len(self.sessions) >= self.max_slots and not self._evict(
            privileged, len(partitions), now_ms
        ):
            return INVALID_SESSION_ID
        session_id = self._new_id()
        while session_id == INVALID_SESSION_ID or session_id in self.sessions:
            session_id = self._new_id()
        self.sessions[session_id] = FetchSession(
            session_id, privileged, uses_topic_ids, now_ms, now_ms, 1, partitions
        )
        self.created += 1
        return session_id

    def _evict(self, privileged: bool, size: int, now_ms: int) -> bool:
        """Kafka's tryEvict: the stalest session if unused for eviction_ms, else the
        least valuable evictable one if the proposed session is worth more."""
        stalest = min(self.sessions.values(), key=lambda s: (s.last_used_ms, s.id))
        if now_ms - stalest.last_used_ms > self.eviction_ms:
            return self._drop(stalest)
        old = [s for s in self.sessions.values() if now_ms - s.created_ms > self.eviction_ms]
        if privileged:  # followers may also evict young consumers' sessions
            old += [
                s
                for s in self.sessions.values()
                if not s.privileged and now_ms - s.created_ms <= self.eviction_ms
            ]
        if not old:
            return False
        cheapest = min(old, key=lambda s: (s.privileged, len(s.partitions), s.id))
        if (privileged, size) <= (cheapest.privileged, len(cheapest.partitions)):
            return False
        return self._drop(cheapest)

    def _drop(self, session: FetchSession) -> bool:
        del self.sessions[session.id]
        self.evictions += 1
        return True
