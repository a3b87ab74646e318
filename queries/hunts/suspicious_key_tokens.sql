-- title = "Tokens signed with a compromised, unknown or misplaced key"
-- description = """
-- Decoded tokens whose signing key is marked compromised, is not in the registry, is not published
-- for the token's issuer scope (a consumer key on an enterprise token), or whose signature did not
-- verify; with where and how often each was used. Storm-0558 used a consumer MSA key to sign
-- enterprise tokens: those show key_scope consumer and kid_in_issuer_jwks false.
-- """
-- requires = ["tokens", "token_events"]
-- tags = ["tokens", "keys", "storm-0558"]
SELECT
    t.token_fingerprint,
    t.kid,
    t.key_scope,
    t.key_status,
    t.kid_in_issuer_jwks,
    t.signature_status,
    t.upn,
    t.appid,
    t.tid,
    t.first_seen,
    t.last_seen,
    t.seen_count,
    (SELECT string_agg(DISTINCT e.host, ',' ORDER BY e.host) FROM token_events e WHERE e.token_fingerprint = t.token_fingerprint) AS hosts,
    (SELECT string_agg(DISTINCT e.client_ip, ',' ORDER BY e.client_ip) FROM token_events e WHERE e.token_fingerprint = t.token_fingerprint) AS ips
FROM tokens t
WHERE t.key_status = 'compromised'
   OR t.kid_known = false
   OR t.kid_in_issuer_jwks = false
   OR t.signature_status IN ('invalid', 'unknown_key', 'untrusted_header', 'unsupported_alg')
ORDER BY t.first_seen, t.token_fingerprint
