-- id = "known_compromised_key"
-- title = "Token signed with a known compromised signing key"
-- severity = "critical"
-- status = "stable"
-- description = """
-- A token whose JOSE header kid or x5t names a key on the indicator list (indicator_type kid, or
-- x5t_hex compared as the base64url x5t a header carries and through the key registry), or whose
-- key the registry marks compromised. Microsoft: the acquired MSA key (kid = x5t =
-- 1LTMzakihiRla_8z2BEJVXeWMqo, SHA-1 thumbprint d4b4cccda9228624656bff33d8110955779632aa) was
-- inactive, so any token signed by it must be considered suspicious, whatever its tenant or
-- audience. An indicator's valid_from/valid_until, when set, bound the token's iat. One finding per
-- token fingerprint.
-- """
-- mitre = ["T1606.001", "T1550.001", "T1552.004"]
-- references = [
--   "https://www.microsoft.com/en-us/security/blog/2023/07/14/analysis-of-storm-0558-techniques-for-unauthorized-email-access/",
--   "https://www.wiz.io/blog/storm-0558-compromised-microsoft-key-enables-authentication-of-countless-micr",
--   "https://msrc.microsoft.com/blog/2023/09/results-of-major-technical-investigations-for-storm-0558-key-acquisition/",
-- ]
-- false_positives = [
--   "Replayed test fixtures or security training material that embed the published Storm-0558 token header: check the client IPs and the signature_status in the evidence.",
-- ]
-- requires = ["tokens", "token_events", "indicators", "signing_keys"]
-- lookback_days = 0
WITH tok AS (
    SELECT
        token_fingerprint,
        min(kid) AS kid,
        min(x5t) AS x5t,
        min(key_scope) AS key_scope,
        max(CASE WHEN key_status = 'compromised' THEN 1 ELSE 0 END) AS key_compromised,
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
key_indicators AS (
    SELECT indicator_type, value, campaign, reason, source, valid_from, valid_until
    FROM indicators
    WHERE indicator_type IN ('kid', 'x5t_hex')
),
thumbprints AS (
    -- x5t_hex indicators in the base64url form a JOSE x5t header carries
    SELECT
        rtrim(replace(replace(to_base64(unhex(lower(value))), '+', '-'), '/', '_'), '=') AS x5t,
        value, campaign, reason, source, valid_from, valid_until
    FROM key_indicators
    WHERE indicator_type = 'x5t_hex' AND regexp_matches(value, '^[0-9A-Fa-f]{40}$')
),
matches AS (
    SELECT t.token_fingerprint, 'kid_indicator' AS matched_by, k.value AS indicator, k.campaign, k.reason, k.source,
           k.valid_from, k.valid_until
    FROM tok t
    JOIN key_indicators k ON k.indicator_type = 'kid' AND (t.kid = k.value OR t.x5t = k.value)
    UNION ALL
    SELECT t.token_fingerprint, 'x5t_indicator' AS matched_by, h.value AS indicator, h.campaign, h.reason, h.source,
           h.valid_from, h.valid_until
    FROM tok t
    JOIN thumbprints h ON t.x5t = h.x5t OR t.kid = h.x5t
    UNION ALL
    SELECT t.token_fingerprint, 'registry_x5t_indicator' AS matched_by, k.value AS indicator, k.campaign, k.reason, k.source,
           k.valid_from, k.valid_until
    FROM tok t
    JOIN signing_keys s ON s.kid = t.kid
    JOIN key_indicators k ON k.indicator_type = 'x5t_hex' AND lower(s.x5t_hex) = lower(k.value)
    UNION ALL
    SELECT t.token_fingerprint, 'registry_status' AS matched_by, t.kid AS indicator, CAST(NULL AS VARCHAR) AS campaign,
           'the key registry marks this kid compromised' AS reason, 'signing_keys' AS source,
           CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS valid_from, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS valid_until
    FROM tok t
    WHERE t.key_compromised = 1
),
hits AS (
    SELECT
        m.token_fingerprint,
        min(m.matched_by) AS matched_by,
        count(DISTINCT m.matched_by) AS match_kinds,
        min(m.indicator) AS indicator,
        min(m.campaign) AS campaign,
        min(m.reason) AS indicator_reason,
        min(m.source) AS indicator_source
    FROM matches m
    JOIN tok t ON t.token_fingerprint = m.token_fingerprint
    WHERE (m.valid_from IS NULL OR coalesce(t.iat, t.first_seen) >= m.valid_from)
      AND (m.valid_until IS NULL OR coalesce(t.iat, t.first_seen) <= m.valid_until)
    GROUP BY m.token_fingerprint
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
        max(e.host) AS host_max,
        min(e.user_agent) AS user_agent
    FROM token_events e
    WHERE e.event_time >= {{ window_start }} AND e.event_time < {{ window_end }}
    GROUP BY e.token_fingerprint
)
SELECT
    'known_compromised_key' AS detection_id,
    'critical' AS severity,
    coalesce(u.first_request, t.first_seen) AS event_time,
    t.tid AS tenant_id,
    coalesce(t.upn, t.oid, t.appid) AS principal,
    t.token_fingerprint AS entity_key,
    t.token_fingerprint AS token_fingerprint,
    CAST(json_object(
        'matched_by', h.matched_by,
        'match_kinds', h.match_kinds,
        'indicator', h.indicator,
        'campaign', h.campaign,
        'indicator_reason', h.indicator_reason,
        'indicator_source', h.indicator_source,
        'kid', t.kid,
        'x5t', t.x5t,
        'key_scope', t.key_scope,
        'iss', t.iss,
        'tid', t.tid,
        'aud', t.aud,
        'appid', t.appid,
        'upn', t.upn,
        'oid', t.oid,
        'iat', t.iat,
        'exp', t.exp,
        'signature_status', t.signature_status,
        'token_first_seen', t.first_seen,
        'token_last_seen', t.last_seen,
        'token_seen_count', t.seen_count,
        'requests_in_window', coalesce(u.requests, 0),
        'first_request', u.first_request,
        'last_request', u.last_request,
        'distinct_client_ips', coalesce(u.distinct_ips, 0),
        'client_ip_min', u.client_ip_min,
        'client_ip_max', u.client_ip_max,
        'host_min', u.host_min,
        'host_max', u.host_max,
        'user_agent', u.user_agent
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM hits h
JOIN tok t ON t.token_fingerprint = h.token_fingerprint
LEFT JOIN usage u ON u.token_fingerprint = t.token_fingerprint
WHERE u.token_fingerprint IS NOT NULL
   OR (coalesce(t.last_seen, t.first_seen) >= {{ window_start }} AND t.first_seen < {{ window_end }})
