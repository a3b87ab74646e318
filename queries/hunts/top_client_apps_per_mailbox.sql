-- title = "Top client apps per mailbox"
-- description = """
-- For each mailbox, the client apps (ClientAppId, else AppId) that performed the given operation
-- most often, with items touched, distinct IPs and the time span. An app in a mailbox's list that
-- appears nowhere else, or that tops a mailbox it never touched before, deserves a look.
-- """
-- requires = ["mail_events"]
-- tags = ["mail", "app", "baseline"]
-- [params.top]
-- type = "int"
-- description = "Apps kept per mailbox."
-- default = 3
-- [params.operation]
-- type = "string"
-- description = "Mailbox operation counted; empty for every operation."
-- default = "MailItemsAccessed"
WITH per_app AS (
    SELECT
        mailbox_owner_upn AS mailbox,
        coalesce(client_app_id, app_id) AS client_app_id,
        count(*) AS events,
        CAST(coalesce(sum(item_count), 0) AS BIGINT) AS items,
        count(DISTINCT client_ip) AS ips,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen
    FROM mail_events
    WHERE mailbox_owner_upn IS NOT NULL AND ($operation = '' OR operation = $operation)
    GROUP BY mailbox_owner_upn, coalesce(client_app_id, app_id)
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY mailbox ORDER BY events DESC, items DESC, client_app_id) AS rank
    FROM per_app
)
SELECT mailbox, rank, client_app_id, events, items, ips, first_seen, last_seen
FROM ranked
WHERE rank <= $top
ORDER BY mailbox, rank
