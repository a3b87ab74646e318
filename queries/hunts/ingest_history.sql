-- title = "Ingest history"
-- description = """
-- The run record of every committed ingest batch, newest first: file, format, records read,
-- written, duplicate and quarantined, the event-time span it covered and the quality result. The
-- first stop when a hunt finds nothing: did the logs for that window ever arrive?
-- """
-- requires = ["ingest_runs"]
-- tags = ["ingest", "coverage"]
-- [params.since]
-- type = "timestamp"
-- description = "Only batches started at or after this time (UTC)."
-- default = 1970-01-01T00:00:00Z
SELECT
    started_at,
    source_file,
    source_format,
    records_read,
    rows_written,
    duplicates,
    quarantined,
    min_event_time,
    max_event_time,
    quality_status,
    ingest_batch_id
FROM ingest_runs
WHERE started_at >= $since
ORDER BY started_at DESC, ingest_batch_id
