"""Segment files: named by the logical WAL position of their first byte."""

from __future__ import annotations

import os
from pathlib import Path

SUFFIX = ".wal"


def segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """Base positions of the segment files present, oldest first."""
    bases = []
    for name in os.listdir(directory):
        if name.endswith(SUFFIX) and name[: -len(SUFFIX)].isdigit():
            bases.append(int(name[: -len(SUFFIX)]))
    return sorted(bases)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
