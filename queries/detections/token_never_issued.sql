-- id = "token_never_issued"
-- title = "Mailbox accessed with a token that no sign-in issued"
-- severity = "high"
-- status = "stable"
-- description = """
-- How Microsoft found Storm-0558: "the Exchange Online authentication artifacts did not correspond
-- to Azure AD tokens in Microsoft logs". A mail audit record names its token (UniqueTokenId); a
-- token Entra ID issued has a sign-in of some type (interactive, non-interactive, service
-- principal, managed identity, or a UAL UserLoggedIn row) with the same unique token identifier
-- between IssuedAtTime minus issue_skew_minutes and the access. No such sign-in means the token was
-- minted elsewhere. The check is only meaningful where the sign-in logs in the lake cover that
-- window (their earliest event at or before issue time minus the skew, their latest at or after the
-- first access); elsewhere the finding is 'inconclusive' (severity informational), never silence and
-- never an alert. When IssuedAtTime is missing the window starts missing_issued_at_hours before the
-- first access. App-only (client credentials) records whose UniqueTokenId is GUID-shaped are
-- excluded: they are not sign-in token identifiers and would only produce noise. One finding per
-- unique token id.
-- """
-- mitre = ["T1606.001", "T1550.001", "T1114.002"]
-- references = [
--   "https://www.microsoft.com/en-us/security/blog/2023/07/14/analysis-of-storm-0558-techniques-for-unauthorized-email-access/",
--   "https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema",
--   "https://learn.microsoft.com/en-us/entra/identity/authentication/how-to-authentication-track-linkable-identifiers",
-- ]
-- false_positives = [
--   "Non-interactive or service-principal sign-in logs not ingested: refresh-token redemptions then have no matching sign-in. Ingest every sign-in type before trusting alerts.",
--   "Tokens minted by Microsoft services on behalf of the user (e.g. GetAccessTokenForResource in OWA) may not map 1:1 to a sign-in record.",
--   "Sign-in logs with a gap in the middle of the covered range (coverage is judged on the earliest and latest sign-in only): check the retention report.",
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
        m.unique_token_id,
        min(m.event_time) AS first_event,
        max(m.event_time) AS last_event,
        min(coalesce(m.token_issued_at, m.event_time - INTERVAL {{ missing_issued_at_hours }} HOUR)) AS issued_from,
        min(m.token_issued_at) AS token_issued_at,
        count(*) AS events,
        count(DISTINCT m.operation) AS operations,
        min(m.operation) AS operation_min,
        min(m.organization_id) AS organization_id,
        min(coalesce(m.mailbox_owner_upn, m.user_id)) AS mailbox,
        min(m.user_id) AS user_id,
        min(m.client_app_id) AS client_app_id,
        min(m.app_id) AS app_id,
        min(m.client_info_string) AS client_info_string,
        min(m.client_ip) AS client_ip_min,
        max(m.client_ip) AS client_ip_max,
        count(DISTINCT m.client_ip) AS distinct_ips,
        min(m.aad_session_id) AS aad_session_id,
        min(m.token_tenant_id) AS token_tenant_id,
        min(m.token_object_id) AS token_object_id
    FROM mail_events m
    WHERE m.unique_token_id IS NOT NULL
      AND m.unique_token_id <> ''
      AND NOT regexp_matches(m.unique_token_id, '^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')
      AND m.event_time >= {{ window_start }} AND m.event_time < {{ window_end }}
    GROUP BY m.unique_token_id
),
issued AS (
    SELECT u.unique_token_id, count(*) AS signins
    FROM uses u
    JOIN signins s ON s.unique_token_id = u.unique_token_id
    WHERE s.event_time >= u.issued_from - INTERVAL {{ issue_skew_minutes }} MINUTE
      AND s.event_time <= u.last_event
    GROUP BY u.unique_token_id
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
    LEFT JOIN issued i ON i.unique_token_id = u.unique_token_id
    WHERE i.unique_token_id IS NULL
)
SELECT
    'token_never_issued' AS detection_id,
    CASE WHEN j.outcome = 'alert' THEN 'high' ELSE 'informational' END AS severity,
    j.first_event AS event_time,
    j.organization_id AS tenant_id,
    j.mailbox AS principal,
    j.unique_token_id AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'reason', CASE WHEN j.outcome = 'alert' THEN 'no_signin_issued_this_token'
                       ELSE 'signin_logs_do_not_cover_the_issue_window' END,
        'unique_token_id', j.unique_token_id,
        'token_issued_at', j.token_issued_at,
        'searched_from', j.issued_from - INTERVAL {{ issue_skew_minutes }} MINUTE,
        'searched_until', j.last_event,
        'signins_cover_from', j.signins_from,
        'signins_cover_until', j.signins_to,
        'signins_in_lake', j.signins_total,
        'organization_id', j.organization_id,
        'mailbox', j.mailbox,
        'user_id', j.user_id,
        'client_app_id', j.client_app_id,
        'app_id', j.app_id,
        'client_info_string', j.client_info_string,
        'client_ip_min', j.client_ip_min,
        'client_ip_max', j.client_ip_max,
        'distinct_client_ips', j.distinct_ips,
        'aad_session_id', j.aad_session_id,
        'token_tenant_id', j.token_tenant_id,
        'token_object_id', j.token_object_id,
        'events', j.events,
        'operations', j.operations,
        'operation_min', j.operation_min,
        'first_event', j.first_event,
        'last_event', j.last_event
    ) AS VARCHAR) AS evidence,
    j.outcome AS outcome
FROM judged j
