-- id = "new_mail_client_app"
-- title = "Mailbox items read by a client app new to the tenant (CISA AA23-193A)"
-- severity = "high"
-- status = "stable"
-- description = """
-- The detection that caught Storm-0558: an FCEB agency saw MailItemsAccessed events "with an
-- unexpected ClientAppID and AppID" - an app that did not normally access mailbox items in their
-- environment. For every MailItemsAccessed Bind in the run window, the client (ClientAppId, else
-- AppId) is new when the same tenant (OrganizationId) has no Bind from it in the previous
-- baseline_days days. Microsoft first-party mail clients are excluded (first_party_app_ids). The
-- verdict needs the baseline: an event is judged only when the lake holds mail_events of that
-- tenant from at least baseline_days before it. Events without that history give one
-- 'inconclusive' finding per tenant (a new lake has no baseline) instead of alerts or silence.
-- One alert per tenant and client app (re-runs and later reads by the same app dedupe). A nightly
-- run reads lookback_days of history: baseline_days above lookback_days - 7 needs a larger
-- lookback_days in this header, or every event turns inconclusive.
-- """
-- mitre = ["T1114.002", "T1550.001", "T1606.001"]
-- references = [
--   "https://www.cisa.gov/news-events/cybersecurity-advisories/aa23-193a",
--   "https://github.com/elastic/detection-rules/blob/main/rules/integrations/o365/collection_exchange_mailbox_access_by_unusual_client_app_id.toml",
--   "https://learn.microsoft.com/en-us/troubleshoot/azure/entra/entra-id/governance/verify-first-party-apps-sign-in",
--   "https://learn.microsoft.com/en-us/purview/audit-log-investigate-accounts",
-- ]
-- false_positives = [
--   "A newly deployed mail client, add-in or line-of-business app (CRM, archiving, e-discovery) reading mailboxes: confirm the consent grant, then add its app id to first_party_app_ids in tokenhunt.toml ([detections.new_mail_client_app]).",
--   "A Microsoft first-party app missing from the default list (the list holds the mail-related ids Microsoft documents; it deliberately omits public clients attackers reuse: Azure CLI, Azure PowerShell, Graph Explorer, Microsoft Graph Command Line Tools).",
--   "An app used less often than every baseline_days days (quarterly tooling): raise baseline_days (and lookback_days) and keep that much history in the lake.",
-- ]
-- requires = ["mail_events"]
-- # baseline_days plus a week: a quiet weekend or holiday at the far end of the baseline must not
-- # make a tenant with older history look new (coverage = earliest mail event in what the run reads)
-- lookback_days = 21
-- [params]
-- baseline_days = 14
-- # Client ids of Microsoft first-party apps that read mail in normal use. Names and ids from
-- # Microsoft Learn "Verify first-party Microsoft applications in sign-in reports" (all listed
-- # there) and cross-checked against the Elastic rule above.
-- first_party_app_ids = [
--   "00000002-0000-0ff1-ce00-000000000000",  # Office 365 Exchange Online (OWA's own client id)
--   "d3590ed6-52b3-4102-aeff-aad2292ab01c",  # Microsoft Office (Outlook desktop, Office apps)
--   "5d661950-3475-41cd-a2c3-d671a3162bc1",  # Microsoft Outlook
--   "27922004-5251-4030-b22d-91ecd9a37ea4",  # Outlook Mobile
--   "1fec8e78-bce4-4aaf-ab1b-5451cc387264",  # Microsoft Teams
--   "cc15fd57-2c6c-4117-a88c-83b1d56b4bbe",  # Microsoft Teams Services
--   "5e3ce6c0-2b1f-4285-8d4b-75ee78787346",  # Microsoft Teams Web Client
--   "4765445b-32c6-49b0-83e6-1d93765276ca",  # OfficeHome
--   "4b233688-031c-404b-9a80-a4f3f2351f90",  # Office.com
--   "00000006-0000-0ff1-ce00-000000000000",  # Microsoft Office 365 Portal
--   "0f698dd4-f011-4d23-a33e-b36416dcb1e6",  # OfficeClientService
--   "d9b8ec3a-1e4e-4e08-b3c2-5baf00c0fcb0",  # HxService (Windows Mail and Calendar)
--   "b669c6ea-1adf-453f-b8bc-6d526592b419",  # Focused Inbox
--   "13937bba-652e-4c46-b222-3003f4d1ff97",  # Substrate Context Service
--   "98db8bd6-0cc0-4e67-9de5-f187f1cd1b41",  # Microsoft Substrate Management
--   "35d54a08-36c9-4847-9018-93934c62740c",  # PeoplePredictions
--   "20a11fe0-faa8-4df5-baf2-f965f8f9972e",  # ContactsInferencingEmailProcessor
--   "66a88757-258c-4c72-893c-3e8bed4d6899",  # Office 365 Search Service
--   "94c63fef-13a3-47bc-8074-75af8c65887a",  # Office Delve
--   "93d53678-613d-4013-afc1-62e9e444a0a5",  # Office Online Add-in SSO
--   "f5eaa862-7f08-448c-9c4e-f4047d4d4521",  # FindTime
--   "ae8e128e-080f-4086-b0e3-4c19301ada69",  # Scheduling
--   "2d4d3d8e-2be3-4bef-9f87-7875a61c29de",  # OneNote
--   "91ca2ca5-3b3e-41dd-ab65-809fa3dffffa",  # Sticky Notes API
--   "26a7ee05-5602-4d76-a7ba-eae8b7b67941",  # Windows Search
--   "97cb1f73-50df-47d1-8fb0-0271f2728514",  # Transcript Ingestion
-- ]
WITH binds AS (
    SELECT
        event_id,
        event_time,
        organization_id AS tenant_id,
        lower(coalesce(client_app_id, app_id)) AS client_id,
        client_app_id,
        app_id,
        coalesce(mailbox_owner_upn, mailbox_guid) AS mailbox,
        user_id,
        client_ip,
        client_info_string
    FROM mail_events
    WHERE operation = 'MailItemsAccessed'
      AND mail_access_type = 'Bind'
      AND organization_id IS NOT NULL
      AND coalesce(client_app_id, app_id) IS NOT NULL
      AND (result_status IS NULL OR lower(result_status) IN ('succeeded', 'success', 'true'))
),
history AS (
    -- earliest mail_events the lake holds for each tenant (within what the run reads)
    SELECT organization_id AS tenant_id, min(event_time) AS data_start
    FROM mail_events
    WHERE organization_id IS NOT NULL
    GROUP BY organization_id
),
ordered AS (
    SELECT
        b.*,
        h.data_start,
        lag(b.event_time) OVER (PARTITION BY b.tenant_id, b.client_id ORDER BY b.event_time, b.event_id) AS previous_bind,
        h.data_start <= b.event_time - INTERVAL {{ baseline_days }} DAY AS covered
    FROM binds b
    JOIN history h ON h.tenant_id = b.tenant_id
),
in_window AS (
    SELECT *
    FROM ordered
    WHERE event_time >= {{ window_start }} AND event_time <= {{ window_end }}
),
new_clients AS (
    -- the first Bind of a client with no Bind from it in the baseline_days before
    SELECT tenant_id, client_id, min(event_time) AS first_new
    FROM in_window
    WHERE covered
      AND client_id NOT IN {{ first_party_app_ids }}
      AND (previous_bind IS NULL OR previous_bind < event_time - INTERVAL {{ baseline_days }} DAY)
    GROUP BY tenant_id, client_id
),
alerts AS (
    SELECT
        n.tenant_id,
        n.client_id,
        n.first_new AS event_time,
        min(w.mailbox) AS first_mailbox,
        count(DISTINCT w.mailbox) AS mailboxes,
        string_agg(DISTINCT w.mailbox, ', ' ORDER BY w.mailbox) AS mailbox_list,
        string_agg(DISTINCT w.user_id, ', ' ORDER BY w.user_id) AS users,
        string_agg(DISTINCT w.app_id, ', ' ORDER BY w.app_id) AS app_ids,
        string_agg(DISTINCT w.client_ip, ', ' ORDER BY w.client_ip) AS client_ips,
        string_agg(DISTINCT w.client_info_string, ' | ' ORDER BY w.client_info_string) AS client_info_strings,
        count(*) AS bind_events,
        max(w.event_time) AS last_event,
        min(w.data_start) AS data_start
    FROM new_clients n
    JOIN in_window w ON w.tenant_id = n.tenant_id AND w.client_id = n.client_id AND w.event_time >= n.first_new
    GROUP BY n.tenant_id, n.client_id, n.first_new
),
unjudged AS (
    SELECT
        tenant_id,
        min(event_time) AS event_time,
        max(event_time) AS last_event,
        count(*) AS bind_events,
        count(DISTINCT client_id) AS clients,
        count(DISTINCT CASE
            WHEN client_id NOT IN {{ first_party_app_ids }}
             AND (previous_bind IS NULL OR previous_bind < event_time - INTERVAL {{ baseline_days }} DAY)
            THEN client_id END) AS possibly_new_clients,
        min(data_start) AS data_start
    FROM in_window
    WHERE NOT covered
    GROUP BY tenant_id
)
SELECT
    'new_mail_client_app' AS detection_id,
    'high' AS severity,
    a.event_time,
    a.tenant_id,
    CASE WHEN a.mailboxes <= 1 THEN a.first_mailbox
         ELSE a.first_mailbox || ' (+' || CAST(a.mailboxes - 1 AS VARCHAR) || ' more)' END AS principal,
    a.tenant_id || '|' || a.client_id AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'client_app_id', a.client_id,
        'app_ids', a.app_ids,
        'first_bind', a.event_time,
        'last_bind', a.last_event,
        'bind_events', a.bind_events,
        'mailboxes', a.mailboxes,
        'mailbox_list', a.mailbox_list,
        'acting_users', a.users,
        'client_ips', a.client_ips,
        'client_info_strings', a.client_info_strings,
        'baseline_days', {{ baseline_days }},
        'tenant_history_from', a.data_start,
        'why', 'no MailItemsAccessed Bind from this client app in this tenant in the baseline days before'
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM alerts a
UNION ALL
SELECT
    'new_mail_client_app' AS detection_id,
    'informational' AS severity,
    u.event_time,
    u.tenant_id,
    CAST(NULL AS VARCHAR) AS principal,
    u.tenant_id || '|baseline-incomplete' AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'why', 'the lake does not hold baseline_days of mail_events for this tenant before these events: new client apps cannot be told from known ones',
        'baseline_days', {{ baseline_days }},
        'tenant_history_from', u.data_start,
        'unjudged_bind_events', u.bind_events,
        'unjudged_clients', u.clients,
        'possibly_new_clients', u.possibly_new_clients,
        'unjudged_from', u.event_time,
        'unjudged_until', u.last_event,
        'action', 'ingest at least baseline_days of older Purview audit logs for this tenant, or wait until the lake holds them'
    ) AS VARCHAR) AS evidence,
    'inconclusive' AS outcome
FROM unjudged u
