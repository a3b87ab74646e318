-- title = "Activity from indicator IP addresses"
-- description = """
-- Sign-ins, mailbox operations and gateway requests from an IP address in the `indicators` table
-- (type ip), inside the indicator's validity window (valid_from / valid_until; open ends always
-- match). Infrastructure is reassigned over time, which is why a match outside the window is not
-- listed.
-- """
-- requires = ["indicators", "signins", "mail_events", "token_events"]
-- tags = ["indicators", "ip", "storm-0558"]
-- [params.since]
-- type = "timestamp"
-- description = "Only events at or after this time (UTC)."
-- default = 1970-01-01T00:00:00Z
WITH activity AS (
    SELECT event_time, 'signins' AS source_table, ip_address AS ip, user_principal_name AS principal, app_id, event_id
    FROM signins
    UNION ALL
    SELECT event_time, 'mail_events', client_ip, coalesce(user_id, mailbox_owner_upn), coalesce(client_app_id, app_id), event_id
    FROM mail_events
    UNION ALL
    SELECT e.event_time, 'token_events', e.client_ip, t.upn, t.appid, e.event_id
    FROM token_events e LEFT JOIN tokens t USING (token_fingerprint)
)
SELECT a.event_time, a.source_table, a.ip, a.principal, a.app_id, i.campaign, i.reason, a.event_id
FROM activity a
JOIN indicators i
  ON i.indicator_type = 'ip' AND i.value = a.ip
 AND (i.valid_from IS NULL OR a.event_time >= i.valid_from)
 AND (i.valid_until IS NULL OR a.event_time <= i.valid_until)
WHERE a.event_time >= $since
ORDER BY a.event_time, a.source_table, a.event_id
