"""The log as the uploader's source of synced WAL data (s3stream.api.WalSource)."""

from __future__ import annotations

from collections.abc import Callable

from broker.log.partition import Partition
from s3stream.api import WalSlice
from wal import WriteAheadLog


class UploadSource:
    def __init__(self, wal: WriteAheadLog, held: Callable[[], list[Partition]]) -> None:
        """`held()`: the partitions whose data this broker holds."""
        self.wal = wal
        self._held = held

    @property
    def end_position(self) -> int:
        return self.wal.end_position

    @property
    def durable_position(self) -> int:
        return self.wal.durable_position

    def streams(self) -> list[Partition]:
        return self._held()

    def read_batches(self, run: WalSlice) -> list[bytes]:
        """The bytes of a run of WAL batches: the tail cache, else the WAL. Runs on the
        uploader's worker thread: the cache is only read (an entry the loop evicts
        meanwhile is read from the WAL instead), and the WAL reads are thread-safe."""
        out: list[bytes | None] = [run.cached.get(base) for base in run.base_offsets]
        missing = [i for i, b in enumerate(out) if b is None]
        if missing:
            data = self.wal.read_many([(run.positions[i], run.sizes[i]) for i in missing])
            for i, d in zip(missing, data, strict=True):
                out[i] = d
        return out  # type: ignore[return-value]
