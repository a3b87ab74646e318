-- id = "storm0558_infrastructure"
-- title = "Traffic from Storm-0558 infrastructure, or its OWA REST client string on mailbox reads"
-- severity = "high"
-- status = "stable"
-- description = """
-- Matches the indicators table against what we log: a sign-in (signins.ip_address), a mailbox
-- operation (mail_events.client_ip) or a request carrying a token (token_events.client_ip) from an
-- IP of indicator_type 'ip', inside that indicator's valid_from/valid_until window (the shipped
-- Storm-0558 IPs carry Microsoft's first/last-seen days; the same address outside its window is
-- probably someone else by now); and MailItemsAccessed records whose ClientInfoString equals an
-- indicator of type client_info_string (Client=REST;Client=RESTSystem;; - the actor's OWA REST
-- scripts), inside its window. Null window bounds are open. One finding per IP and principal, and
-- per client string and principal. Storm-0558 user agents are ordinary browser strings and are
-- deliberately not matched here (use a hunt).
-- """
-- mitre = ["T1090.003", "T1114.002", "T1550.001"]
-- references = [
--   "https://www.microsoft.com/en-us/security/blog/2023/07/14/analysis-of-storm-0558-techniques-for-unauthorized-email-access/",
--   "https://www.wiz.io/blog/storm-0558-compromised-microsoft-key-enables-authentication-of-countless-micr",
--   "https://www.cisa.gov/news-events/cybersecurity-advisories/aa23-193a",
-- ]
-- false_positives = [
--   "Shared SoftEther/VPN exit nodes and re-assigned hosting addresses: an IP match inside the window is strong, not proof; check the token and the mailbox activity from it.",
--   "Legitimate REST clients can produce Client=REST;Client=RESTSystem;; too: a client-string match alone is medium severity; look at the app id, IP and whether the token was issued (no-issuance detections).",
-- ]
-- requires = ["signins", "mail_events", "token_events", "tokens", "indicators"]
-- lookback_days = 0
-- [params]
-- window_slack_hours = 0   # widen every indicator window by this much on both sides
WITH token_owner AS (
    SELECT token_fingerprint, min(tid) AS tid, min(upn) AS upn, min(appid) AS appid
    FROM tokens
    GROUP BY token_fingerprint
),
seen AS (
    SELECT
        'signins' AS source,
        event_time,
        tenant_id,
        coalesce(user_principal_name, service_principal_id, app_id) AS principal,
        ip_address AS ip,
        CAST(NULL AS VARCHAR) AS token_fingerprint,
        app_id,
        user_agent AS client
    FROM signins
    WHERE ip_address IS NOT NULL
    UNION ALL
    SELECT
        'mail_events' AS source,
        event_time,
        organization_id AS tenant_id,
        coalesce(mailbox_owner_upn, user_id) AS principal,
        client_ip AS ip,
        CAST(NULL AS VARCHAR) AS token_fingerprint,
        coalesce(client_app_id, app_id) AS app_id,
        client_info_string AS client
    FROM mail_events
    WHERE client_ip IS NOT NULL
    UNION ALL
    SELECT
        'token_events' AS source,
        e.event_time,
        o.tid AS tenant_id,
        o.upn AS principal,
        e.client_ip AS ip,
        e.token_fingerprint,
        o.appid AS app_id,
        e.user_agent AS client
    FROM token_events e
    LEFT JOIN token_owner o ON o.token_fingerprint = e.token_fingerprint
    WHERE e.client_ip IS NOT NULL
),
ip_hits AS (
    SELECT s.*, i.campaign, i.valid_from, i.valid_until, i.reason, i.source AS indicator_source
    FROM seen s
    JOIN indicators i
      ON i.indicator_type = 'ip'
     AND i.value = s.ip
     AND (i.valid_from IS NULL OR s.event_time >= i.valid_from - INTERVAL {{ window_slack_hours }} HOUR)
     AND (i.valid_until IS NULL OR s.event_time <= i.valid_until + INTERVAL {{ window_slack_hours }} HOUR)
),
string_hits AS (
    SELECT
        m.event_time,
        m.organization_id AS tenant_id,
        coalesce(m.mailbox_owner_upn, m.user_id) AS principal,
        m.client_ip,
        coalesce(m.client_app_id, m.app_id) AS app_id,
        m.mail_access_type,
        i.value AS indicator,
        i.campaign,
        i.valid_from,
        i.valid_until,
        i.source AS indicator_source
    FROM mail_events m
    JOIN indicators i
      ON i.indicator_type = 'client_info_string'
     AND i.value = m.client_info_string
     AND (i.valid_from IS NULL OR m.event_time >= i.valid_from - INTERVAL {{ window_slack_hours }} HOUR)
     AND (i.valid_until IS NULL OR m.event_time <= i.valid_until + INTERVAL {{ window_slack_hours }} HOUR)
    WHERE m.operation = 'MailItemsAccessed'
)
SELECT
    'storm0558_infrastructure' AS detection_id,
    'high' AS severity,
    min(h.event_time) AS event_time,
    min(h.tenant_id) AS tenant_id,
    h.principal,
    'ip|' || h.ip || '|' || coalesce(h.principal, '-') AS entity_key,
    CASE WHEN count(DISTINCT h.token_fingerprint) = 1 THEN min(h.token_fingerprint) END AS token_fingerprint,
    CAST(json_object(
        'match', 'ip',
        'ip', h.ip,
        'campaign', min(h.campaign),
        'indicator_valid_from', min(h.valid_from),
        'indicator_valid_until', max(h.valid_until),
        'indicator_reason', min(h.reason),
        'indicator_source', min(h.indicator_source),
        'first_event', min(h.event_time),
        'last_event', max(h.event_time),
        'events', count(*),
        'sources', string_agg(DISTINCT h.source, ', ' ORDER BY h.source),
        'app_ids', string_agg(DISTINCT h.app_id, ', ' ORDER BY h.app_id),
        'clients', string_agg(DISTINCT h.client, ' | ' ORDER BY h.client),
        'tokens', count(DISTINCT h.token_fingerprint)
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM ip_hits h
GROUP BY h.ip, h.principal
UNION ALL
SELECT
    'storm0558_infrastructure' AS detection_id,
    'medium' AS severity,
    min(s.event_time) AS event_time,
    min(s.tenant_id) AS tenant_id,
    s.principal,
    'client_info_string|' || s.indicator || '|' || coalesce(s.principal, '-') AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'match', 'client_info_string',
        'client_info_string', s.indicator,
        'campaign', min(s.campaign),
        'indicator_valid_from', min(s.valid_from),
        'indicator_valid_until', max(s.valid_until),
        'indicator_source', min(s.indicator_source),
        'first_event', min(s.event_time),
        'last_event', max(s.event_time),
        'events', count(*),
        'client_ips', string_agg(DISTINCT s.client_ip, ', ' ORDER BY s.client_ip),
        'app_ids', string_agg(DISTINCT s.app_id, ', ' ORDER BY s.app_id),
        'access_types', string_agg(DISTINCT s.mail_access_type, ', ' ORDER BY s.mail_access_type)
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM string_hits s
GROUP BY s.indicator, s.principal
