"""The audit trail as an internal topic (`__audit`, with `--audit-topic`): every audit
event the broker logs is also a record there (key: the principal, value: the event's
JSON), so investigators read who did what with any Kafka consumer. Events are batched
for a moment and appended to a partition this broker leads (in cluster mode each broker
writes its own; a broker that leads none of them keeps the log line only). Writing is
best effort: the log line is the record of truth, a failed append is logged and
counted, never raised into the request that caused the event."""

from __future__ import annotations

import asyncio
import json
import logging

from broker.log.manager import LogManager
from broker.log.topics import TopicState
from protocol import records
from protocol.record_codec import encode_batch

log = logging.getLogger(__name__)

AUDIT_TOPIC = "__audit"
_FLUSH_S = 0.2
_MAX_PENDING = 10_000  # events waiting for a flush; past it the oldest are dropped


class AuditTopic:
    def __init__(self, logs: LogManager, broker_id: int, partitions: int = 1) -> None:
        self._logs = logs
        self._broker_id = broker_id
        self._partitions = partitions
        self._pending: list[tuple[bytes, bytes]] = []
        self._flushing = False
        self.dropped = 0

    def submit(self, event: dict) -> None:
        """Queue one event (called on the event loop, by Audit)."""
        self._pending.append((event.get("principal", "").encode(), json.dumps(event).encode()))
        if len(self._pending) > _MAX_PENDING:
            del self._pending[0]
            self.dropped += 1
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_later(_FLUSH_S, self._start_flush)

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        task.add_done_callback(_seen)

    async def _topic(self) -> TopicState:
        topic = self._logs.topics.get(AUDIT_TOPIC)
        if topic is None:
            try:
                topic = await self._logs.create_topic(
                    AUDIT_TOPIC, self._partitions, {"retention.ms": str(90 * 86_400_000)},
                    internal=True,
                )  # fmt: skip
            except FileExistsError:  # another broker of the cluster was first
                topic = self._logs.topics[AUDIT_TOPIC]
        return topic

    async def _flush(self) -> None:
        try:
            topic = await self._topic()
            ours = [p for p in topic.partitions if p.leading]
            entries, self._pending = self._pending, []
            if not ours or not entries:
                return
            p = ours[self._broker_id % len(ours)]
            batch = encode_batch([v for _, v in entries], keys=[k for k, _ in entries])
            appended = self._logs.append(topic, p, batch, records.validate(batch))
            if appended.wal_end is not None:
                await self._logs.wait_acked(appended.wal_end)
        finally:
            self._flushing = False
            if self._pending:
                self._flushing = True
                asyncio.get_running_loop().call_later(_FLUSH_S, self._start_flush)


def _seen(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("audit events not written to %s: %r", AUDIT_TOPIC, task.exception())
