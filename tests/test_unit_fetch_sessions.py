"""The fetch-session cache (KIP-227) without a broker: what each request's session id and
epoch mean, what an incremental answer carries, and which sessions a full cache evicts."""

from __future__ import annotations

import itertools

import pytest

from broker.fetch_sessions import (
    EVICTION_MS,
    CachedPartition,
    FetchSessionCache,
    Mode,
    Wanted,
    next_epoch,
)
from protocol.errors import ErrorCode

pytestmark = pytest.mark.unit


def ids():
    counter = itertools.count(1)
    return lambda: next(counter)


def parts(n: int, topic: str = "t") -> dict:
    return {(topic, i): CachedPartition(0, 1024, 0, 10, 10, 0) for i in range(n)}


def open_session(cache: FetchSessionCache, n: int = 3, now: int = 0, topic: str = "t") -> int:
    ctx = cache.context(0, 0, [], [], uses_topic_ids=False, now_ms=now)
    assert ctx.mode is Mode.FULL
    return cache.create(parts(n, topic), uses_topic_ids=False, now_ms=now)


def incremental(cache, session_id, epoch, wanted=(), forgotten=(), now=0, by_id=False):
    return cache.context(session_id, epoch, wanted, forgotten, uses_topic_ids=by_id, now_ms=now)


def test_epoch_minus_one_without_a_session_is_a_sessionless_full_fetch() -> None:
    cache = FetchSessionCache(10)
    ctx = cache.context(0, -1, [], [], uses_topic_ids=False, now_ms=0)
    assert ctx.mode is Mode.SESSIONLESS
    assert len(cache) == 0


def test_a_full_fetch_with_epoch_zero_opens_a_session_expecting_epoch_one() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    sid = open_session(cache)
    assert sid == 1 and len(cache) == 1 and cache.partitions == 3
    assert incremental(cache, sid, 1).mode is Mode.INCREMENTAL
    assert incremental(cache, sid, 2).mode is Mode.INCREMENTAL
    ctx = incremental(cache, sid, 2)  # replayed epoch
    assert ctx.mode is Mode.ERROR and ctx.error == ErrorCode.invalid_fetch_session_epoch


def test_an_unknown_session_id_is_fetch_session_id_not_found() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    ctx = incremental(cache, 12345, 1)
    assert ctx.mode is Mode.ERROR and ctx.error == ErrorCode.fetch_session_id_not_found
    assert cache.not_found == 1


def test_a_full_fetch_naming_a_session_closes_it() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    sid = open_session(cache)
    ctx = cache.context(sid, -1, [], [], uses_topic_ids=False, now_ms=0)
    assert ctx.mode is Mode.SESSIONLESS and len(cache) == 0
    assert incremental(cache, sid, 1).error == ErrorCode.fetch_session_id_not_found


def test_switching_between_topic_names_and_ids_in_a_session_is_an_error() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    sid = open_session(cache)
    ctx = incremental(cache, sid, 1, by_id=True)
    assert ctx.error == ErrorCode.fetch_session_topic_id_error


def test_incremental_requests_add_update_and_forget_partitions() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    sid = open_session(cache, 2)
    ctx = incremental(cache, sid, 1, [(("t", 1), Wanted(50, 2048, 3)), (("u", 0), Wanted(7, 1))])
    s = ctx.session
    assert s is not None
    assert list(s.partitions) == [("t", 0), ("t", 1), ("u", 0)]
    assert s.partitions[("t", 1)].fetch_offset == 50
    assert s.partitions[("t", 1)].max_bytes == 2048
    incremental(cache, sid, 2, forgotten=[("t", 0)])
    assert list(s.partitions) == [("t", 1), ("u", 0)]


def test_forgetting_every_partition_ends_the_session() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    sid = open_session(cache, 1)
    ctx = incremental(cache, sid, 1, forgotten=[("t", 0)])
    assert ctx.mode is Mode.SESSIONLESS and len(cache) == 0


def test_an_incremental_answer_carries_only_news_and_rotates_partitions_with_records() -> None:
    cache = FetchSessionCache(10, new_id=ids())
    sid = open_session(cache, 3)
    s = incremental(cache, sid, 1).session
    assert s is not None
    same = dict(error=0, high_watermark=10, last_stable_offset=10, log_start_offset=0)
    assert not s.must_send(("t", 0), records=0, **same)
    assert s.must_send(("t", 1), records=0, **{**same, "high_watermark": 11})
    assert not s.must_send(("t", 1), records=0, **{**same, "high_watermark": 11})  # told now
    assert s.must_send(("t", 2), records=0, **{**same, "error": 6})
    assert s.must_send(("t", 0), records=100, **same)
    assert list(s.partitions) == [("t", 1), ("t", 2), ("t", 0)]  # t-0 goes last next time
    assert s.must_send(("t", 1), records=0, redirected=True, **{**same, "high_watermark": 11})


def test_a_full_cache_refuses_a_session_no_larger_than_the_smallest_old_one() -> None:
    cache = FetchSessionCache(2, new_id=ids())
    open_session(cache, 5, now=0)
    open_session(cache, 5, now=0)
    young = EVICTION_MS  # not yet older than eviction_ms: no session may be evicted
    assert cache.create(parts(50), uses_topic_ids=False, now_ms=young) == 0
    old = EVICTION_MS + 10  # both old, both still in use
    incremental(cache, 1, 1, now=old)
    incremental(cache, 2, 1, now=old)
    assert cache.create(parts(5), uses_topic_ids=False, now_ms=old) == 0  # not worth more
    assert len(cache) == 2 and cache.evictions == 0


def test_a_full_cache_evicts_a_stale_session_first() -> None:
    cache = FetchSessionCache(2, new_id=ids())
    open_session(cache, 50, now=0)  # id 1, unused since 0
    open_session(cache, 1, now=1000)  # id 2
    now = 1000 + EVICTION_MS + 1
    incremental(cache, 2, 1, now=now)
    new = cache.create(parts(1), uses_topic_ids=False, now_ms=now)
    assert new == 3 and set(cache.sessions) == {2, 3} and cache.evictions == 1


def test_a_full_cache_evicts_the_smallest_old_session_for_a_larger_one() -> None:
    cache = FetchSessionCache(3, new_id=ids())
    for n in (10, 2, 5):
        open_session(cache, n, now=0)
    now = EVICTION_MS + 1
    for sid in (1, 2, 3):
        incremental(cache, sid, 1, now=now)  # all in use: none stale
    new = cache.create(parts(3), uses_topic_ids=False, now_ms=now)
    assert new == 4 and set(cache.sessions) == {1, 3, 4}


def test_no_slots_means_no_sessions() -> None:
    cache = FetchSessionCache(0)
    assert cache.create(parts(3), uses_topic_ids=False, now_ms=0) == 0


def test_epochs_wrap_to_one() -> None:
    assert next_epoch(0) == 1
    assert next_epoch(2**31 - 1) == 1
    assert next_epoch(-1) == -1
