"""The broker's log: topics and partitions over the WAL, the object tier and caches."""
