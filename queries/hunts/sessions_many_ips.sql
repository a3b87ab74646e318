-- title = "Sessions seen from many IP addresses"
-- description = """
-- Entra sessions (signins.session_id, mail_events.aad_session_id) used from at least `min_ips`
-- distinct client IPs. A session replayed from another network (stolen refresh token or cookie)
-- shows up as one session id with addresses from unrelated networks; mobile users and VPN changes
-- are the usual benign cause, so compare the IPs' networks and the timing.
-- """
-- requires = ["signins", "mail_events"]
-- tags = ["session", "token-replay"]
-- [params.min_ips]
-- type = "int"
-- description = "Minimum distinct IP addresses for a session to be listed."
-- default = 2
WITH uses AS (
    SELECT session_id, ip_address AS ip, user_principal_name AS principal, event_time, 'signins' AS source_table
    FROM signins WHERE session_id IS NOT NULL AND ip_address IS NOT NULL
    UNION ALL
    SELECT aad_session_id, client_ip, coalesce(user_id, mailbox_owner_upn), event_time, 'mail_events'
    FROM mail_events WHERE aad_session_id IS NOT NULL AND client_ip IS NOT NULL
)
SELECT
    session_id,
    count(DISTINCT ip) AS ips,
    string_agg(DISTINCT ip, ',' ORDER BY ip) AS ip_list,
    string_agg(DISTINCT principal, ',' ORDER BY principal) AS principals,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen,
    count(*) FILTER (WHERE source_table = 'signins') AS signins,
    count(*) FILTER (WHERE source_table = 'mail_events') AS mail_events
FROM uses
GROUP BY session_id
HAVING count(DISTINCT ip) >= $min_ips
ORDER BY ips DESC, first_seen, session_id
