-- id = "consumer_key_enterprise_mailbox"
-- title = "Consumer (MSA) signing key on an enterprise mailbox token"
-- severity = "critical"
-- status = "stable"
-- description = """
-- The Storm-0558 core: a token whose signing key is published only for Microsoft accounts (key
-- scope consumer), or whose key fails the key-issuer rule (the key's issuer with {tenantid}
-- replaced by tid is not the token's iss: EnableAadSigningKeyIssuerValidation), while its tid is an
-- organization tenant, and that token reaches Exchange Online, Outlook or Graph mail. "No Microsoft
-- system signs tokens in this way." Mail reach is the token's audience (Exchange Online, Outlook,
-- or Graph with a Mail.* scope or role) or a logged request to an Outlook host or a Graph mail path
-- within the run window. One finding per token fingerprint.
-- """
-- mitre = ["T1606.001", "T1550.001", "T1114.002"]
-- references = [
--   "https://www.microsoft.com/en-us/security/blog/2023/07/14/analysis-of-storm-0558-techniques-for-unauthorized-email-access/",
--   "https://www.wiz.io/blog/storm-0558-compromised-microsoft-key-enables-authentication-of-countless-micr",
--   "https://github.com/AzureAD/azure-activedirectory-identitymodel-extensions-for-dotnet/blob/dev/src/Microsoft.IdentityModel.Validators/AadTokenValidationParametersExtension.cs",
-- ]
-- false_positives = [
--   "A key registry with a stale or wrong scope for a kid (for example a JWKS snapshot of the consumers endpoint imported as enterprise): check signing_keys.source and scope for the kid before escalating.",
--   "A token with no tid claim that is really a personal Microsoft account token sent to Outlook: the evidence shows tid null; personal accounts use outlook.live.com, not outlook.office365.com.",
-- ]
-- requires = ["tokens", "token_events"]
-- lookback_days = 0
-- [params]
-- exchange_audience_pattern = 'outlook[.]office(365)?[.]com|00000002-0000-0ff1-ce00-000000000000'
-- graph_audience_pattern = 'graph[.]microsoft[.]com|00000003-0000-0000-c000-000000000000'
-- mail_scope_pattern = '(^|[ ,])mail[.]'           # Graph scopes/roles that reach mail (Mail.Read, Mail.ReadWrite, ...)
-- exchange_host_pattern = '^outlook[.]office(365)?[.]com$'
-- graph_host_pattern = '^graph[.]microsoft[.]com$'
-- graph_mail_path_pattern = '/(me|users/[^/]+)/(messages|mailfolders|sendmail)'
WITH tok AS (
    SELECT
        token_fingerprint,
        min(kid) AS kid,
        min(x5t) AS x5t,
        min(key_scope) AS key_scope,
        min(key_status) AS key_status,
        max(CASE WHEN key_issuer_mismatch THEN 1 ELSE 0 END) AS key_issuer_mismatch,
        min(iss) AS iss,
        min(tid) AS tid,
        min(aud) AS aud,
        min(appid) AS appid,
        min(upn) AS upn,
        min(oid) AS oid,
        min(scp) AS scp,
        min(roles) AS roles,
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
usage AS (
    SELECT
        e.token_fingerprint,
        min(e.event_time) AS first_request,
        max(e.event_time) AS last_request,
        count(*) AS requests,
        count(DISTINCT e.client_ip) AS distinct_ips,
        min(e.client_ip) AS client_ip_min,
        max(e.client_ip) AS client_ip_max,
        min(e.user_agent) AS user_agent,
        max(CASE
            WHEN regexp_matches(lower(coalesce(e.host, '')), {{ exchange_host_pattern }}) THEN 1
            WHEN regexp_matches(lower(coalesce(e.host, '')), {{ graph_host_pattern }})
                 AND regexp_matches(lower(coalesce(e.path, '')), {{ graph_mail_path_pattern }}) THEN 1
            ELSE 0 END) AS reached_mail,
        min(CASE
            WHEN regexp_matches(lower(coalesce(e.host, '')), {{ exchange_host_pattern }}) THEN e.host
            WHEN regexp_matches(lower(coalesce(e.host, '')), {{ graph_host_pattern }})
                 AND regexp_matches(lower(coalesce(e.path, '')), {{ graph_mail_path_pattern }}) THEN e.host
            END) AS mail_host
    FROM token_events e
    WHERE e.event_time >= {{ window_start }} AND e.event_time < {{ window_end }}
    GROUP BY e.token_fingerprint
),
suspect AS (
    SELECT
        t.*,
        CASE
            WHEN regexp_matches(lower(coalesce(t.aud, '')), {{ exchange_audience_pattern }}) THEN 1
            WHEN regexp_matches(lower(coalesce(t.aud, '')), {{ graph_audience_pattern }})
                 AND regexp_matches(lower(coalesce(t.scp, '') || ' ' || coalesce(t.roles, '')), {{ mail_scope_pattern }}) THEN 1
            ELSE 0 END AS mail_audience
    FROM tok t
    WHERE (t.key_scope = 'consumer' OR t.key_issuer_mismatch = 1)
      AND lower(coalesce(t.tid, '')) <> {{ consumer_tenant }}
)
SELECT
    'consumer_key_enterprise_mailbox' AS detection_id,
    'critical' AS severity,
    coalesce(u.first_request, s.first_seen) AS event_time,
    s.tid AS tenant_id,
    coalesce(s.upn, s.oid, s.appid) AS principal,
    s.token_fingerprint AS entity_key,
    s.token_fingerprint AS token_fingerprint,
    CAST(json_object(
        'reason', CASE WHEN s.key_scope = 'consumer' THEN 'consumer_scope_key' ELSE 'key_issuer_mismatch' END,
        'kid', s.kid,
        'x5t', s.x5t,
        'key_scope', s.key_scope,
        'key_status', s.key_status,
        'key_issuer_mismatch', (s.key_issuer_mismatch = 1),
        'iss', s.iss,
        'tid', s.tid,
        'aud', s.aud,
        'appid', s.appid,
        'upn', s.upn,
        'oid', s.oid,
        'scp', s.scp,
        'iat', s.iat,
        'exp', s.exp,
        'signature_status', s.signature_status,
        'token_first_seen', s.first_seen,
        'token_last_seen', s.last_seen,
        'token_seen_count', s.seen_count,
        'mail_audience', (s.mail_audience = 1),
        'mail_host', u.mail_host,
        'requests_in_window', coalesce(u.requests, 0),
        'first_request', u.first_request,
        'last_request', u.last_request,
        'distinct_client_ips', coalesce(u.distinct_ips, 0),
        'client_ip_min', u.client_ip_min,
        'client_ip_max', u.client_ip_max,
        'user_agent', u.user_agent
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM suspect s
LEFT JOIN usage u ON u.token_fingerprint = s.token_fingerprint
WHERE (s.mail_audience = 1 OR coalesce(u.reached_mail, 0) = 1)
  AND (u.token_fingerprint IS NOT NULL
       OR (coalesce(s.last_seen, s.first_seen) >= {{ window_start }} AND s.first_seen < {{ window_end }}))
