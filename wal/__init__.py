"""The broker's local write-ahead log: one sequential log for all partitions."""

from wal.entry import WalEntry
from wal.log import TrimmedRead, WalFailure, WalFull, WriteAheadLog

__all__ = ["TrimmedRead", "WalEntry", "WalFailure", "WalFull", "WriteAheadLog"]
