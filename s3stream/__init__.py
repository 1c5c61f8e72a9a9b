"""The object-store tier: sealed WAL data uploaded to a bucket, read back through caches.

api (what the tier works on: streams, not Kafka partitions, and what it needs from
the log above it); store (the interface) with local_store and s3_store behind it;
object_format (what one object looks like); catalog (which objects hold which
offsets, and its snapshot); uploader; block_cache and tail_cache; compaction
(merging and deleting objects).
"""
