"""The topic registry: topics and their partitions, as the metadata document has them.

Every change (create, delete, configs, more partitions, log starts) is made to the
document and persisted; the topic states then follow the document, the same way
whether the change was made here or (cluster mode) by another broker.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from broker.log.partition import Partition
from broker.metadata_store import MetadataStore, TopicRecord
from broker.topic_config import effective

log = logging.getLogger(__name__)


@dataclass
class TopicState:
    record: TopicRecord
    partitions: list[Partition]

    @property
    def name(self) -> str:
        return self.record.name


class TopicRegistry:
    def __init__(
        self,
        meta: MetadataStore,
        topic_defaults: Mapping[str, str],
        *,
        held: bool,
        on_forget: Callable[[Partition], None],
    ) -> None:
        """`topic_defaults`: the broker's settings standing in for topic configs, read
        at each use; `held`: new partitions are this broker's (embedded) rather than
        adopted when the cluster says so; `on_forget(p)` for each partition of a topic
        that is deleted."""
        self.meta = meta
        self.topic_defaults = topic_defaults
        self._held = held
        self._on_forget = on_forget
        self.topics: dict[str, TopicState] = {}
        self.topics_by_id: dict[bytes, TopicState] = {}
        self.lock = asyncio.Lock()  # one change of the metadata document at a time

    # --- lookups ----------------------------------------------------------------------

    def partition_by_id(self, topic_id: bytes, index: int) -> Partition | None:
        topic = self.topics_by_id.get(topic_id)
        if topic is None or index >= len(topic.partitions):
            return None
        return topic.partitions[index]

    def live_partitions(self) -> list[Partition]:
        """The partitions whose data this broker holds (all of them, embedded)."""
        return [p for state in self.topics.values() for p in state.partitions if p.held]

    def topic_config(self, topic: TopicState, key: str) -> str:
        """A topic's setting: its own, else the broker's default, else Kafka's."""
        value = topic.record.configs.get(key)
        if value is None:
            value = self.topic_defaults.get(key)
        return value if value is not None else effective({}, key)

    # --- following the metadata -------------------------------------------------------

    def load(self) -> None:
        """The topic states of the metadata just loaded."""
        for rec in self.meta.topics.values():
            self._add(rec)

    def apply_log_starts(self) -> None:
        for state in self.topics.values():
            for index, offset in state.record.log_start.items():
                if index < len(state.partitions):
                    state.partitions[index].start_at(offset)

    def sync(self) -> None:
        """Make the topic states match the metadata, after a change made here or (cluster
        mode) by another broker: new topics and partitions, deletions, log starts."""
        for name, state in list(self.topics.items()):
            if self.meta.topics.get(name) is not state.record:  # deleted, maybe recreated
                self._forget(state)
        for rec in self.meta.topics.values():
            state = self.topics.get(rec.name) or self._add(rec)
            if len(state.partitions) < rec.partitions:
                log.info("topic %s has %d partitions", rec.name, rec.partitions)
                self._grow(state)
        self.apply_log_starts()

    def _add(self, rec: TopicRecord) -> TopicState:
        state = TopicState(rec, [])
        self._grow(state)
        self.topics[rec.name] = state
        self.topics_by_id[rec.topic_id] = state
        return state

    def _grow(self, state: TopicState) -> None:
        rec = state.record
        for i in range(len(state.partitions), rec.partitions):
            state.partitions.append(Partition(rec.topic_id, rec.name, i, held=self._held))

    def _forget(self, state: TopicState) -> None:
        del self.topics[state.name]
        self.topics_by_id.pop(state.record.topic_id, None)
        for p in state.partitions:
            p.deleted = True
            self._on_forget(p)
        log.info("deleted topic %s", state.name)

    # --- changes ----------------------------------------------------------------------

    async def change(self, change: Callable[[], object]) -> None:
        """Apply a metadata change and persist it; the topic states follow either way."""
        async with self.lock:
            try:
                await self.meta.update(change)
            finally:
                self.sync()

    async def create_topic(
        self, name: str, partitions: int, configs: dict[str, str], internal: bool = False
    ) -> TopicState:
        rec = TopicRecord(name, uuid.uuid4().bytes, partitions, dict(configs), internal)

        def change() -> None:
            if name in self.meta.topics:
                raise FileExistsError(name)
            self.meta.topics[name] = rec

        await self.change(change)
        log.info("created topic %s with %d partitions, configs %s", name, partitions, configs)
        return self.topics[name]

    async def delete_topic(self, name: str) -> None:
        def change() -> None:
            if name not in self.meta.topics:
                raise KeyError(name)
            del self.meta.topics[name]

        if name not in self.topics:
            raise KeyError(name)
        await self.change(change)

    async def set_topic_configs(self, topic: TopicState, configs: dict[str, str]) -> None:
        """Replace a topic's explicit configs; readers see them at once, no restart."""

        def change() -> None:
            rec = self.meta.topics.get(topic.name)
            if rec is None:
                raise KeyError(topic.name)
            rec.configs = dict(configs)

        await self.change(change)
        log.info("topic %s configs now %s", topic.name, configs)

    async def add_partitions(self, topic: TopicState, count: int) -> None:
        old = len(topic.partitions)

        def change() -> None:
            rec = self.meta.topics.get(topic.name)
            if rec is None:
                raise KeyError(topic.name)
            rec.partitions = max(rec.partitions, count)

        await self.change(change)
        log.info("topic %s grew from %d to %d partitions", topic.name, old, count)
