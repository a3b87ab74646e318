"""Deterministic sample logs: one realistic forged-token (Storm-0558-style) scenario at Contoso.

Run ``python -m pipeline.samplegen --out sample_logs [--seed 558] [--scale 1.0]`` or call
``generate(out_dir, seed=558, scale=1.0)``; both write the same bytes for the same seed and scale.
``scale`` multiplies the users (and, above 1, up to 10x the requests per token); output streams to
disk a simulated day at a time, at roughly 40-50k records/s of CPU after ~1.5 s of key derivation.

The scenario (six weeks, 2026-10-10 .. 2026-11-20, tenant Contoso ``2b8f4c1e-7d3a-4e59-9c06-5a1f8e2d3b47``):

* Benign: ~25 members (x ``scale``) sign in to Exchange Online and Microsoft Graph from Outlook,
  OWA, Outlook Mobile, Teams and Office: interactively (Graph /beta JSON, Extractor-Suite layout)
  or, far more often, by silent refresh (Log Analytics portal CSV of AADNonInteractiveUserSignInLogs).
  One member a day is on call (weekends too), so no day lacks sign-ins or mailbox reads. Two service
  principals sign in weekly; three B2B guests from Fabrikam use Teams (home tenant != resource
  tenant, ``b2bCollaboration``); three personal (MSA) accounts use Outlook.com with consumer-tenant
  tokens. Every successful interactive or app-only sign-in issues an RS256 token (``uti`` = the
  sign-in's ``uniqueTokenIdentifier``, ``sid`` = its ``sessionId``) that the gateway log shows on
  several requests; every successful user sign-in authorizes that user's MailItemsAccessed / Send /
  New-InboxRule events (AppAccessContext carries the sign-in's token id, session id and time).
  Enterprise key A signs until 2026-11-01, then key B (published 2026-10-23): a benign rollover.
* Mail audit (Purview CSV; Sentinel OfficeActivity for four VIP mailboxes) reaches back only three
  weeks while sign-ins and the gateway reach six: the retention report must flag the mail source.
* The attack, Monday-Thursday of the last week, 00:00-09:00 UTC: four tokens signed with the
  CONSUMER key but claiming Contoso (``tid``/``iss``) for ``aud`` https://outlook.office365.com, for
  two victims (megan.bowen, lidia.holloway), from Storm-0558 IOC IPs; one lives 8 hours. Their
  MailItemsAccessed (Bind) events carry a token id and session id that no sign-in issued, a client
  app id never seen in the tenant, ``ClientInfoString`` ``Client=REST;Client=RESTSystem;;`` and
  ``TokenTenantId`` = Contoso.
* Eight deliberately bad records (impossible date, non-GUID id, truncated JSON line, CSV row missing
  a cell, invalid IP, truncated AuditData, invalid month, malformed bearer token); none is
  referenced by another record.

``sample_logs/README.md`` and ``sample_logs/expected.json`` (both written by ``generate``) list every
file, the planted records with their record and line numbers, and the findings a detection run should
produce. Keys are derived from the seed in memory (``keys.py``); only public JWKS are written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.samplegen import world as w
from pipeline.samplegen.keys import SigningKey, build_keys
from pipeline.samplegen.readme import render_readme
from pipeline.samplegen.scenario import ATTACK_PLAN, FILES, PLANTED_RULES, Simulation

DEFAULT_SEED = 558
JWKS_FILE = "jwks/common-discovery-v2.0-keys.json"
JWKS_HISTORY_FILE = "jwks/common-jwks-history.json"
INDICATORS_FILE = "indicators/scenario_indicators.csv"

__all__ = ["DEFAULT_SEED", "generate"]


def _z(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _snapshot_dates() -> list[datetime]:
    first = datetime(2026, 10, 9, 4, 0, tzinfo=w.START.tzinfo)
    return [first + timedelta(weeks=i) for i in range(7)]  # 2026-10-09 .. 2026-11-20, weekly


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8", newline="\n")


def _write_jwks(out: Path, keys: dict[str, SigningKey], seed: int) -> None:
    """The current common JWKS and a weekly snapshot history shaped like realdata/jwks_panva_wellknown."""
    order = [keys["enterprise-a"], keys["enterprise-b"], keys["consumer"]]
    _write_json(out / JWKS_FILE, {"keys": [k.jwk() for k in order]})
    snapshots = []
    for when in reversed(_snapshot_dates()):  # newest first, as the panva history is
        listed = [k.jwk() for k in order if k.first_published <= when]
        snapshots.append({"commit": hashlib.sha1(f"samplegen:{seed}:{when.isoformat()}".encode()).hexdigest(),
                          "commit_date": when.isoformat(), "jwks": {"keys": listed}})
    _write_json(out / JWKS_HISTORY_FILE, {
        "source": "tokenhunt samplegen (synthetic snapshots of https://login.microsoftonline.com/common/discovery/v2.0/keys)",
        "note": "each entry = the JWKS as it stood on that date; keys are derived from the generator seed",
        "snapshots": snapshots,
    })


def _write_indicators(out: Path) -> None:
    """Scenario indicators, in the columns of schemas/indicators.toml, windowed to the attack week."""
    buf = io.StringIO()
    cols = ["indicator_type", "value", "campaign", "scope", "valid_from", "valid_until", "reason", "source"]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    week_from, week_until = "2026-11-14T00:00:00Z", "2026-11-20T23:59:59Z"
    for ip, window in w.ATTACKER_IPS.items():
        writer.writerow(["ip", ip, "Storm-0558 (sample scenario)", "", week_from, week_until,
                         f"Storm-0558 SoftEther proxy; Microsoft's own window {window}; reused by the sample attack",
                         "Microsoft Threat Intelligence 2023-07-14 (detections.md 1.1); tokenhunt samplegen"])
    writer.writerow(["client_info_string", w.ATTACK_CLIENT_INFO, "Storm-0558 (sample scenario)", "", week_from, week_until,
                     "ClientInfoString of the actor's OWA REST scripts", "Microsoft Threat Intelligence 2023-07-14"])
    for ua in w.ATTACK_USER_AGENTS:
        writer.writerow(["user_agent", ua, "Storm-0558 (sample scenario)", "", week_from, week_until,
                         "User-Agent observed by Microsoft",
                         "Microsoft Threat Intelligence 2023-07-14"])
    path = out / INDICATORS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def _expected_findings(sim: Simulation, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """What a detection run over these files should report; ``detection`` names today's query id."""
    forged = sim.forged
    fps = [f["token_fingerprint"] for f in forged]
    mail_ids = sim.attack_mail_ids
    victims = sorted({f["victim"] for f in forged})
    gw = sum(f["gateway_requests"] for f in forged)
    planted = summary["planted_bad_records"]
    reach = {k: v.get("reach_days") for k, v in summary["files"].items() if "reach_days" in v}
    return [
        {"id": "consumer_key_enterprise_token", "detection": "consumer_key_enterprise_mailbox",
         "source": "gateway (tokens, token_events)", "count": len(fps), "unit": "token",
         "what": "token signed by a consumer-scoped key (JWKS issuer = the 9188040d tenant) while tid/iss claim Contoso",
         "token_fingerprints": fps, "victims": victims, "gateway_requests": gw},
        {"id": "token_lifetime_over_2h", "detection": "token_lifetime_anomaly", "source": "gateway (tokens)", "count": 1,
         "unit": "token", "what": "exp - iat > 120 minutes (480 minutes); every benign token lives 60-90 minutes",
         "token_fingerprints": [f["token_fingerprint"] for f in forged if f["lifetime_minutes"] > 120]},
        {"id": "gateway_token_never_issued", "detection": "token_never_issued", "source": "gateway + sign-ins",
         "count": len(fps), "unit": "token",
         "what": "Contoso-tenant token whose uti matches no sign-in uniqueTokenIdentifier (consumer-tenant tokens excluded)",
         "token_fingerprints": fps},
        {"id": "mail_token_never_issued", "detection": "token_never_issued", "source": "mail_events + signins",
         "count": len(mail_ids), "unit": "MailItemsAccessed event", "distinct_tokens": len({f["uti"] for f in forged}),
         "what": "MailItemsAccessed whose AppAccessContext.UniqueTokenId matches no sign-in", "event_ids": mail_ids,
         "mailboxes": victims},
        {"id": "mail_session_never_issued", "detection": "session_never_created", "source": "mail_events + signins",
         "count": len(mail_ids), "unit": "MailItemsAccessed event", "distinct_sessions": len({f["sid"] for f in forged}),
         "what": "MailItemsAccessed whose AppAccessContext.AADSessionId matches no sign-in sessionId", "event_ids": mail_ids},
        {"id": "new_client_app_on_mailbox", "detection": "new_mail_client_app", "source": "mail_events",
         "count": len(mail_ids), "unit": "MailItemsAccessed event", "distinct_apps": 1,
         "what": f"MailItemsAccessed with AppId/ClientAppId {w.ATTACK_CLIENT_APP_ID}, never seen in the tenant before; "
                 "with three weeks of mail audit a baseline-hungry rule may also say its baseline is short",
         "event_ids": mail_ids},
        {"id": "client_info_string_indicator", "detection": "storm0558_infrastructure", "source": "mail_events",
         "count": len(mail_ids), "unit": "MailItemsAccessed event", "distinct_principals": len(victims),
         "what": f"ClientInfoString {w.ATTACK_CLIENT_INFO!r} (Storm-0558 scripts), inside the indicator window",
         "event_ids": mail_ids},
        {"id": "ip_indicator", "detection": "storm0558_infrastructure", "source": "gateway + mail_events",
         "count": gw + len(mail_ids), "unit": "request or mailbox event",
         "what": "requests and mailbox events from Storm-0558 IOC IPs; Microsoft's windows for them are in 2023, so "
                 f"only a window-less sweep or the scenario indicators ({INDICATORS_FILE}) match",
         "ip_principal_pairs": sorted({(f["client_ip"], f["victim"]) for f in forged})},
        {"id": "retention_mail_too_short", "detection": "retention report (profile minimal: 30 days, gaps up to 3)",
         "source": "mail_events", "count": 1, "unit": "source",
         "what": "mail audit reaches about 21 days back, sign-ins and gateway 40-42: one source too short",
         "reach_days": reach},
        {"id": "quarantine", "detection": "ingest", "source": "all", "unit": "record",
         "count": sum(p["handling"] == "quarantine" for p in planted),
         "what": "the planted bad records, each quarantined with a reason; nothing else is quarantined"},
        {"id": "token_parse_error", "detection": "ingest (tokens.parse_error)", "source": "gateway", "unit": "token",
         "count": sum(p["handling"] == "token_parse_error" for p in planted),
         "what": "the planted mangled bearer token: kept as a request, flagged as unparseable"},
    ]


