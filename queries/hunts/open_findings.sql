-- title = "Open findings by severity"
-- description = """
-- Detection findings not resolved by a user, most severe first: status new (first run) or seen
-- (again in later runs), with hit counts and first/last run. `min_severity` drops the lower levels.
-- """
-- requires = ["findings"]
-- tags = ["findings", "triage"]
-- [params.min_severity]
-- type = "string"
-- description = "Lowest severity listed: informational, low, medium, high or critical."
-- default = "low"
WITH ranked AS (
    SELECT *,
           CASE severity WHEN 'critical' THEN 5 WHEN 'high' THEN 4 WHEN 'medium' THEN 3 WHEN 'low' THEN 2 ELSE 1 END AS severity_rank
    FROM findings
)
SELECT severity, detection_id, principal, event_time, status, hit_count, first_seen, last_seen, entity_key, finding_id
FROM ranked
WHERE coalesce(status, 'new') <> 'resolved-by-user'
  AND severity_rank >= CASE lower($min_severity) WHEN 'critical' THEN 5 WHEN 'high' THEN 4 WHEN 'medium' THEN 3 WHEN 'low' THEN 2 WHEN 'informational' THEN 1 ELSE error('min_severity must be informational, low, medium, high or critical') END
ORDER BY severity_rank DESC, event_time, finding_id
