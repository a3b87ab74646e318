-- title = "Successful sign-ins to Exchange without mail activity"
-- description = """
-- Successful sign-ins to a resource (Exchange Online by default) whose token (unique token id) and
-- session never appear in the mail audit. Useful both ways: a token obtained and never used for
-- mail may be a harvested credential; many of them from one app or IP is token farming. Read the
-- result against the mail audit's coverage: a mailbox without MailItemsAccessed auditing (E3
-- before 2023, throttled mailboxes) shows no activity either.
-- """
-- requires = ["signins", "mail_events"]
-- tags = ["signins", "mail", "coverage"]
-- [params.resource_id]
-- type = "string"
-- description = "Resource application id the sign-in was for (Office 365 Exchange Online by default)."
-- default = "00000002-0000-0ff1-ce00-000000000000"
-- [params.since]
-- type = "timestamp"
-- description = "Only sign-ins at or after this time (UTC): set it to the start of the mail audit's coverage."
-- default = 1970-01-01T00:00:00Z
SELECT
    s.event_time,
    s.user_principal_name,
    s.app_id,
    s.app_display_name,
    s.ip_address,
    s.unique_token_id,
    s.session_id,
    s.event_id
FROM signins s
WHERE s.result_code = 0
  AND lower(s.resource_id) = lower($resource_id)
  AND s.event_time >= $since
  AND NOT EXISTS (SELECT 1 FROM mail_events m WHERE m.unique_token_id = s.unique_token_id)
  AND NOT EXISTS (SELECT 1 FROM mail_events m WHERE s.session_id IS NOT NULL AND m.aad_session_id = s.session_id)
ORDER BY s.event_time, s.event_id
