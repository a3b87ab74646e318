-- title = "All mail access by one client app"
-- description = """
-- Every mailbox operation (MailItemsAccessed and the rest) whose caller is the given app: the
-- ClientAppId, or the AppId when the record has no ClientAppId. The pivot after an unexpected
-- ClientAppId shows up (CISA AA23-193A): which mailboxes, from where, which tokens and sessions.
-- """
-- requires = ["mail_events"]
-- tags = ["pivot", "mail", "app"]
-- [params.app_id]
-- type = "string"
-- description = "Client application id (GUID, case-insensitive)."
-- [params.since]
-- type = "timestamp"
-- description = "Only events at or after this time (UTC)."
-- default = 1970-01-01T00:00:00Z
-- [params.until]
-- type = "timestamp"
-- description = "Only events before this time (UTC)."
-- default = 9999-12-31T00:00:00Z
SELECT
    event_time,
    operation,
    mailbox_owner_upn,
    user_id,
    coalesce(client_app_id, app_id) AS client_app_id,
    client_ip,
    mail_access_type,
    item_count,
    unique_token_id,
    aad_session_id,
    event_id
FROM mail_events
WHERE lower(coalesce(client_app_id, app_id)) = lower($app_id)
  AND event_time >= $since AND event_time < $until
ORDER BY event_time, event_id
