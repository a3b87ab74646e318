-- id = "bulk_mailbox_access"
-- title = "Bulk or throttled mailbox access, or one client reading many mailboxes"
-- severity = "medium"
-- status = "stable"
-- description = """
-- Two collection patterns in MailItemsAccessed. (1) Volume: an aggregated record with
-- OperationCount >= min_operation_count, or IsThrottled = True - Exchange stops auditing
-- MailItemsAccessed for a mailbox for 24 hours after more than 1,000 records in 24 hours, so a
-- throttled mailbox is both bulk reading and a blind spot. One finding per mailbox and day.
-- (2) Spread: one client - the same client app from the same IP, or the same Entra session
-- (AADSessionId) - reading more than max_mailboxes distinct mailboxes within window_minutes
-- (sliding, starting at each access). One finding per client and day. Forged-token scripts
-- (Storm-0558 downloaded mail of many users through OWA REST) show both.
-- """
-- mitre = ["T1114.002", "T1530"]
-- references = [
--   "https://github.com/elastic/detection-rules/blob/main/rules/integrations/o365/collection_exchange_excessive_mail_items_accessed.toml",
--   "https://github.com/splunk/security_content/blob/develop/detections/cloud/o365_multiple_mailboxes_accessed_via_api.yml",
--   "https://learn.microsoft.com/en-us/purview/audit-log-investigate-accounts",
--   "https://www.microsoft.com/en-us/security/blog/2023/07/14/analysis-of-storm-0558-techniques-for-unauthorized-email-access/",
-- ]
-- false_positives = [
--   "Outlook cached mode re-syncing a large mailbox after a profile rebuild or a new device (volume on the owner's own mailbox from a known client).",
--   "Backup, archiving, e-discovery and migration services that read every mailbox: add their client ids to exempt_app_ids.",
--   "Admins or assistants with delegate access to several shared mailboxes opening them in quick succession: raise max_mailboxes.",
-- ]
-- requires = ["mail_events"]
-- lookback_days = 1
-- [params]
-- min_operation_count = 100
-- max_mailboxes = 5
-- window_minutes = 10
-- exempt_app_ids = []
WITH mia AS (
    SELECT
        event_id,
        event_time,
        event_date,
        organization_id,
        lower(coalesce(client_app_id, app_id)) AS client_id,
        client_ip,
        aad_session_id,
        lower(coalesce(mailbox_owner_upn, mailbox_guid)) AS mailbox,
        user_id,
        is_throttled,
        operation_count,
        mail_access_type,
        client_info_string
    FROM mail_events
    WHERE operation = 'MailItemsAccessed'
      AND coalesce(mailbox_owner_upn, mailbox_guid) IS NOT NULL
      AND lower(coalesce(client_app_id, app_id, '')) NOT IN {{ exempt_app_ids }}
),
volume AS (
    SELECT
        organization_id,
        mailbox,
        event_date,
        min(event_time) AS event_time,
        max(event_time) AS last_event,
        max(CASE WHEN is_throttled THEN 1 ELSE 0 END) AS throttled,
        sum(CASE WHEN is_throttled THEN 1 ELSE 0 END) AS throttled_records,
        max(operation_count) AS max_operation_count,
        sum(operation_count) AS total_operations,
        count(*) AS records,
        string_agg(DISTINCT client_id, ', ' ORDER BY client_id) AS clients,
        string_agg(DISTINCT client_ip, ', ' ORDER BY client_ip) AS client_ips,
        string_agg(DISTINCT user_id, ', ' ORDER BY user_id) AS users,
        string_agg(DISTINCT mail_access_type, ', ' ORDER BY mail_access_type) AS access_types,
        string_agg(DISTINCT client_info_string, ' | ' ORDER BY client_info_string) AS client_info_strings
    FROM mia
    WHERE coalesce(is_throttled, FALSE) OR operation_count >= {{ min_operation_count }}
    GROUP BY organization_id, mailbox, event_date
),
clients AS (
    SELECT 'app_ip' AS client_kind, client_id || '|' || client_ip AS client_key, *
    FROM mia
    WHERE client_id IS NOT NULL AND client_ip IS NOT NULL
    UNION ALL
    SELECT 'session' AS client_kind, aad_session_id AS client_key, *
    FROM mia
    WHERE aad_session_id IS NOT NULL AND aad_session_id <> ''
),
candidates AS (
    -- only clients that touch enough mailboxes at all go into the pairwise window below
    SELECT client_kind, client_key
    FROM clients
    GROUP BY client_kind, client_key
    HAVING count(DISTINCT mailbox) > {{ max_mailboxes }}
),
touches AS (
    -- first access of each mailbox per client and minute: bounds the pairwise join
    SELECT c.client_kind, c.client_key, c.mailbox, c.event_date, min(c.event_time) AS event_time
    FROM clients c
    JOIN candidates k ON k.client_kind = c.client_kind AND k.client_key = c.client_key
    GROUP BY c.client_kind, c.client_key, c.mailbox, c.event_date, date_trunc('minute', c.event_time)
),
bursts AS (
    SELECT
        a.client_kind,
        a.client_key,
        a.event_date,
        a.event_time AS burst_start,
        count(DISTINCT b.mailbox) AS mailboxes
    FROM touches a
    JOIN touches b
      ON b.client_kind = a.client_kind
     AND b.client_key = a.client_key
     AND b.event_time >= a.event_time
     AND b.event_time < a.event_time + INTERVAL {{ window_minutes }} MINUTE
    GROUP BY a.client_kind, a.client_key, a.event_date, a.event_time
    HAVING count(DISTINCT b.mailbox) > {{ max_mailboxes }}
),
spread AS (
    SELECT
        client_kind,
        client_key,
        event_date,
        min(burst_start) AS event_time,
        max(burst_start) AS last_burst_start,
        max(mailboxes) AS peak_mailboxes,
        count(*) AS burst_windows
    FROM bursts
    GROUP BY client_kind, client_key, event_date
),
spread_detail AS (
    SELECT
        s.client_kind,
        s.client_key,
        s.event_date,
        min(s.event_time) AS event_time,
        max(s.last_burst_start) AS last_burst_start,
        max(s.peak_mailboxes) AS peak_mailboxes,
        max(s.burst_windows) AS burst_windows,
        min(c.organization_id) AS tenant_id,
        count(DISTINCT c.mailbox) AS mailboxes_total,
        string_agg(DISTINCT c.mailbox, ', ' ORDER BY c.mailbox) AS mailbox_list,
        string_agg(DISTINCT c.user_id, ', ' ORDER BY c.user_id) AS users,
        min(c.user_id) AS first_user,
        count(DISTINCT c.user_id) AS user_count,
        string_agg(DISTINCT c.client_id, ', ' ORDER BY c.client_id) AS clients,
        string_agg(DISTINCT c.client_ip, ', ' ORDER BY c.client_ip) AS client_ips,
        string_agg(DISTINCT c.client_info_string, ' | ' ORDER BY c.client_info_string) AS client_info_strings,
        count(*) AS records
    FROM spread s
    JOIN clients c
      ON c.client_kind = s.client_kind
     AND c.client_key = s.client_key
     AND c.event_time >= s.event_time
     AND c.event_time < s.last_burst_start + INTERVAL {{ window_minutes }} MINUTE
    GROUP BY s.client_kind, s.client_key, s.event_date
)
SELECT
    'bulk_mailbox_access' AS detection_id,
    CASE WHEN v.throttled = 1 THEN 'high' ELSE 'medium' END AS severity,
    v.event_time,
    v.organization_id AS tenant_id,
    v.mailbox AS principal,
    'volume|' || coalesce(v.organization_id, '-') || '|' || v.mailbox || '|' || v.event_date AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'pattern', CASE WHEN v.throttled = 1 THEN 'throttled' ELSE 'bulk_volume' END,
        'mailbox', v.mailbox,
        'day', v.event_date,
        'first_record', v.event_time,
        'last_record', v.last_event,
        'records', v.records,
        'throttled_records', v.throttled_records,
        'max_operation_count', v.max_operation_count,
        'total_operations', v.total_operations,
        'min_operation_count', {{ min_operation_count }},
        'client_app_ids', v.clients,
        'client_ips', v.client_ips,
        'acting_users', v.users,
        'access_types', v.access_types,
        'client_info_strings', v.client_info_strings,
        'note', CASE WHEN v.throttled = 1
            THEN 'MailItemsAccessed auditing is throttled for this mailbox for 24 hours: later reads are not logged'
            ELSE 'aggregated record(s) with a high operation count' END
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM volume v
UNION ALL
SELECT
    'bulk_mailbox_access' AS detection_id,
    'high' AS severity,
    d.event_time,
    d.tenant_id,
    CASE WHEN d.user_count <= 1 THEN d.first_user
         ELSE d.first_user || ' (+' || CAST(d.user_count - 1 AS VARCHAR) || ' more)' END AS principal,
    'spread|' || d.client_kind || '|' || d.client_key || '|' || d.event_date AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'pattern', 'many_mailboxes',
        'client_kind', d.client_kind,
        'client', d.client_key,
        'day', d.event_date,
        'first_burst_start', d.event_time,
        'last_burst_start', d.last_burst_start,
        'peak_mailboxes_in_window', d.peak_mailboxes,
        'window_minutes', {{ window_minutes }},
        'max_mailboxes', {{ max_mailboxes }},
        'burst_windows', d.burst_windows,
        'mailboxes_during_bursts', d.mailboxes_total,
        'mailbox_list', d.mailbox_list,
        'acting_users', d.users,
        'client_app_ids', d.clients,
        'client_ips', d.client_ips,
        'client_info_strings', d.client_info_strings,
        'records', d.records
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM spread_detail d