NOT_FINDINGS = [
    "consumer (MSA) tokens: consumer key, tid 9188040d-..., aud https://outlook.live.com - a consumer key used in its own scope",
    "B2B guest sign-ins from Fabrikam (homeTenantId != resourceTenantId, crossTenantAccessType b2bCollaboration): "
    "their tokens are Contoso-issued, enterprise-signed, and match a sign-in",
    "enterprise key rollover A -> B on 2026-11-01 (key B first published 2026-10-23): no token uses a key before it is published",
    "app-only tokens of the two service principals (idtyp app, uti matches a servicePrincipal sign-in)",
    "TokenTenantId == OrganizationId on every mailbox event (the forged tokens claim Contoso), so a "
    "'TokenTenantId is foreign or the consumer tenant' rule has no hit here",
    "Event Hub records re-export Graph sign-ins (same id) and OfficeActivity rows re-export Purview rows "
    "(OfficeId == RecordId): they deduplicate, they do not double any count",
    "failed sign-ins (50126, 700082) issue no token and are followed by no token use or mailbox event",
]


def generate(out_dir: str | Path, seed: int = DEFAULT_SEED, scale: float = 1.0) -> dict[str, Any]:
    """Write the scenario into ``out_dir`` and return its summary (also written as ``expected.json``).

    Output streams to disk a simulated day at a time, so memory stays flat as ``scale`` (the number of
    users) grows. The returned dict adds ``elapsed_s`` and ``records_per_s``, which the files omit
    so that they stay byte-identical between runs.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = build_keys(seed)
    sim = Simulation(seed, scale, keys, out)
    sim.run()
    _write_jwks(out, keys, seed)
    _write_indicators(out)

    files: dict[str, Any] = {}
    planted: list[dict[str, Any]] = []
    for key, writer in sim.writers.items():
        info: dict[str, Any] = {"format": FILES[key][1], "description": writer.description, "records": writer.records,
                                "bytes": writer.path.stat().st_size}
        if writer.first_event and writer.last_event:
            info["first_event"] = _z(writer.first_event)
            info["last_event"] = _z(writer.last_event)
            info["reach_days"] = round((w.END - writer.first_event).total_seconds() / 86400, 1)
        files[writer.rel] = info
        planted.extend(writer.planted)
    records_total = sum(f["records"] for f in files.values())
    summary: dict[str, Any] = {
        "generator": "pipeline.samplegen", "seed": seed, "scale": scale,
        "tenant": {"id": w.CONTOSO_TID, "name": w.CONTOSO_NAME, "domain": "contoso.com"},
        "window": {"start": _z(w.START), "end_exclusive": _z(w.END), "days": (w.END - w.START).days},
        "mail_window": {"start": _z(w.MAIL_START), "days": (w.END - w.MAIL_START).days},
        "files": files,
        "records_total": records_total,
        "counts": {"sign_ins": sim.sign_ins, "tokens": sim.tokens, "gateway_requests": sim.gateway_by_kind,
                   "mail": sim.mail},
        "users": {"members": len(sim.members), "guests": len(sim.guests), "consumers": len(sim.consumers),
                  "victims": [sim.members[i].upn for i in w.VICTIM_INDEXES],
                  "vip_mailboxes": [u.upn for u in sim.members if u.vip]},
        "keys": [{"label": k.label, "kid": k.kid, "x5t_hex": k.thumbprint_hex, "scope": k.scope, "issuer": k.issuer,
                  "not_before": _z(k.not_before), "not_after": _z(k.not_after),
                  "first_published": _z(k.first_published)} for k in keys.values()],
        "jwks_files": [JWKS_FILE, JWKS_HISTORY_FILE],
        "indicators_file": INDICATORS_FILE,
        "planted_bad_records": planted,
        "benign_inbox_rules": [{"user": sim.members[i % len(sim.members)].upn, "rule": name, "date": _z(when)}
                               for when, i, name, _ in PLANTED_RULES],
        "attack": {
            "client_app_id": w.ATTACK_CLIENT_APP_ID, "client_info_string": w.ATTACK_CLIENT_INFO,
            "attacker_ips": w.ATTACKER_IPS, "signing_key": keys["consumer"].kid,
            "steps": len(ATTACK_PLAN), "forged_tokens": sim.forged,
        },
    }
    summary["expected_findings"] = _expected_findings(sim, summary)
    summary["not_findings"] = NOT_FINDINGS
    _write_json(out / "expected.json", summary)
    (out / "README.md").write_text(render_readme(summary), encoding="utf-8", newline="\n")
    elapsed = time.perf_counter() - started
    return {**summary, "elapsed_s": round(elapsed, 3), "records_per_s": round(records_total / elapsed) if elapsed else None}
