-- id = "session_never_created"
-- title = "Mailbox accessed in an Entra session that no sign-in created"
-- severity = "high"
-- status = "stable"
-- description = """
-- Every token Entra ID issues on behalf of a user belongs to a session, and every sign-in that
-- creates or refreshes it carries the session id. A mail audit record's AppAccessContext.AADSessionId
-- that no sign-in of any type ever carried (up to the last access) points to a token minted outside
-- Entra ID. Coverage as in token_never_issued: alert only where the sign-in logs in the lake reach
-- from the token's issue time (minus issue_skew_minutes; missing_issued_at_hours before the first
-- access when IssuedAtTime is missing) to the first access, because a token issued in that window
-- came with a sign-in carrying its session; elsewhere 'inconclusive' (informational). One finding
-- per session id.
-- """
-- mitre = ["T1606.001", "T1550.001", "T1114.002"]
-- references = [
--   "https://learn.microsoft.com/en-us/entra/identity/authentication/how-to-authentication-track-linkable-identifiers",
--   "https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema",
--   "https://github.com/LETHAL-FORENSICS/Microsoft-Analyzer-Suite",
-- ]
-- false_positives = [
--   "Non-interactive sign-in logs not ingested: refreshes within a long-lived session then leave no trace. Ingest every sign-in type.",
--   "Exports that drop the session id column (some portal CSV downloads): the session cannot be matched; check signins.session_id is populated for the source.",
-- ]
-- requires = ["mail_events", "signins"]
-- lookback_days = 1
-- [params]
-- issue_skew_minutes = 5
-- missing_issued_at_hours = 24
WITH coverage AS (
    SELECT min(event_time) AS signins_from, max(event_time) AS signins_to, count(*) AS signins_total
    FROM signins
),
uses AS (
    SELECT
        lower(m.aad_session_id) AS session_key,
        min(m.aad_session_id) AS aad_session_id,
        min(m.event_time) AS first_event,
        max(m.event_time) AS last_event,
        min(coalesce(m.token_issued_at, m.event_time - INTERVAL {{ missing_issued_at_hours }} HOUR)) AS issued_from,
        min(m.token_issued_at) AS token_issued_at,
        count(*) AS events,
        count(DISTINCT m.unique_token_id) AS distinct_unique_token_ids,
        min(m.unique_token_id) AS unique_token_id_min,
        min(m.organization_id) AS organization_id,
        min(coalesce(m.mailbox_owner_upn, m.user_id)) AS mailbox,
        count(DISTINCT coalesce(m.mailbox_owner_upn, m.user_id)) AS mailboxes,
        min(m.user_id) AS user_id,
        min(m.client_app_id) AS client_app_id,
        min(m.app_id) AS app_id,
        min(m.client_info_string) AS client_info_string,
        min(m.client_ip) AS client_ip_min,
        max(m.client_ip) AS client_ip_max,
        count(DISTINCT m.client_ip) AS distinct_ips,
        min(m.token_tenant_id) AS token_tenant_id
    FROM mail_events m
    WHERE m.aad_session_id IS NOT NULL
      AND m.aad_session_id <> ''
      AND m.operation NOT IN ('UserLoggedIn', 'UserLoginFailed')
      AND m.event_time >= {{ window_start }} AND m.event_time < {{ window_end }}
    GROUP BY lower(m.aad_session_id)
),
created AS (
    SELECT u.session_key, count(*) AS signins
    FROM uses u
    JOIN signins s ON lower(s.session_id) = u.session_key
    WHERE s.event_time <= u.last_event
    GROUP BY u.session_key
),
judged AS (
    SELECT
        u.*,
        c.signins_from,
        c.signins_to,
        c.signins_total,
        CASE
            WHEN c.signins_from <= u.issued_from - INTERVAL {{ issue_skew_minutes }} MINUTE
                 AND c.signins_to >= u.first_event THEN 'alert'
            ELSE 'inconclusive'
        END AS outcome
    FROM uses u
    CROSS JOIN coverage c
    LEFT JOIN created k ON k.session_key = u.session_key
    WHERE k.session_key IS NULL
)
SELECT
    'session_never_created' AS detection_id,
    CASE WHEN j.outcome = 'alert' THEN 'high' ELSE 'informational' END AS severity,
    j.first_event AS event_time,
    j.organization_id AS tenant_id,
    j.mailbox AS principal,
    j.session_key AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'reason', CASE WHEN j.outcome = 'alert' THEN 'no_signin_carries_this_session'
                       ELSE 'signin_logs_do_not_cover_the_issue_window' END,
        'aad_session_id', j.aad_session_id,
        'token_issued_at', j.token_issued_at,
        'coverage_needed_from', j.issued_from - INTERVAL {{ issue_skew_minutes }} MINUTE,
        'signins_cover_from', j.signins_from,
        'signins_cover_until', j.signins_to,
        'signins_in_lake', j.signins_total,
        'organization_id', j.organization_id,
        'mailbox', j.mailbox,
        'mailboxes', j.mailboxes,
        'user_id', j.user_id,
        'client_app_id', j.client_app_id,
        'app_id', j.app_id,
        'client_info_string', j.client_info_string,
        'client_ip_min', j.client_ip_min,
        'client_ip_max', j.client_ip_max,
        'distinct_client_ips', j.distinct_ips,
        'unique_token_id_min', j.unique_token_id_min,
        'distinct_unique_token_ids', j.distinct_unique_token_ids,
        'token_tenant_id', j.token_tenant_id,
        'events', j.events,
        'first_event', j.first_event,
        'last_event', j.last_event
    ) AS VARCHAR) AS evidence,
    j.outcome AS outcome
FROM judged j
