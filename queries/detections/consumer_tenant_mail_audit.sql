-- id = "consumer_tenant_mail_audit"
-- title = "Mailbox read with a token from the consumer tenant or a foreign tenant"
-- severity = "critical"
-- status = "stable"
-- description = """
-- MailItemsAccessed audit records carry the tid of the token used (TokenTenantId). An enterprise
-- mailbox read with a token of the Microsoft account consumer tenant
-- (9188040d-6c67-4c5b-b112-36a304b66dad) is the Storm-0558 signature seen from the Exchange side
-- (critical); a token of any other tenant than the mailbox's organization that is not a configured
-- partner tenant (partner_tenants in tokenhunt.toml, or allowed_token_tenants here) is high. This
-- needs no token logging at all: the Purview audit log alone shows it. One finding per mailbox,
-- token tenant and client app, over the run window.
-- """
-- mitre = ["T1606.001", "T1550.001", "T1114.002"]
-- references = [
--   "https://www.wiz.io/blog/storm-0558-compromised-microsoft-key-enables-authentication-of-countless-micr",
--   "https://www.cisa.gov/news-events/cybersecurity-advisories/aa23-193a",
--   "https://github.com/elastic/detection-rules/blob/main/rules/integrations/o365/collection_exchange_excessive_mail_items_accessed.toml",
-- ]
-- false_positives = [
--   "B2B guests and cross-tenant synchronization: a guest from a partner organization reading a shared mailbox carries its home tid; add the partner to partner_tenants.",
--   "Multi-tenant organizations (MTO) after a merger: add the sibling tenants to partner_tenants.",
-- ]
-- requires = ["mail_events"]
-- lookback_days = 0
-- [params]
-- allowed_token_tenants = []     # tenant ids (lower-case) whose tokens may read this organization's mail
SELECT
    'consumer_tenant_mail_audit' AS detection_id,
    CASE WHEN min(h.consumer) = 1 THEN 'critical' ELSE 'high' END AS severity,
    min(h.event_time) AS event_time,
    min(h.organization_id) AS tenant_id,
    min(h.mailbox) AS principal,
    h.entity_key AS entity_key,
    CAST(NULL AS VARCHAR) AS token_fingerprint,
    CAST(json_object(
        'reason', CASE WHEN min(h.consumer) = 1 THEN 'consumer_tenant_token' ELSE 'foreign_tenant_token' END,
        'organization_id', min(h.organization_id),
        'mailbox', min(h.mailbox),
        'user_id', min(h.user_id),
        'token_tenant_id', min(h.token_tenant_id),
        'token_object_id', min(h.token_object_id),
        'client_app_id', min(h.client_app_id),
        'app_id', min(h.app_id),
        'client_info_string', min(h.client_info_string),
        'client_ip_min', min(h.client_ip),
        'client_ip_max', max(h.client_ip),
        'distinct_client_ips', count(DISTINCT h.client_ip),
        'events', count(*),
        'operation_count', sum(coalesce(h.operation_count, 1)),
        'items', sum(h.item_count),
        'mail_access_types', count(DISTINCT h.mail_access_type),
        'first_event', min(h.event_time),
        'last_event', max(h.event_time),
        'unique_token_id_min', min(h.unique_token_id),
        'distinct_unique_token_ids', count(DISTINCT h.unique_token_id),
        'aad_session_id_min', min(h.aad_session_id),
        'token_issued_at_min', min(h.token_issued_at),
        'logon_type_min', min(h.logon_type)
    ) AS VARCHAR) AS evidence,
    'alert' AS outcome
FROM (
    SELECT
        m.*,
        coalesce(m.mailbox_owner_upn, m.user_id) AS mailbox,
        CASE WHEN lower(m.token_tenant_id) = {{ consumer_tenant }} THEN 1 ELSE 0 END AS consumer,
        lower(coalesce(m.organization_id, '')) || '|' || lower(coalesce(m.mailbox_owner_upn, m.user_id, ''))
            || '|' || lower(m.token_tenant_id) || '|' || lower(coalesce(m.client_app_id, m.app_id, '')) AS entity_key
    FROM mail_events m
    WHERE m.operation = 'MailItemsAccessed'
      AND m.event_time >= {{ window_start }} AND m.event_time < {{ window_end }}
      AND m.token_tenant_id IS NOT NULL
      AND (lower(m.token_tenant_id) = {{ consumer_tenant }}
           OR (m.organization_id IS NOT NULL
               AND lower(m.token_tenant_id) <> lower(m.organization_id)
               AND lower(m.token_tenant_id) NOT IN {{ partner_tenants }}
               AND lower(m.token_tenant_id) NOT IN {{ allowed_token_tenants }}))
) h
GROUP BY h.entity_key
