-- title = "Quarantine by reason"
-- description = """
-- Records ingest could not store, grouped by target table and reason, with how many records, from
-- how many files, and when. Quarantined sign-ins or mail records are blind spots for every
-- detection: a reason that keeps growing usually means an export format changed.
-- """
-- requires = ["quarantine"]
-- tags = ["ingest", "coverage"]
-- [params.since]
-- type = "timestamp"
-- description = "Only records quarantined at or after this time (UTC)."
-- default = 1970-01-01T00:00:00Z
SELECT
    target_table,
    reason,
    count(*) AS records,
    count(DISTINCT source_file) AS files,
    string_agg(DISTINCT source_file, ',' ORDER BY source_file) AS file_list,
    min(quarantined_at) AS first_quarantined,
    max(quarantined_at) AS last_quarantined
FROM quarantine
WHERE quarantined_at >= $since
GROUP BY target_table, reason
ORDER BY records DESC, target_table, reason
