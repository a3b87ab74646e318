-- id = "unsafe_token_alg_or_header"
-- title = "Token with an unsafe algorithm, a key-location header or a failed signature check"
-- severity = "high"
-- status = "stable"
-- description = """
-- A bearer token presented to one of our applications is signed with alg none or an HMAC algorithm
-- (HS256/384/512: the algorithm-confusion trick that turns a public RSA key into an HMAC secret),
-- carries a header that tells the verifier where to fetch the key (jku, an embedded jwk, x5u), or
-- failed the offline signature check at ingest (invalid, untrusted_header, unsupported_alg).
-- Entra ID and MSA access tokens are always RS256 with a kid from the published JWKS and never
-- carry jku/jwk/x5u, so any of these on a Microsoft-issued token is a forgery attempt. One finding
-- per token fingerprint; the evidence lists every reason and where the token was presented.
-- """
-- mitre = ["T1606.001", "T1550.001"]
-- references = [
--   "https://www.rfc-editor.org/rfc/rfc8725#section-3.1",
--   "https://www.rfc-editor.org/rfc/rfc8725#section-3.10",
--   "https://nvd.nist.gov/vuln/detail/CVE-2015-9235",
--   "https://nvd.nist.gov/vuln/detail/CVE-2022-23540",
-- ]
-- false_positives = [
--   "Security testing of our own APIs with crafted tokens (pen tests, fuzzers): the token is still worth a look, close it as resolved-by-user.",
--   "Internal services that legitimately use HS256 tokens with a shared secret and log them through the same gateway: scope the gateway logs or add their issuer to a hunt instead.",
--   "signature_status invalid on a token whose key rotated after ingest is not possible: the check runs at ingest against the keys known then; unknown_key is deliberately not flagged here.",
-- ]
-- requires = ["tokens", "token_events"]
-- lookback_days = 0
SELECT
    'unsafe_token_alg_or_header' AS detection_id,
    CASE WHEN f.alg_none OR f.sig_invalid THEN 'critical' ELSE 'high' END AS severity,
    f.first_seen AS event_time,
    f.tid AS tenant_id,
    coalesce(f.upn, f.oid, f.appid) AS principal,
    f.token_fingerprint AS entity_key,
    f.token_fingerprint AS token_fingerprint,
    CAST(json_object(
        'reasons', f.reasons,
        'alg', f.alg,
        'kid', f.kid,
        'typ', f.typ,
        'jku', f.jku,
        'x5u', f.x5u,
        'has_jwk_header', f.has_jwk_header,
        'signature_status', f.signature_status,
        'iss', f.iss,
        'tid', f.tid,
        'aud', f.aud,
        'appid', f.appid,
        'upn', f.upn,
        'token_first_seen', f.first_seen,
        'token_last_seen', f.last_seen,
        'requests', f.seen_count,
        'client_ips', u.client_ips,
        'hosts', u.hosts,
        'user_agents', u.user_agents
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM (
    SELECT
        t.*,
        concat_ws(',',
            CASE WHEN t.alg_none THEN 'alg_none' END,
            CASE WHEN t.alg_hmac THEN 'alg_hmac' END,
            CASE WHEN t.jku IS NOT NULL THEN 'jku_header' END,
            CASE WHEN t.has_jwk_header THEN 'jwk_header' END,
            CASE WHEN t.x5u IS NOT NULL THEN 'x5u_header' END,
            CASE WHEN t.signature_status IN ('invalid', 'untrusted_header', 'unsupported_alg')
                 THEN 'signature_' || t.signature_status END
        ) AS reasons,
        t.signature_status = 'invalid' AS sig_invalid
    FROM (
        SELECT
            token_fingerprint,
            min(alg) AS alg,
            min(kid) AS kid,
            min(typ) AS typ,
            min(jku) AS jku,
            min(x5u) AS x5u,
            coalesce(max(CASE WHEN has_jwk_header THEN 1 ELSE 0 END), 0) = 1 AS has_jwk_header,
            min(signature_status) AS signature_status,
            min(iss) AS iss,
            min(tid) AS tid,
            min(aud) AS aud,
            min(appid) AS appid,
            min(upn) AS upn,
            min(oid) AS oid,
            min(first_seen) AS first_seen,
            max(last_seen) AS last_seen,
            sum(seen_count) AS seen_count,
            lower(coalesce(min(alg), '')) = 'none' AS alg_none,
            upper(coalesce(min(alg), '')) LIKE 'HS%' AS alg_hmac
        FROM tokens
        WHERE parse_error IS NULL
        GROUP BY token_fingerprint
    ) t
    WHERE t.alg_none
       OR t.alg_hmac
       OR t.jku IS NOT NULL
       OR t.has_jwk_header
       OR t.x5u IS NOT NULL
       OR t.signature_status IN ('invalid', 'untrusted_header', 'unsupported_alg')
) f
LEFT JOIN (
    SELECT
        token_fingerprint,
        string_agg(DISTINCT client_ip, ', ' ORDER BY client_ip) AS client_ips,
        string_agg(DISTINCT host, ', ' ORDER BY host) AS hosts,
        count(DISTINCT user_agent) AS user_agents
    FROM token_events
    GROUP BY token_fingerprint
) u ON u.token_fingerprint = f.token_fingerprint
