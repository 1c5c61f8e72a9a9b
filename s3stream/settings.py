"""Settings of the object-store tier, gathered from the broker's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3stream.compaction import CompactionSettings
from s3stream.uploader import UploadSettings


@dataclass(frozen=True)
class ObjectTierSettings:
    upload: UploadSettings = field(default_factory=UploadSettings)
    compaction: CompactionSettings = field(default_factory=CompactionSettings)
    block_cache_bytes: int = 256 * 1024 * 1024
    readahead_bytes: int = 8 * 1024 * 1024
    read_inflight_bytes: int = 64 * 1024 * 1024
    # WAL bytes not yet uploaded at which produce gets a retriable error (backpressure)
    max_backlog_bytes: int = 1024 * 1024 * 1024
    shutdown_upload_timeout_s: float = 30.0

    @property
    def object_mode(self) -> bool:
        return self.upload.object_mode
