"""The transactional ids this broker knows, as rebuilt from `__transaction_state`.

Each record is keyed by the transactional id and holds its latest metadata (a
tombstone when the id expired). Built before the log, which replays into it at start
and when a state partition moves here; the coordinator applies its own writes once
they are durable.
"""

from __future__ import annotations

import logging

import msgpack

from broker.txn.state import TxnMeta
from protocol.record_codec import decode_records

log = logging.getLogger(__name__)

TRANSACTION_TOPIC = "__transaction_state"


def record(meta: TxnMeta) -> tuple[bytes, bytes]:
    return msgpack.packb(meta.transactional_id), msgpack.packb(meta.as_record())


def tombstone(transactional_id: str) -> tuple[bytes, None]:
    return msgpack.packb(transactional_id), None


class TxnTable:
    def __init__(self) -> None:
        self.metas: dict[str, TxnMeta] = {}
        self._by_producer: dict[int, str] = {}

    def replay(self, batch: bytes) -> None:
        try:
            for r in decode_records(batch):
                if r.key is not None:
                    self.apply(msgpack.unpackb(r.key), r.value)
        except Exception as e:
            log.error("skipping an unreadable batch in %s: %r", TRANSACTION_TOPIC, e)

    def apply(self, transactional_id: str, value: bytes | None) -> None:
        old = self.metas.pop(transactional_id, None)
        if old is not None:
            self._by_producer.pop(old.producer_id, None)
        if value is not None:
            self.put(TxnMeta.from_record(transactional_id, msgpack.unpackb(value)))

    def put(self, meta: TxnMeta) -> None:
        old = self.metas.get(meta.transactional_id)
        if old is not None:
            self._by_producer.pop(old.producer_id, None)
        self.metas[meta.transactional_id] = meta
        self._by_producer[meta.producer_id] = meta.transactional_id

    def of_producer(self, producer_id: int) -> TxnMeta | None:
        txn_id = self._by_producer.get(producer_id)
        return None if txn_id is None else self.metas.get(txn_id)

    def forget(self, transactional_ids: set[str]) -> None:
        """A state partition another broker leads now."""
        for txn_id in transactional_ids:
            old = self.metas.pop(txn_id, None)
            if old is not None:
                self._by_producer.pop(old.producer_id, None)
