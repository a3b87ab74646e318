"""Mail-audit completeness: is MailItemsAccessed history there to search, for every tenant?

Without premium audit licences Storm-0558's victims had no MailItemsAccessed records; and auditing
stops for 24 hours once a mailbox reaches the throttling threshold. This check lists throttled
mailboxes, mailbox-days at the threshold, and own tenants with no MailItemsAccessed at all.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Iterable

from pipeline.retention.model import MailAudit, Reason, count_text
from pipeline.retention.policy import Policy

CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
MIA_THROTTLE_RECORDS = 1000  # MailItemsAccessed records per mailbox and day that trigger throttling
MAX_LISTED = 50  # rows listed per mail-audit table (the counts are always complete)


def mail_audit(con: Any, policy: Policy, as_of: date, partner_tenants: Iterable[str] = ()) -> MailAudit:
    """MailItemsAccessed completeness: throttled mailboxes, threshold days, tenants without it."""
    out = MailAudit()
    day = as_of.isoformat()
    mailbox = "coalesce(mailbox_owner_upn, user_id, mailbox_guid, '(unknown)')"
    rows = con.execute(
        f"""SELECT coalesce(lower(organization_id), '(unknown)') AS tenant, {mailbox} AS mailbox,
                   count(DISTINCT event_date) AS days, min(event_date), max(event_date), count(*)
            FROM mail_events WHERE is_throttled AND event_date <= ?
            GROUP BY 1, 2 ORDER BY days DESC, mailbox""",
        [day],
    ).fetchall()
    out.throttled_total = len(rows)
    out.throttled = [dict(zip(("tenant", "mailbox", "days", "first", "last", "records"), r)) for r in rows[:MAX_LISTED]]
    rows = con.execute(
        f"""SELECT coalesce(lower(organization_id), '(unknown)') AS tenant, {mailbox} AS mailbox, event_date, count(*) AS n
            FROM mail_events WHERE operation = 'MailItemsAccessed' AND event_date <= ?
            GROUP BY 1, 2, 3 HAVING count(*) >= {MIA_THROTTLE_RECORDS} ORDER BY n DESC, event_date""",
        [day],
    ).fetchall()
    out.heavy_days_total = len(rows)
    out.heavy_days = [dict(zip(("tenant", "mailbox", "date", "records"), r)) for r in rows[:MAX_LISTED]]

    tenants: dict[str, dict[str, Any]] = {}
    for tenant, events, mia in con.execute(
        """SELECT lower(organization_id), count(*), count(*) FILTER (WHERE operation = 'MailItemsAccessed')
           FROM mail_events WHERE organization_id IS NOT NULL AND event_date <= ? GROUP BY 1""",
        [day],
    ).fetchall():
        tenants[tenant] = {"tenant": tenant, "seen_in": ["mail_events"], "mail_events": events, "mail_items_accessed": mia}
    # Own tenants from sign-ins: a member or app signing in to its home tenant (outbound
    # cross-tenant sign-ins and the consumer tenant are not ours to audit).
    skip = {CONSUMER_TENANT} | {t.lower() for t in partner_tenants}
    for (tenant,) in con.execute(
        """SELECT DISTINCT lower(tenant_id) FROM signins
           WHERE tenant_id IS NOT NULL AND (home_tenant_id IS NULL OR lower(home_tenant_id) = lower(tenant_id))
             AND event_date <= ?""",
        [day],
    ).fetchall():
        if tenant in skip:
            continue
        entry = tenants.setdefault(tenant, {"tenant": tenant, "seen_in": [], "mail_events": 0, "mail_items_accessed": 0})
        entry["seen_in"].append("signins")
    out.tenants = sorted(tenants.values(), key=lambda t: t["tenant"])

    required = "MailItemsAccessed" in policy.rule("mail_events").required_values
    for t in out.tenants:
        if t["mail_items_accessed"]:
            continue
        where = (
            f"has {count_text(t['mail_events'])} mail audit events but no MailItemsAccessed"
            if t["mail_events"]
            else "appears in sign-ins but has no mail audit events at all"
        )
        out.reasons.append(
            Reason(
                "violation" if required else "warn",
                f"tenant {t['tenant']} {where}: Audit licence or mailbox audit setting missing, or not exported",
            )
        )
    if out.throttled_total:
        names = ", ".join(str(t["mailbox"]) for t in out.throttled[:5]) + (", ..." if out.throttled_total > 5 else "")
        out.reasons.append(
            Reason(
                "warn",
                f"{out.throttled_total} mailbox(es) had MailItemsAccessed auditing throttled (IsThrottled; after "
                f"{MIA_THROTTLE_RECORDS:,} records in 24 h, 24 h go unaudited): {names}",
            )
        )
    if out.heavy_days_total:
        out.reasons.append(
            Reason(
                "warn",
                f"{out.heavy_days_total} mailbox-day(s) reached {MIA_THROTTLE_RECORDS:,} MailItemsAccessed records, "
                "where auditing stops for 24 hours",
            )
        )
    return out
