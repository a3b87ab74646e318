-- title = "Tokens per signing key per day"
-- description = """
-- Gateway requests grouped by the kid (signing key id) of the token that made them, per day: how
-- many distinct tokens and requests, and the key's registry scope and status. A consumer (MSA) key
-- signing tokens used against enterprise services, a compromised or unknown key, or a retired key
-- that keeps appearing are the Storm-0558 key-misuse pattern. Tokens that could not be decoded
-- show kid NULL.
-- """
-- requires = ["token_events", "tokens"]
-- tags = ["tokens", "keys", "storm-0558"]
-- [params.since]
-- type = "date"
-- description = "First day included (UTC)."
-- default = 1970-01-01
SELECT
    e.event_date AS day,
    t.kid,
    t.key_scope,
    t.key_status,
    count(DISTINCT e.token_fingerprint) AS tokens,
    count(*) AS requests,
    count(DISTINCT e.client_ip) AS ips
FROM token_events e
LEFT JOIN tokens t USING (token_fingerprint)
WHERE e.event_date >= strftime($since, '%Y-%m-%d')
GROUP BY e.event_date, t.kid, t.key_scope, t.key_status
ORDER BY day, kid NULLS LAST
