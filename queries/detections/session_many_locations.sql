-- id = "session_many_locations"
-- title = "One Entra session used from several IPs, countries or user agents within an hour"
-- severity = "medium"
-- status = "stable"
-- description = """
-- An Entra session id (signins.session_id, and the same id in Exchange audit records as
-- AppAccessContext.AADSessionId) belongs to one root sign-in on one device. Seen from min_ips or
-- more client IPs, min_countries or more countries, or min_user_agents or more user agents within
-- window_minutes, the session's tokens or cookies are being replayed from elsewhere (token theft,
-- adversary-in-the-middle, pass-the-cookie). IPs come from both tables; countries and user agents
-- only from sign-ins (the mail audit has neither). Only successful sign-ins count. One finding per
-- session id; the evidence lists the places of the first window that crossed a threshold.
-- """
-- mitre = ["T1550.004", "T1539", "T1078.004"]
-- references = [
--   "https://learn.microsoft.com/en-us/entra/identity/authentication/how-to-authentication-track-linkable-identifiers",
--   "https://github.com/elastic/detection-rules/blob/main/rules/integrations/azure/initial_access_entra_id_graph_single_session_from_multiple_addresses.toml",
--   "https://github.com/LETHAL-FORENSICS/Microsoft-Analyzer-Suite",
-- ]
-- false_positives = [
--   "Mobile devices switching between Wi-Fi, cellular and IPv6 privacy addresses (three IPs in an hour is possible): raise min_ips for tenants with many mobile users.",
--   "Split-tunnel or always-on VPNs that move a device between egress points in different countries.",
--   "Several apps on one device sharing the session through the primary refresh token, each with its own user agent: min_user_agents defaults to 4 for that reason.",
-- ]
-- requires = ["signins", "mail_events"]
-- lookback_days = 1
-- [params]
-- min_ips = 3
-- min_countries = 2
-- min_user_agents = 4
-- window_minutes = 60
WITH obs AS (
    SELECT
        session_id,
        event_time,
        tenant_id,
        user_principal_name AS principal,
        ip_address AS ip,
        upper(country) AS country,
        user_agent,
        'signins' AS source
    FROM signins
    WHERE session_id IS NOT NULL AND session_id <> ''
      AND (result_code IS NULL OR result_code = 0)
    UNION ALL
    SELECT
        aad_session_id AS session_id,
        event_time,
        organization_id AS tenant_id,
        coalesce(user_id, mailbox_owner_upn) AS principal,
        client_ip AS ip,
        CAST(NULL AS VARCHAR) AS country,
        CAST(NULL AS VARCHAR) AS user_agent,
        'mail_events' AS source
    FROM mail_events
    WHERE aad_session_id IS NOT NULL AND aad_session_id <> ''
),
candidates AS (
    -- sessions that could cross a threshold at all: the pairwise window below only sees these
    SELECT session_id
    FROM obs
    GROUP BY session_id
    HAVING count(DISTINCT ip) >= {{ min_ips }}
        OR count(DISTINCT country) >= {{ min_countries }}
        OR count(DISTINCT user_agent) >= {{ min_user_agents }}
),
points AS (
    SELECT o.session_id, date_trunc('minute', o.event_time) AS minute, o.ip, o.country, o.user_agent
    FROM obs o
    JOIN candidates c ON c.session_id = o.session_id
    GROUP BY o.session_id, date_trunc('minute', o.event_time), o.ip, o.country, o.user_agent
),
windows AS (
    SELECT
        a.session_id,
        a.minute AS window_start,
        count(DISTINCT b.ip) AS ips,
        count(DISTINCT b.country) AS countries,
        count(DISTINCT b.user_agent) AS user_agents
    FROM points a
    JOIN points b
      ON b.session_id = a.session_id
     AND b.minute >= a.minute
     AND b.minute < a.minute + INTERVAL {{ window_minutes }} MINUTE
    GROUP BY a.session_id, a.minute
    HAVING count(DISTINCT b.ip) >= {{ min_ips }}
        OR count(DISTINCT b.country) >= {{ min_countries }}
        OR count(DISTINCT b.user_agent) >= {{ min_user_agents }}
),
per_session AS (
    SELECT
        session_id,
        min(window_start) AS first_window,
        max(ips) AS peak_ips,
        max(countries) AS peak_countries,
        max(user_agents) AS peak_user_agents,
        count(*) AS windows
    FROM windows
    GROUP BY session_id
),
detail AS (
    SELECT
        s.session_id,
        s.first_window,
        s.peak_ips,
        s.peak_countries,
        s.peak_user_agents,
        s.windows,
        min(o.event_time) AS event_time,
        max(o.event_time) AS last_event,
        min(o.tenant_id) AS tenant_id,
        min(o.principal) AS first_principal,
        count(DISTINCT o.principal) AS principals,
        string_agg(DISTINCT o.principal, ', ' ORDER BY o.principal) AS principal_list,
        string_agg(DISTINCT o.ip, ', ' ORDER BY o.ip) AS ips,
        string_agg(DISTINCT o.country, ', ' ORDER BY o.country) AS countries,
        string_agg(DISTINCT o.user_agent, ' | ' ORDER BY o.user_agent) AS user_agents,
        string_agg(DISTINCT o.source, ', ' ORDER BY o.source) AS sources,
        count(*) AS events
    FROM per_session s
    JOIN obs o
      ON o.session_id = s.session_id
     AND o.event_time >= s.first_window
     AND o.event_time < s.first_window + INTERVAL {{ window_minutes }} MINUTE
    GROUP BY s.session_id, s.first_window, s.peak_ips, s.peak_countries, s.peak_user_agents, s.windows
)
SELECT
    'session_many_locations' AS detection_id,
    CASE WHEN d.peak_countries >= {{ min_countries }} THEN 'high' ELSE 'medium' END AS severity,
    d.event_time,
    d.tenant_id,
    CASE WHEN d.principals <= 1 THEN d.first_principal
         ELSE d.first_principal || ' (+' || CAST(d.principals - 1 AS VARCHAR) || ' more)' END AS principal,
    'session|' || d.session_id AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'session_id', d.session_id,
        'reasons', concat_ws(',',
            CASE WHEN d.peak_ips >= {{ min_ips }} THEN 'ips' END,
            CASE WHEN d.peak_countries >= {{ min_countries }} THEN 'countries' END,
            CASE WHEN d.peak_user_agents >= {{ min_user_agents }} THEN 'user_agents' END),
        'first_window_start', d.first_window,
        'window_minutes', {{ window_minutes }},
        'peak_ips', d.peak_ips,
        'peak_countries', d.peak_countries,
        'peak_user_agents', d.peak_user_agents,
        'windows_over_threshold', d.windows,
        'ips', d.ips,
        'countries', d.countries,
        'user_agents', d.user_agents,
        'principals', d.principal_list,
        'sources', d.sources,
        'events_in_first_window', d.events,
        'last_event_in_first_window', d.last_event
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM detail d
