-- id = "key_validity"
-- title = "Enterprise token signed with an expired, unpublished or unknown key"
-- severity = "high"
-- status = "stable"
-- description = """
-- The Storm-0558 key's certificate expired on 2021-04-04 and it had left rotation, yet it signed
-- tokens in 2023: a token issued (iat) after its key's certificate notAfter (key_expired_at_issue),
-- or while the kid was not in the published JWKS (key_outside_jwks_window: before it appeared or
-- after it left, plus tolerance), was not issued by Entra ID. A Microsoft-issued token whose kid no
-- imported JWKS snapshot has ever listed is reported at medium: either the registry is incomplete
-- or the key is not Microsoft's. Only tokens for an organization (tid not the consumer tenant),
-- and the unknown-kid branch only when the key registry holds keys at all and iss is a Microsoft
-- issuer (issuer_pattern). One finding per token fingerprint.
-- """
-- mitre = ["T1606.001", "T1550.001"]
-- references = [
--   "https://www.wiz.io/blog/storm-0558-compromised-microsoft-key-enables-authentication-of-countless-micr",
--   "https://www.rfc-editor.org/rfc/rfc8725",
--   "https://github.com/AzureAD/azure-activedirectory-identitymodel-extensions-for-dotnet/blob/dev/src/Microsoft.IdentityModel.Validators/AadTokenValidationParametersExtension.cs",
-- ]
-- false_positives = [
--   "JWKS snapshots imported with gaps (for example none for months): a kid looks unpublished at iat. Import snapshots at least daily, or raise the registry's window tolerance.",
--   "Tenant-specific or app-specific signing keys (SAML apps with their own certificate, ?appid= JWKS) not imported: their kids look unknown. Import those JWKS documents too.",
-- ]
-- requires = ["tokens", "token_events", "signing_keys"]
-- lookback_days = 0
-- [params]
-- issuer_pattern = '^https://(login[.]microsoftonline[.]com|sts[.]windows[.]net|login[.]windows[.]net|login[.]microsoftonline[.]us)/'
WITH tok AS (
    SELECT
        token_fingerprint,
        min(kid) AS kid,
        min(x5t) AS x5t,
        min(key_scope) AS key_scope,
        min(key_status) AS key_status,
        max(CASE WHEN kid_known THEN 1 ELSE 0 END) AS kid_known,
        max(CASE WHEN key_expired_at_issue THEN 1 ELSE 0 END) AS key_expired_at_issue,
        max(CASE WHEN key_outside_jwks_window THEN 1 ELSE 0 END) AS key_outside_jwks_window,
        min(iss) AS iss,
        min(tid) AS tid,
        min(aud) AS aud,
        min(appid) AS appid,
        min(upn) AS upn,
        min(oid) AS oid,
        min(iat) AS iat,
        min(exp) AS exp,
        min(signature_status) AS signature_status,
        min(first_seen) AS first_seen,
        max(last_seen) AS last_seen,
        sum(seen_count) AS seen_count
    FROM tokens
    WHERE parse_error IS NULL
    GROUP BY token_fingerprint
),
registry AS (
    SELECT count(*) AS registry_keys FROM signing_keys
),
keyinfo AS (
    SELECT kid, min(cert_not_before) AS cert_not_before, max(cert_not_after) AS cert_not_after,
           min(first_seen) AS published_from, max(last_seen) AS published_until, min(scope) AS scope
    FROM signing_keys
    GROUP BY kid
),
flagged AS (
    SELECT
        t.*,
        r.registry_keys,
        CASE
            WHEN t.key_expired_at_issue = 1 THEN 'key_expired_at_issue'
            WHEN t.key_outside_jwks_window = 1 THEN 'key_outside_jwks_window'
            ELSE 'unknown_kid'
        END AS reason
    FROM tok t
    CROSS JOIN registry r
    WHERE lower(coalesce(t.tid, '')) <> {{ consumer_tenant }}
      AND (t.key_expired_at_issue = 1
           OR t.key_outside_jwks_window = 1
           OR (t.kid IS NOT NULL AND t.kid_known = 0 AND r.registry_keys > 0
               AND regexp_matches(lower(coalesce(t.iss, '')), {{ issuer_pattern }})))
),
usage AS (
    SELECT
        e.token_fingerprint,
        min(e.event_time) AS first_request,
        max(e.event_time) AS last_request,
        count(*) AS requests,
        count(DISTINCT e.client_ip) AS distinct_ips,
        min(e.client_ip) AS client_ip_min,
        max(e.client_ip) AS client_ip_max,
        min(e.host) AS host_min,
        max(e.host) AS host_max
    FROM token_events e
    WHERE e.event_time >= {{ window_start }} AND e.event_time < {{ window_end }}
    GROUP BY e.token_fingerprint
)
SELECT
    'key_validity' AS detection_id,
    CASE WHEN f.reason = 'unknown_kid' THEN 'medium' ELSE 'high' END AS severity,
    coalesce(u.first_request, f.first_seen) AS event_time,
    f.tid AS tenant_id,
    coalesce(f.upn, f.oid, f.appid) AS principal,
    f.token_fingerprint AS entity_key,
    f.token_fingerprint AS token_fingerprint,
    CAST(json_object(
        'reason', f.reason,
        'key_expired_at_issue', (f.key_expired_at_issue = 1),
        'key_outside_jwks_window', (f.key_outside_jwks_window = 1),
        'kid_known', (f.kid_known = 1),
        'kid', f.kid,
        'x5t', f.x5t,
        'key_scope', f.key_scope,
        'key_status', f.key_status,
        'cert_not_before', k.cert_not_before,
        'cert_not_after', k.cert_not_after,
        'published_from', k.published_from,
        'published_until', k.published_until,
        'registry_keys', f.registry_keys,
        'iss', f.iss,
        'tid', f.tid,
        'aud', f.aud,
        'appid', f.appid,
        'upn', f.upn,
        'iat', f.iat,
        'exp', f.exp,
        'signature_status', f.signature_status,
        'token_first_seen', f.first_seen,
        'token_last_seen', f.last_seen,
        'token_seen_count', f.seen_count,
        'requests_in_window', coalesce(u.requests, 0),
        'distinct_client_ips', coalesce(u.distinct_ips, 0),
        'client_ip_min', u.client_ip_min,
        'client_ip_max', u.client_ip_max,
        'host_min', u.host_min,
        'host_max', u.host_max
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM flagged f
LEFT JOIN keyinfo k ON k.kid = f.kid
LEFT JOIN usage u ON u.token_fingerprint = f.token_fingerprint
WHERE u.token_fingerprint IS NOT NULL
   OR (coalesce(f.last_seen, f.first_seen) >= {{ window_start }} AND f.first_seen < {{ window_end }})
