-- id = "token_lifetime_anomaly"
-- title = "Token lifetime longer than policy allows, or issued in the future"
-- severity = "medium"
-- status = "stable"
-- description = """
-- Entra ID access tokens live a random 60-90 minutes by default (Configurable token lifetimes), so
-- exp - iat far above that bound, an exp before iat, or an iat/nbf later than the first request
-- that carried the token (beyond the clock skew applied by the tokens view, column iat_in_future)
-- means the token was not minted by the real issuer: a forger picks the claims. Storm-0558 scripts
-- hard-coded tokens and refreshed them, so unusual lifetimes are a cheap, independent tell.
-- One finding per token fingerprint.
-- """
-- mitre = ["T1606.001", "T1550.001"]
-- references = [
--   "https://learn.microsoft.com/en-us/entra/identity-platform/configurable-token-lifetimes",
--   "https://learn.microsoft.com/en-us/entra/identity/conditional-access/concept-continuous-access-evaluation",
--   "https://www.microsoft.com/en-us/security/blog/2023/07/14/analysis-of-storm-0558-techniques-for-unauthorized-email-access/",
-- ]
-- false_positives = [
--   "Continuous access evaluation (CAE) capable clients receive long-lived access tokens (up to 28 hours): raise max_lifetime_seconds or allow-list those app ids in exempt_app_ids.",
--   "A TokenLifetimePolicy assigned in the tenant (AccessTokenLifetime up to 1 day): set max_lifetime_seconds to the policy value.",
--   "Gateway hosts with a badly drifting clock make iat look like the future: check the gateway's NTP before anything else.",
-- ]
-- requires = ["tokens"]
-- lookback_days = 0
-- [params]
-- max_lifetime_seconds = 7200
-- exempt_app_ids = []             # app ids (lower-case) allowed long-lived tokens, e.g. CAE clients
SELECT
    'token_lifetime_anomaly' AS detection_id,
    CASE WHEN f.iat_in_future OR f.lifetime_seconds < 0 THEN 'high' ELSE 'medium' END AS severity,
    f.first_seen AS event_time,
    f.tid AS tenant_id,
    coalesce(f.upn, f.oid, f.appid) AS principal,
    f.token_fingerprint AS entity_key,
    f.token_fingerprint AS token_fingerprint,
    CAST(json_object(
        'reasons', concat_ws(',',
            CASE WHEN f.lifetime_seconds > {{ max_lifetime_seconds }} THEN 'lifetime_above_bound' END,
            CASE WHEN f.lifetime_seconds < 0 THEN 'exp_before_iat' END,
            CASE WHEN f.iat_in_future THEN 'issued_in_future' END),
        'lifetime_seconds', f.lifetime_seconds,
        'max_lifetime_seconds', {{ max_lifetime_seconds }},
        'iat', f.iat,
        'nbf', f.nbf,
        'exp', f.exp,
        'token_first_seen', f.first_seen,
        'token_last_seen', f.last_seen,
        'requests', f.seen_count,
        'alg', f.alg,
        'kid', f.kid,
        'iss', f.iss,
        'tid', f.tid,
        'aud', f.aud,
        'appid', f.appid,
        'upn', f.upn,
        'signature_status', f.signature_status
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM (
    SELECT
        token_fingerprint,
        min(alg) AS alg,
        min(kid) AS kid,
        min(iss) AS iss,
        min(tid) AS tid,
        min(aud) AS aud,
        min(appid) AS appid,
        min(upn) AS upn,
        min(oid) AS oid,
        min(iat) AS iat,
        min(nbf) AS nbf,
        min(exp) AS exp,
        min(lifetime_seconds) AS lifetime_seconds,
        coalesce(max(CASE WHEN iat_in_future THEN 1 ELSE 0 END), 0) = 1 AS iat_in_future,
        min(signature_status) AS signature_status,
        min(first_seen) AS first_seen,
        max(last_seen) AS last_seen,
        sum(seen_count) AS seen_count
    FROM tokens
    WHERE parse_error IS NULL
    GROUP BY token_fingerprint
) f
WHERE (f.lifetime_seconds > {{ max_lifetime_seconds }} OR f.lifetime_seconds < 0 OR f.iat_in_future)
  AND lower(coalesce(f.appid, '')) NOT IN {{ exempt_app_ids }}
