"""The broker's local write-ahead log: one sequential log for all partitions."""

from wal.entry import WalEntry
from wal.log import WalFailure, WriteAheadLog

__all__ = ["WalEntry", "WalFailure", "WriteAheadLog"]
