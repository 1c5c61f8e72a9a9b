"""One link at work: mirror topics fetched from the source at the source's offsets,
consumer group offsets copied, and promotion (cutover) of a topic.

Each round fetches every mirrored partition this broker leads from the partition's
leader on the source (one Fetch per source broker, read_uncommitted, so transactions'
data and markers both come), checks the batches' CRCs in a thread, and appends them
unchanged at their own base offsets (LogManager.append_at): a gap the source has (its
compaction, retention) stays a gap, and a committed offset names the same record on
both sides. The fetch position is the mirror's log end, so after a restart of either
side the mirror continues where its log ends: nothing twice, nothing skipped.

Every `refresh_s` the link re-reads the source's metadata: matching topics not yet
mirrored are created here with the source's partition count and topic configs (the
keys Strata knows; others are listed in describe), partitions added on the source are
added here, and the groups' committed offsets are synced (broker.links.model rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c

from broker.groups.committed import OFFSETS_TOPIC, CommittedOffset
from broker.groups.offset_store import OffsetStore
from broker.leadership import Leadership
from broker.links import model
from broker.links.security import redacted
from broker.links.source import EARLIEST, LATEST, FetchedPartition, SourceCluster, SourceError
from broker.log.manager import LogManager
from broker.metadata_store import MetadataStore
from broker.peers import PeerSecurity
from broker.topic_config import TOPIC_CONFIGS
from protocol import records
from protocol.records import BatchHeader

log = logging.getLogger(__name__)

OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
UNKNOWN_TOPIC_ID = 100

# why a partition stopped mirroring (describe's "stopped", the metrics' "reason")
SOURCE_GAP = "source_gap"  # retention/delete_records removed records not yet mirrored
SOURCE_TRUNCATED = "source_truncated"  # the source's log ends before the mirror's
SOURCE_TOPIC_GONE = "source_topic_gone"  # the topic was deleted on the source


@dataclass(frozen=True)
class MirrorSettings:
    refresh_s: float = 5.0  # source metadata, new topics, configs, group offsets
    max_wait_ms: int = 500
    partition_max_bytes: int = 4 * 1024 * 1024
    max_bytes: int = 32 * 1024 * 1024
    retry_s: float = 1.0  # after the source failed


@dataclass
class PartitionStatus:
    mirror_end: int = 0
    source_end: int = -1
    source_start: int = -1
    caught_up_at: float = field(
        default_factory=time.monotonic
    )  # monotonic time the mirror last held the source's end
    error: str | None = None
    resume_at: int = 0  # fetch from here when past the log end (a gap the source lost)
    stopped: str | None = None  # SOURCE_GAP, SOURCE_TRUNCATED, SOURCE_TOPIC_GONE: not fetched
    stopped_ms: int = 0
    gap: tuple[int, int] | None = None  # [from, to) lost on the source, not yet skipped
    skipped: list[tuple[int, int]] = field(default_factory=list)  # lost on the source
    start_at: int = 0  # past a skipped gap: the mirror's log start follows the source's
    mirrored_bytes: int = 0  # appended by this broker since it started
    mirrored_records: int = 0  # offsets those batches span

    @property
    def lag_records(self) -> int | None:
        return max(0, self.source_end - self.mirror_end) if self.source_end >= 0 else None

    @property
    def lag_bytes(self) -> int | None:
        """An estimate: the records behind times the mean size of those mirrored (the
        source does not say how many bytes lie past an offset)."""
        lag = self.lag_records
        if lag is None or (lag and not self.mirrored_records):
            return None
        return round(lag * self.mirrored_bytes / self.mirrored_records) if lag else 0

    @property
    def lost_records(self) -> int:
        """Offsets the source deleted before the mirror had them (skipped or pending)."""
        gaps = [*self.skipped, *([self.gap] if self.gap else [])]
        return sum(b - a for a, b in gaps)

    def stop(self, reason: str, error: str) -> None:
        self.stopped, self.error = reason, error
        self.stopped_ms = int(time.time() * 1000)

    def lag_seconds(self, now: float) -> float:
        return 0.0 if self.lag_records == 0 else round(now - self.caught_up_at, 3)

    def report(self, now: float) -> dict:
        return {
            "mirror_end": self.mirror_end,
            "source_end": self.source_end,
            "source_start": self.source_start,
            "lag_records": self.lag_records,
            "lag_bytes": self.lag_bytes,
            "lag_seconds": self.lag_seconds(now),
            "error": self.error,
            "state": "stopped" if self.stopped else "mirroring",
            "stopped": self.stopped,
            "gap": list(self.gap) if self.gap else None,
            "skipped": [list(s) for s in self.skipped],
            "lost_records": self.lost_records,
        }


def verified_batches(data: bytes) -> list[tuple[memoryview, BatchHeader]]:
    """The whole batches of a fetch answer, each CRC-checked (run in a thread). Unlike a
    producer's batch, a compacted source batch may hold fewer records than its offset
    range, so only the frame and the CRC are checked."""
    view = memoryview(data)
    out = []
    for pos, h in records.iter_headers(view):
        batch = view[pos : pos + h.size]
        if h.magic != 2:
            raise SourceError(f"batch at {h.base_offset}: magic {h.magic}")
        if crc32c.crc32c(batch[records.CRC_START :]) != h.crc:
            raise SourceError(f"batch at {h.base_offset}: CRC-32C mismatch")
        out.append((batch, h))
    return out


class LinkRunner:
    """Runs one link on this broker until stopped."""

    def __init__(
        self,
        name: str,
        meta: MetadataStore,
        logs: LogManager,
        leadership: Leadership,
        offsets: OffsetStore,
        group_active: Callable[[str], bool],
        settings: MirrorSettings,
        source_security: dict[str, str],
        client_security: PeerSecurity,
    ) -> None:
        """`source_security`: the link's settings as stored; `client_security`: what
        they make of the broker's own client (broker.links.security.peer_security)."""
        self.name = name
        self.meta = meta
        self.logs = logs
        self.leadership = leadership
        self.offsets = offsets
        self.group_active = group_active
        self.settings = settings
        link = meta.links[name]
        self.source_bootstrap = link["source_bootstrap"]
        self.source_security = source_security
        self.source = SourceCluster.connect(
            self.source_bootstrap, f"strata-link-{name}", client_security
        )
        self.partitions: dict[tuple[str, int], PartitionStatus] = {}
        self.last_error: str | None = None
        self.last_error_ms = 0
        self.connected = False
        self.unsupported_configs: dict[str, dict[str, str]] = {}
        self.groups_synced: dict[str, dict[str, int]] = {}  # group -> "topic-p" -> offset
        self.promote_targets: dict[str, dict[int, int]] = {}
        self._next_refresh = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def link(self) -> dict | None:
        return self.meta.links.get(self.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"link {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.source.close()

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("link %s: %s", self.name, message)
        self.last_error = message
        self.last_error_ms = int(time.time() * 1000)

    async def _run(self) -> None:
        while self.link is not None:
            try:
                if self.link["state"] != model.ACTIVE:
                    await asyncio.sleep(self.settings.retry_s)
                    continue
                if time.monotonic() >= self._next_refresh:
                    await self._refresh()
                    self._next_refresh = time.monotonic() + self.settings.refresh_s
                fetched = await self._fetch_round()
                await self._promote_caught_up()
                if not fetched:
                    await asyncio.sleep(self.settings.max_wait_ms / 1000)
            except asyncio.CancelledError:
                raise
            except SourceError as e:
                self.connected = False
                self._error(f"source: {e}")
                self._next_refresh = 0.0
                await asyncio.sleep(self.settings.retry_s)
            except Exception as e:
                log.exception("link %s failed; retrying", self.name)
                self._error(f"{type(e).__name__}: {e}")
                self._next_refresh = 0.0
                await asyncio.sleep(self.settings.retry_s)

    # --- topics ---------------------------------------------------------------------

    async def _refresh(self) -> None:
        md = await self.source.refresh()
        self.connected = True
        link = self.link
        assert link is not None
        for topic in sorted(md.topics):
            if model.claimable(self.meta.links, self.name, topic):
                await self._claim(topic, md.topics[topic].partitions)
        mirrored = model.fetched(link)
        for topic in mirrored:
            src = md.topics.get(topic)
            if src is None:
                self._source_topic_gone(topic)
                continue
            await self._follow_shape(topic, src.partitions)
        await self._follow_configs([t for t in mirrored if t in md.topics])
        await self._sync_groups(mirrored)

    def _source_topic_gone(self, topic: str) -> None:
        """Every partition of `topic` stops for good: a topic of that name created on the
        source later is another log, whose offsets mean other records."""
        state = self.logs.topics.get(topic)
        for p in state.partitions if state else []:
            if not self.leadership.serves(p):
                continue
            st = self.partitions.setdefault((topic, p.index), PartitionStatus())
            if st.stopped != SOURCE_TOPIC_GONE:
                st.mirror_end = p.log_end_offset
                st.stop(
                    SOURCE_TOPIC_GONE,
                    f"the source topic was deleted; the mirror keeps its records (log end "
                    f"{p.log_end_offset}) and is not mirrored further",
                )
                log.warning("link %s: %s-%d: %s", self.name, topic, p.index, st.error)
        self._error(f"source topic {topic} is gone (deleted on the source)")

    async def _claim(self, topic: str, partitions: int) -> None:
        """Start mirroring `topic`: read-only from now on, created with the source's
        partition count; an existing topic is taken only while it is empty."""
        existing = self.logs.topics.get(topic)
        if existing is not None and any(p.log_end_offset for p in existing.partitions):
            self._error(f"topic {topic} already has records on Strata: not mirrored")
            return

        def claim() -> None:
            link = self.meta.links.get(self.name)
            if link is None or not model.claimable(self.meta.links, self.name, topic):
                return
            link["mirrors"][topic] = {"state": model.MIRRORING, "since_ms": int(time.time() * 1000)}

        await self.meta.update(claim)
        if existing is None:
            with contextlib.suppress(FileExistsError):  # another broker of the cluster
                await self.logs.create_topic(topic, partitions, {})
                log.info("link %s: mirroring %s (%d partitions)", self.name, topic, partitions)

    async def _follow_shape(self, topic: str, partitions: int) -> None:
        state = self.logs.topics.get(topic)
        if state is None:
            with contextlib.suppress(FileExistsError):
                await self.logs.create_topic(topic, partitions, {})
        elif len(state.partitions) < partitions:
            await self.logs.add_partitions(state, partitions)

    async def _follow_configs(self, topics: list[str]) -> None:
        if not topics:
            return
        source = await self.source.topic_configs(topics)
        for topic, configs in source.items():
            state = self.logs.topics.get(topic)
            if state is None:
                continue
            wanted, unsupported = {}, {}
            for key, value in configs.items():
                known = TOPIC_CONFIGS.get(key)
                try:
                    if known is None:
                        raise ValueError("unknown")
                    known[1](value)
                    wanted[key] = value
                except ValueError:
                    unsupported[key] = value
            self.unsupported_configs[topic] = unsupported
            if wanted != state.record.configs:
                await self.logs.set_topic_configs(state, wanted)
                log.info("link %s: %s configs now %s", self.name, topic, wanted)

    # --- records --------------------------------------------------------------------

    def _wanted(self) -> dict:
        """(source leader -> topic -> partition -> offset) of what this broker mirrors."""
        link = self.link
        by_leader: dict = {}
        if link is None:
            return by_leader
        for topic in model.fetched(link):
            state = self.logs.topics.get(topic)
            if state is None:
                continue
            caught_up = link["mirrors"][topic].get("caught_up", {})
            for p in state.partitions:
                if not self.leadership.serves(p):
                    continue
                st = self.partitions.setdefault((topic, p.index), PartitionStatus())
                st.mirror_end = p.log_end_offset
                if st.stopped == SOURCE_GAP and self._gaps_accepted(st):
                    self._skip_gap(topic, p.index, st)
                leader = self.source.leader(topic, p.index)
                if leader is None or st.stopped or str(p.index) in caught_up:
                    continue
                offset = max(p.log_end_offset, st.resume_at)
                by_leader.setdefault(leader, {}).setdefault(topic, {})[p.index] = offset
        return by_leader

    async def _fetch_round(self) -> bool:
        """One fetch from each source broker; True if any batch was appended."""
        if self.logs.backlog_full:
            return False
        wanted = self._wanted()
        if not wanted:
            return False
        s = self.settings
        answers = await asyncio.gather(
            *(
                self.source.fetch(peer, parts, s.max_wait_ms, s.partition_max_bytes, s.max_bytes)
                for peer, parts in wanted.items()
            ),
            return_exceptions=True,
        )
        appended = False
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            for topic, parts in answer.items():
                for fp in parts:
                    appended |= await self._take(topic, fp)
        return appended

    async def _take(self, topic: str, fp: FetchedPartition) -> bool:
        st = self.partitions.setdefault((topic, fp.partition), PartitionStatus())
        if fp.error == OFFSET_OUT_OF_RANGE:
            await self._out_of_range(topic, fp.partition, st)
            return False
        if fp.error in (UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID):
            st.error = f"source error {fp.error}: the topic is unknown on the source"
            self._next_refresh = 0.0  # deleted (the refresh stops it) or a moved leader
            return False
        if fp.error:
            st.error = f"source error {fp.error}"
            self._next_refresh = 0.0  # a moved leader, most likely
            return False
        st.source_end, st.source_start = fp.high_watermark, fp.log_start_offset
        batches = await asyncio.to_thread(verified_batches, fp.records) if fp.records else []
        state = self.logs.topics.get(topic)
        p = (
            state.partitions[fp.partition]
            if state and fp.partition < len(state.partitions)
            else None
        )
        if (
            p is None
            or not self.leadership.serves(p)
            or model.mirror_link(self.meta.links, topic) != self.name
        ):
            return False  # it moved, was promoted or the link went meanwhile
        appended = False
        for batch, h in batches:
            if h.base_offset < p.log_end_offset:
                continue  # a batch this log has (the fetch began inside it)
            self.logs.append_at(p, batch, h)
            st.mirrored_bytes += h.size
            st.mirrored_records += h.last_offset_delta + 1
            appended = True
        if st.start_at and p.log_end_offset >= st.start_at and state is not None:
            # the batch that holds the source's start may begin before it (delete_records
            # splits batches): the mirror's log starts where the source's does, so its
            # consumers see what the source's see, not the records the source deleted
            await self.logs.delete_records(state, p, st.start_at)
            st.start_at = 0
        st.mirror_end = p.log_end_offset
        st.error = None
        if st.mirror_end >= st.source_end:
            st.caught_up_at = time.monotonic()
        return appended

    async def _out_of_range(self, topic: str, partition: int, st: PartitionStatus) -> None:
        """The mirror's end is outside the source's log. Either retention (or
        delete_records) went past it: the records between are lost on the source; the
        partition stops with the gap reported, unless the link says on_source_gap
        "continue" or the operator accepted the gaps (resume --accept-gaps), and then
        it goes on from the source's start, leaving the gap in the mirror too. Or the
        source lost records the mirror has (truncated or recreated): it stops for good."""
        p = self.logs.topics[topic].partitions[partition]
        start = (await self.source.list_offsets(topic, [partition], EARLIEST))[partition]
        end = (await self.source.list_offsets(topic, [partition], LATEST))[partition]
        st.source_start, st.source_end = start, end
        mirror_end = max(p.log_end_offset, st.resume_at)
        if start > mirror_end:
            st.gap = (mirror_end, start)
            st.stop(
                SOURCE_GAP,
                f"offsets {mirror_end} to {start - 1} were deleted on the source (retention "
                f"or delete_records) before they were mirrored",
            )
            if self._gaps_accepted(st):
                self._skip_gap(topic, partition, st)
            else:
                st.error += (
                    "; this partition is not mirrored further until "
                    "`strata link resume --accept-gaps`"
                )
                self._error(f"{topic}-{partition}: {st.error}")
        elif end < p.log_end_offset:
            st.stop(
                SOURCE_TRUNCATED,
                f"the source's log ends at {end}, before the mirror's end {p.log_end_offset}: "
                "the source topic was truncated or recreated; this partition is not mirrored "
                "further",
            )
            self._error(f"{topic}-{partition}: {st.error}")

    def _gaps_accepted(self, st: PartitionStatus) -> bool:
        link = self.link or {}
        return link.get("on_source_gap") == model.GAP_CONTINUE or (
            link.get("gaps_accepted_ms", 0) >= st.stopped_ms
        )

    def _skip_gap(self, topic: str, partition: int, st: PartitionStatus) -> None:
        """Go on from the source's start: the gap stays a gap in the mirror, listed in
        `skipped` (and the lost records in the metrics), and the mirror's log start
        moves to the source's, as on the source."""
        assert st.gap is not None
        st.skipped.append(st.gap)
        st.resume_at = st.start_at = st.gap[1]
        self._error(
            f"{topic}-{partition}: offsets {st.gap[0]} to {st.gap[1] - 1} were lost on the "
            f"source before they were mirrored; mirroring goes on from {st.gap[1]}"
        )
        st.gap, st.stopped, st.stopped_ms = None, None, 0

    # --- promotion ------------------------------------------------------------------

    def request_promotion(self, topic: str) -> None:
        """Called once the topic is PROMOTING: its target is the source's end now."""
        self.promote_targets.pop(topic, None)

    async def _promote_caught_up(self) -> None:
        """For each PROMOTING topic: each partition led here that holds the source's end
        (as it was when this broker first looked) is recorded caught up and fetched no
        more; the broker that records the last one syncs the groups a last time and
        promotes the topic, which then takes writes."""
        link = self.link
        if link is None:
            return
        for topic, m in list(link["mirrors"].items()):
            if m.get("state") != model.PROMOTING:
                continue
            state = self.logs.topics.get(topic)
            if state is None:
                continue
            done = m.get("caught_up", {})
            mine = [p for p in state.partitions if self.leadership.serves(p)]
            pending = [p for p in mine if str(p.index) not in done]
            if pending:
                target = self.promote_targets.get(topic)
                if target is None:
                    if self.source.metadata is None:
                        await self.source.refresh()
                    target = await self.source.list_offsets(
                        topic, [p.index for p in pending], LATEST
                    )
                    self.promote_targets[topic] = target
                ready = {
                    str(p.index): p.log_end_offset
                    for p in pending
                    if p.high_watermark >= target.get(p.index, 0)
                }
                if not ready:
                    continue
                if len(done) + len(ready) >= len(state.partitions):
                    await self._sync_groups([topic])  # the source groups' last word
                await self.meta.update(lambda t=topic, r=ready: self._record_caught_up(t, r))
            mirror = self.meta.links.get(self.name, {}).get("mirrors", {}).get(topic, {})
            if len(mirror.get("caught_up", {})) >= len(state.partitions):
                n = len(state.partitions)
                await self.meta.update(lambda t=topic, n=n: self._promote_if_done(t, n))

    def _record_caught_up(self, topic: str, ready: dict[str, int]) -> None:
        link = self.meta.links.get(self.name)
        mirror = link["mirrors"].get(topic) if link else None
        if mirror is not None and mirror.get("state") == model.PROMOTING:
            mirror.setdefault("caught_up", {}).update(ready)

    def _promote_if_done(self, topic: str, partitions: int) -> None:
        link = self.meta.links.get(self.name)
        mirror = link["mirrors"].get(topic) if link else None
        if mirror is None or mirror.get("state") != model.PROMOTING:
            return
        if len(mirror.get("caught_up", {})) < partitions:
            return
        mirror.update(
            state=model.PROMOTED,
            promoted_ms=int(time.time() * 1000),
            final_offsets=mirror.pop("caught_up"),
        )
        self.promote_targets.pop(topic, None)
        log.info("link %s: promoted %s at %s", self.name, topic, mirror["final_offsets"])

    # --- consumer groups ------------------------------------------------------------

    async def _sync_groups(self, topics: list[str]) -> None:
        """Copy the source's committed offsets of the mirrored partitions into Strata,
        for groups not active on Strata and never committed to on Strata."""
        link = self.link
        offsets_topic = self.logs.topics.get(OFFSETS_TOPIC)
        if link is None or not topics or offsets_topic is None:
            return
        wanted = set(topics)
        ends = {}
        for topic in topics:
            state = self.logs.topics.get(topic)
            for p in state.partitions if state else []:
                ends[(topic, p.index)] = p.high_watermark
        marker = model.GROUP_MARKER + self.name
        for group in sorted(await self.source.groups()):
            if not model.matches(link["groups"], group) or self.group_active(group):
                continue
            home = offsets_topic.partitions[self.offsets.partition_for(group)]
            if not self.leadership.serves(home):
                continue  # another broker coordinates it (cluster mode)
            local = {
                tp: (c.offset, c.metadata)
                for tp, c in self.offsets.of_group(group).items()
                if tp[0] in wanted
            }
            if not model.group_syncable(self.name, link["groups"], group, local):
                continue
            source = {
                tp: o for tp, o in (await self.source.committed(group)).items() if tp[0] in wanted
            }
            todo = model.offsets_to_sync(source, local, ends)
            if todo:
                await self.offsets.commit(
                    group,
                    {tp: CommittedOffset(o, -1, marker, 0) for tp, o in todo.items()},
                    "consumer",
                )
                log.info("link %s: group %s offsets synced: %s", self.name, group, todo)
            synced = self.groups_synced.setdefault(group, {})
            for (t, i), o in {**{tp: v[0] for tp, v in local.items()}, **todo}.items():
                synced[f"{t}-{i}"] = o

    # --- describe -------------------------------------------------------------------

    def describe(self) -> dict:
        link = self.link or {}
        now = time.monotonic()
        topics = {}
        for topic, m in link.get("mirrors", {}).items():
            parts = {
                str(i): st.report(now)
                for (t, i), st in sorted(self.partitions.items())
                if t == topic
            }
            lags = [r["lag_records"] for r in parts.values() if r["lag_records"] is not None]
            lag_bytes = [r["lag_bytes"] for r in parts.values()]
            topics[topic] = {
                **m,
                "partitions": parts,
                "lag_records": sum(lags) if lags else None,
                "lag_bytes": None if None in lag_bytes or not lag_bytes else sum(lag_bytes),
                "lag_seconds": max((r["lag_seconds"] for r in parts.values()), default=0.0),
                "unsupported_configs": self.unsupported_configs.get(topic, {}),
                "stopped_partitions": sorted(int(i) for i, r in parts.items() if r["stopped"]),
                "lost_records": sum(r["lost_records"] for r in parts.values()),
            }
        return {
            "name": self.name,
            "source_bootstrap": link.get("source_bootstrap"),
            "source_security": redacted(link.get("source_security", {})),
            "topics_pattern": link.get("topics"),
            "groups_pattern": link.get("groups"),
            "state": link.get("state"),
            "on_source_gap": link.get("on_source_gap", model.GAP_STOP),
            "created_ms": link.get("created_ms"),
            "connected": self.connected,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms or None,
            "topics": topics,
            "groups": self.groups_synced,
        }
