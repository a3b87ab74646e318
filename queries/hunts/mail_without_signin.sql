-- title = "Mail access with a token that has no sign-in"
-- description = """
-- Mailbox operations whose token (AppAccessContext.UniqueTokenId) matches no sign-in in the lake.
-- A forged token is never issued by Entra ID, so it has no sign-in record: this is the join
-- Microsoft and CISA describe for Storm-0558. Expect benign hits when sign-in logs do not cover
-- the window (retention, missing non-interactive exports): check `ingest_runs` and the retention
-- report before concluding. Only events at or after `since` are listed.
-- """
-- requires = ["mail_events", "signins"]
-- tags = ["storm-0558", "mail", "signins"]
-- [params.since]
-- type = "timestamp"
-- description = "Only events at or after this time (UTC)."
-- default = 1970-01-01T00:00:00Z
-- [params.operation]
-- type = "string"
-- description = "Mailbox operation to check; empty for every operation."
-- default = "MailItemsAccessed"
SELECT
    m.event_time,
    m.operation,
    m.mailbox_owner_upn,
    m.user_id,
    coalesce(m.client_app_id, m.app_id) AS client_app_id,
    m.client_ip,
    m.unique_token_id,
    m.token_issued_at,
    m.event_id
FROM mail_events m
WHERE m.unique_token_id IS NOT NULL
  AND m.event_time >= $since
  AND ($operation = '' OR m.operation = $operation)
  AND NOT EXISTS (SELECT 1 FROM signins s WHERE s.unique_token_id = m.unique_token_id)
ORDER BY m.event_time, m.event_id
