"""Prometheus metrics and health checks, served on their own HTTP port.

`--http-listen HOST:PORT` (or its older name `--metrics-listen`) serves, from a thread
(never the event loop), besides the replay API (broker.replay.http):

- `/metrics`: the broker's own registry (not prometheus_client's global one), in the
  Prometheus text format, or OpenMetrics when the scraper asks for it;
- `/healthz`: 200 while the process runs (liveness);
- `/readyz`: 200 once the WAL is recovered and the Kafka listener accepts clients,
  503 before that and from the moment shutdown begins (readiness).

The registry exists whether or not it is served. What it holds:

Requests, by `api` (the ApiKey name in lower case: produce, fetch, join_group, ...):
  strata_requests_total                 requests started
  strata_request_errors_total           requests whose handler raised or that closed the
                                        connection (bad version, malformed, acks=0 failure)
  strata_request_duration_seconds       histogram, from the handler's start to the encoded
                                        response
                                        (for fetch and join_group this includes the park:
                                        a long poll waits up to the client's max wait)
  strata_requests_in_flight             gauge: started and not yet answered; for produce
                                        that is mostly requests waiting for their fsync,
                                        for fetch the parked long polls (queue depth)
  strata_partition_errors_total         per-partition error codes in Produce and Fetch
                                        responses, by `api` and `error` (the code's name)
Data, by `topic` (counters of what happened since this process started):
  strata_topic_bytes_in_total           record-batch bytes appended by Produce (after
                                        validation and deduplication: exactly what the
                                        topic's log grew by, WAL framing excluded)
  strata_topic_records_in_total         records in those batches
  strata_topic_bytes_out_total          record-batch bytes returned by Fetch
The write-ahead log:
  strata_wal_fsync_duration_seconds     histogram of fdatasync calls (group commits)
  strata_wal_sync_bytes                 histogram: WAL bytes each sync made durable
  strata_wal_unsynced_bytes             gauge: appended, not yet durable
  strata_wal_retained_bytes             gauge: bytes in WAL segments still on disk. No
                                        object store exists yet, so nothing is uploaded:
                                        this stands for the bytes not yet uploaded, and
                                        falls only when retention trims whole segments
The event loop (broker.metrics.loop_lag):
  strata_event_loop_lag_seconds         histogram: how late a timer re-armed every 50 ms
                                        fires (actual minus scheduled wake-up), i.e. how
                                        long something held the loop that every request
                                        then waited for
  strata_gc_frozen_objects              gauge: objects gc.freeze() took out of the
                                        collector's sight once start-up was done
Fetch sessions (KIP-227, broker.fetch_sessions; computed at scrape time):
  strata_fetch_sessions, strata_fetch_session_partitions
                                        gauges: sessions cached, partitions they hold
  strata_fetch_sessions_created_total, strata_fetch_session_evictions_total
  strata_fetch_session_requests_total   fetches by `mode`: sessionless, full, incremental,
                                        error
  strata_fetch_session_errors_total     by `error`: fetch_session_id_not_found,
                                        invalid_fetch_session_epoch
The tail cache:
  strata_tail_cache_hits_total, strata_tail_cache_misses_total (hit ratio = hits /
  (hits + misses)), strata_tail_cache_bytes, strata_tail_cache_max_bytes
Partitions and groups (computed at scrape time, on the event loop):
  strata_topics, strata_partitions      internal topics included
  strata_leader_partitions              partitions this broker leads (all of them while
                                        Strata runs as a single broker)
  strata_partition_high_watermark       by topic and partition
  strata_consumer_groups                by `state` (Empty, Stable, PreparingRebalance, ...)
  strata_group_rebalances_total         rebalances started
  strata_consumer_group_committed_offset, strata_consumer_group_lag
                                        by group, topic and partition; lag is the high
                                        watermark minus the committed offset (records)
Share groups (KIP-932, broker.groups.share_state):
  strata_share_partition_in_flight_records, strata_share_partition_start_offset
                                        by group, topic and partition
  strata_share_redeliveries_total       records delivered again
  strata_share_lock_expiries_total      acquisition locks that ran out unacknowledged
  strata_share_delivery_limit_archived_total
                                        records archived at the delivery-count limit
The log cleaner of compacted topics (broker.log.cleaner):
  strata_log_cleaner_dirty_ratio        by topic and partition (led here): dirty bytes over
                                        cleanable bytes, what min.cleanable.dirty.ratio is
                                        compared with (computed at scrape time)
  strata_log_cleaner_runs_total, strata_log_cleaner_aborted_total, strata_log_cleaner_failures_total
                                        cleans done, dropped (the partition moved), failed
  strata_log_cleaner_bytes_read_total, strata_log_cleaner_bytes_written_total,
  strata_log_cleaner_dirty_bytes_total, strata_log_cleaner_records_removed_total,
  strata_log_cleaner_seconds_total      what the cleans read, wrote, cleaned, removed, took
  strata_log_cleaner_last_run_timestamp_seconds, strata_log_cleaner_last_duration_seconds
Session replays (`GET /v1/topics/{topic}/records`, broker.replay):
  strata_replay_requests_total          by `outcome`: ok, bad_request, not_found, error
  strata_replay_duration_seconds        histogram of answered replays
  strata_replay_store_bytes_total       bytes replays fetched from the object store (key
                                        indexes and blocks); per replay: the response's
                                        X-Strata-Replay-Bytes header
  strata_replay_store_gets_total        GETs they sent (X-Strata-Replay-Gets)
  strata_replay_records_total           records they returned
Plus prometheus_client's process_* and python_info collectors.

counters.py holds the registry and what the hot path and the WAL count (built first,
so the log reports into it from its start); state.py the families computed at scrape
time from the broker's parts; http.py serves them.

The hot path only touches label-bound children cached per API and per topic, and the
scrape-time values are read from plain attributes. Object-store metrics (uploads,
upload latency, remote reads) do not apply yet: there is no object store until the
s3stream work lands.
"""
