-- title = "Signing-key registry timeline"
-- description = """
-- Every signing key in the registry, in the order it was first published: scope (consumer MSA or
-- enterprise), status, when each source first and last listed it and when it left the published
-- JWKS, the certificate's notAfter, and how many tokens in the lake carry the kid. A token count on
-- a retired, compromised or consumer key is where to look next (`tokens_per_kid_per_day`).
-- """
-- requires = ["signing_keys", "tokens"]
-- tags = ["keys", "storm-0558"]
-- [params.kid]
-- type = "string"
-- description = "Only this key id; empty for every key."
-- default = ""
WITH token_counts AS (
    SELECT kid, count(*) AS tokens, min(first_seen) AS first_token, max(last_seen) AS last_token
    FROM tokens WHERE kid IS NOT NULL GROUP BY kid
)
SELECT
    k.kid,
    k.source,
    k.scope,
    k.status,
    k.first_seen,
    k.last_seen,
    k.removed_seen,
    k.cert_not_after,
    k.snapshot_count,
    coalesce(c.tokens, 0) AS tokens,
    c.first_token,
    c.last_token
FROM signing_keys k
LEFT JOIN token_counts c USING (kid)
WHERE $kid = '' OR k.kid = $kid
ORDER BY k.first_seen, k.kid, k.source
