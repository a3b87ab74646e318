-- title = "First-seen client apps"
-- description = """
-- When each client app first appeared anywhere in the lake (sign-ins by app id, mailbox operations
-- by ClientAppId or AppId), who used it first, and how widely it has been used since. Apps first
-- seen at or after `since` are listed, newest last: a new app reading mail across many mailboxes is
-- the pattern that exposed Storm-0558.
-- """
-- requires = ["signins", "mail_events"]
-- tags = ["app", "baseline", "storm-0558"]
-- [params.since]
-- type = "timestamp"
-- description = "List apps first seen at or after this time (UTC)."
-- default = 1970-01-01T00:00:00Z
WITH uses AS (
    SELECT app_id AS client_app_id, event_time, 'signins' AS source_table, user_principal_name AS principal, event_id
    FROM signins WHERE app_id IS NOT NULL
    UNION ALL
    SELECT coalesce(client_app_id, app_id), event_time, 'mail_events', coalesce(user_id, mailbox_owner_upn), event_id
    FROM mail_events WHERE coalesce(client_app_id, app_id) IS NOT NULL
), firsts AS (
    SELECT client_app_id,
           arg_min(source_table, (event_time, source_table, event_id)) AS first_table,
           arg_min(principal, (event_time, source_table, event_id)) AS first_principal,
           min(event_time) AS first_seen,
           max(event_time) AS last_seen,
           count(*) FILTER (WHERE source_table = 'signins') AS signins,
           count(*) FILTER (WHERE source_table = 'mail_events') AS mail_events,
           count(DISTINCT principal) AS principals
    FROM uses
    GROUP BY client_app_id
)
SELECT client_app_id, first_seen, first_table, first_principal, last_seen, signins, mail_events, principals
FROM firsts
WHERE first_seen >= $since
ORDER BY first_seen, client_app_id
