-- title = "A user's timeline across all tables"
-- description = """
-- Everything the lake knows about one user, in time order: sign-ins, mailbox operations (as actor
-- or as mailbox owner), gateway requests made with tokens whose upn claim is the user, and
-- detection findings about them. `action` is the sign-in result, mail operation, HTTP request or
-- detection id; `ref` is the row's id for a pivot back into its table.
-- """
-- requires = ["signins", "mail_events", "token_events", "tokens", "findings"]
-- tags = ["pivot", "user", "timeline"]
-- [params.user]
-- type = "string"
-- description = "User principal name (case-insensitive)."
-- [params.since]
-- type = "timestamp"
-- description = "Start of the window (UTC, inclusive)."
-- default = 1970-01-01T00:00:00Z
-- [params.until]
-- type = "timestamp"
-- description = "End of the window (UTC, exclusive)."
-- default = 9999-12-31T00:00:00Z
WITH events AS (
    SELECT event_time, 'signins' AS source_table,
           'sign-in ' || CASE WHEN result_code = 0 THEN 'ok' ELSE 'failed ' || CAST(result_code AS VARCHAR) END AS action,
           app_id, ip_address AS ip, coalesce(resource_display_name, resource_id) AS detail, event_id AS ref
    FROM signins WHERE user_principal_name = lower($user)
    UNION ALL
    SELECT event_time, 'mail_events', operation, coalesce(client_app_id, app_id), client_ip,
           'mailbox ' || coalesce(mailbox_owner_upn, '?') || coalesce(' items ' || CAST(item_count AS VARCHAR), ''), event_id
    FROM mail_events WHERE user_id = lower($user) OR mailbox_owner_upn = lower($user)
    UNION ALL
    SELECT e.event_time, 'token_events', coalesce(e.method, '?') || ' ' || coalesce(e.host, '') || coalesce(e.path, ''),
           t.appid, e.client_ip, 'token ' || substr(e.token_fingerprint, 1, 12) || ' kid ' || coalesce(t.kid, '?'), e.event_id
    FROM token_events e JOIN tokens t USING (token_fingerprint) WHERE t.upn = lower($user)
    UNION ALL
    SELECT event_time, 'findings', detection_id, NULL, NULL, severity || ' ' || coalesce(status, ''), finding_id
    FROM findings WHERE lower(principal) = lower($user)
)
SELECT event_time, source_table, action, app_id, ip, detail, ref
FROM events
WHERE event_time >= $since AND event_time < $until
ORDER BY event_time, source_table, ref
