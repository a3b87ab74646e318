-- title = "Every token seen for a user"
-- description = """
-- One row per token identifier tied to the user: the unique token id (uti) from sign-ins, from the
-- mail audit (AppAccessContext.UniqueTokenId) and from decoded gateway tokens (tokens.uti, or the
-- fingerprint when the token has no uti). Counts show where each token was seen: a token with mail
-- activity or gateway requests but no sign-in is the forged-token signature (Storm-0558), a token
-- with a fingerprint links to tokens / token_events for the decoded header and claims.
-- """
-- requires = ["signins", "mail_events", "tokens"]
-- tags = ["pivot", "user"]
-- [params.user]
-- type = "string"
-- description = "User principal name (case-insensitive), e.g. alice@contoso.com."
WITH seen AS (
    SELECT unique_token_id AS token_id, CAST(NULL AS VARCHAR) AS token_fingerprint, app_id,
           event_time AS first_seen, event_time AS last_seen, 1 AS signins, 0 AS mail_events, 0 AS gateway_requests
    FROM signins
    WHERE user_principal_name = lower($user) AND unique_token_id IS NOT NULL
    UNION ALL
    SELECT unique_token_id, NULL, coalesce(client_app_id, app_id), event_time, event_time, 0, 1, 0
    FROM mail_events
    WHERE (user_id = lower($user) OR mailbox_owner_upn = lower($user)) AND unique_token_id IS NOT NULL
    UNION ALL
    SELECT coalesce(uti, 'sha256:' || token_fingerprint), token_fingerprint, appid, first_seen, last_seen, 0, 0, seen_count
    FROM tokens
    WHERE upn = lower($user)
)
SELECT
    token_id,
    max(token_fingerprint) AS token_fingerprint,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    CAST(sum(signins) AS BIGINT) AS signins,
    CAST(sum(mail_events) AS BIGINT) AS mail_events,
    CAST(sum(gateway_requests) AS BIGINT) AS gateway_requests,
    string_agg(DISTINCT app_id, ',' ORDER BY app_id) AS app_ids
FROM seen
GROUP BY token_id
ORDER BY first_seen, token_id
