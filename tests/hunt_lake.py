"""A small lake with known content for the saved-hunt tests (tests/test_hunts.py).

The story: alice and bob read mail with Outlook; on 2024-05-02 a client app nobody used before
(EVIL_APP) reads both mailboxes from an indicator IP with tokens whose unique token ids have no
sign-in, signed with a consumer key marked compromised (the Storm-0558 pattern).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pipeline import schemas
from pipeline.lake import Lake

UTC = timezone.utc
TENANT = "11111111-aaaa-4aaa-8aaa-111111111111"
CONSUMER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
EXO = "00000002-0000-0ff1-ce00-000000000000"
GRAPH = "00000003-0000-0000-c000-000000000000"
OUTLOOK = "5d661950-3475-41cd-a2c3-d671a3162bc1"
TEAMS = "1fec8e78-bce4-4aaf-ab1b-5451cc387264"
EVIL_APP = "9f1c0000-0000-4000-8000-000000000bad"
ALICE = "alice@contoso.com"
BOB = "bob@contoso.com"
BAD_IP = "198.51.100.99"
FP_A = "a" * 64
FP_B = "b" * 64
FP_C = "c" * 64
BATCH = "20240503T000000-000000000001"


def ts(text: str) -> datetime:
    """'2024-05-01 08:00' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _signin(n: int, when: str, upn: str, app: str, resource: str, ip: str, code: int, uti: str, session: str | None) -> dict:
    t = ts(when)
    return {
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "event_time": t,
        "event_date": t.date().isoformat(),
        "source_format": "graph_json",
        "sign_in_type": "interactive",
        "tenant_id": TENANT,
        "user_principal_name": upn,
        "app_id": app,
        "resource_id": resource,
        "ip_address": ip,
        "result_code": code,
        "unique_token_id": uti,
        "session_id": session,
        "ingest_batch_id": BATCH,
    }


SIGNINS = [
    _signin(1, "2024-05-01 08:00", ALICE, OUTLOOK, EXO, "203.0.113.10", 0, "uti-a1", "sess-a"),
    _signin(2, "2024-05-01 12:00", ALICE, OUTLOOK, EXO, "198.51.100.20", 0, "uti-a2", "sess-a"),
    _signin(3, "2024-05-02 09:00", ALICE, TEAMS, GRAPH, "203.0.113.10", 0, "uti-a3", "sess-a2"),
    _signin(4, "2024-05-01 09:30", BOB, OUTLOOK, EXO, "192.0.2.5", 0, "uti-b1", "sess-b"),
    _signin(5, "2024-05-02 10:00", BOB, OUTLOOK, EXO, "192.0.2.5", 50126, "uti-b2", None),
    _signin(6, "2024-05-02 11:00", BOB, OUTLOOK, EXO, "192.0.2.5", 0, "uti-b3", "sess-b2"),
]


def _mail(n: int, when: str, op: str, user: str, mailbox: str, app: str, ip: str, access: str | None, items: int | None, uti: str, session: str | None) -> dict:
    t = ts(when)
    return {
        "event_id": f"mail-{n}",
        "event_time": t,
        "event_date": t.date().isoformat(),
        "source_format": "purview_csv",
        "operation": op,
        "organization_id": TENANT,
        "user_id": user,
        "mailbox_owner_upn": mailbox,
        "app_id": app,
        "client_app_id": app,
        "client_ip": ip,
        "mail_access_type": access,
        "item_count": items,
        "unique_token_id": uti,
        "aad_session_id": session,
        "ingest_batch_id": BATCH,
    }


MAIL = [
    _mail(1, "2024-05-01 08:05", "MailItemsAccessed", ALICE, ALICE, OUTLOOK, "203.0.113.10", "Bind", 3, "uti-a1", "sess-a"),
    _mail(2, "2024-05-01 08:10", "MailItemsAccessed", ALICE, ALICE, OUTLOOK, "203.0.113.10", "Sync", 10, "uti-a1", "sess-a"),
    _mail(3, "2024-05-02 03:00", "MailItemsAccessed", ALICE, ALICE, EVIL_APP, BAD_IP, "Bind", 50, "uti-forged", None),
    _mail(4, "2024-05-02 03:30", "MailItemsAccessed", BOB, BOB, EVIL_APP, BAD_IP, "Bind", 20, "uti-forged2", None),
    _mail(5, "2024-05-01 09:35", "Send", BOB, BOB, OUTLOOK, "192.0.2.5", None, None, "uti-b1", "sess-b"),
    _mail(6, "2024-05-01 09:40", "MailItemsAccessed", BOB, BOB, OUTLOOK, "192.0.2.5", "Bind", 1, "uti-b1", "sess-b"),
]


def _token(fp: str, kid: str, appid: str, upn: str, uti: str, first: str, last: str, count: int) -> dict:
    f, last_t = ts(first), ts(last)
    return {
        "token_fingerprint": fp,
        "event_date": f.date().isoformat(),
        "alg": "RS256",
        "kid": kid,
        "typ": "JWT",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "tid": TENANT,
        "aud": "https://outlook.office365.com",
        "appid": appid,
        "upn": upn,
        "uti": uti,
        "ver": "1.0",
        "iat": f,
        "nbf": f,
        "exp": ts("2024-05-03 12:00"),
        "first_seen": f,
        "last_seen": last_t,
        "seen_count": count,
        "signature_status": "valid",
        "signature_key_source": "jwks-enterprise" if kid == "kid-ent" else "jwks-consumer",
        "ingest_batch_id": BATCH,
    }


TOKENS = [
    _token(FP_A, "kid-ent", OUTLOOK, ALICE, "uti-a1", "2024-05-01 08:00", "2024-05-01 08:10", 2),
    _token(FP_B, "kid-consumer", EVIL_APP, ALICE, "uti-forged", "2024-05-02 03:00", "2024-05-03 01:00", 2),
    _token(FP_C, "kid-consumer", EVIL_APP, BOB, "uti-forged2", "2024-05-02 03:30", "2024-05-02 03:30", 1),
]


def _gw(n: int, when: str, fp: str, ip: str, host: str, path: str) -> dict:
    t = ts(when)
    return {
        "event_id": f"gw-{n}",
        "event_time": t,
        "event_date": t.date().isoformat(),
        "source_format": "gateway_jsonl",
        "token_fingerprint": fp,
        "client_ip": ip,
        "host": host,
        "path": path,
        "method": "GET",
        "status": 200,
        "ingest_batch_id": BATCH,
    }


TOKEN_EVENTS = [
    _gw(1, "2024-05-01 08:00", FP_A, "203.0.113.10", "outlook.office.com", "/api/v2.0/me/messages"),
    _gw(2, "2024-05-01 08:10", FP_A, "203.0.113.10", "outlook.office.com", "/api/v2.0/me/messages"),
    _gw(3, "2024-05-02 03:00", FP_B, BAD_IP, "outlook.office365.com", "/EWS/Exchange.asmx"),
    _gw(4, "2024-05-02 03:30", FP_C, BAD_IP, "outlook.office365.com", "/EWS/Exchange.asmx"),
    _gw(5, "2024-05-03 01:00", FP_B, BAD_IP, "outlook.office365.com", "/EWS/Exchange.asmx"),
]


def _key(kid: str, source: str, scope: str, status: str, first: str, last: str, removed: str | None, snapshots: int) -> dict:
    f = ts(first)
    return {
        "kid": kid,
        "event_date": f.date().isoformat(),
        "kty": "RSA",
        "use": "sig",
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"
        if scope == "enterprise"
        else f"https://login.microsoftonline.com/{CONSUMER_TENANT}/v2.0",
        "scope": scope,
        "cert_not_after": ts("2026-01-01 00:00"),
        "first_seen": f,
        "last_seen": ts(last),
        "removed_seen": ts(removed) if removed else None,
        "snapshot_count": snapshots,
        "source_first_snapshot": ts("2016-01-01 00:00"),
        "source_snapshot_count": 10,
        "status": status,
        "source": source,
        "ingest_batch_id": BATCH,
    }


SIGNING_KEYS = [
    _key("kid-old", "jwks-enterprise", "enterprise", "retired", "2016-01-01 00:00", "2020-01-01 00:00", "2020-02-01 00:00", 4),
    _key("kid-consumer", "jwks-consumer", "consumer", "compromised", "2016-04-05 00:00", "2021-04-01 00:00", "2021-05-01 00:00", 6),
    _key("kid-ent", "jwks-enterprise", "enterprise", "active", "2024-01-01 00:00", "2024-05-01 00:00", None, 5),
]


def _finding(n: int, det: str, sev: str, when: str, principal: str, status: str, hits: int) -> dict:
    t = ts(when)
    return {
        "finding_id": f"{n:032x}",
        "detection_id": det,
        "severity": sev,
        "event_time": t,
        "event_date": t.date().isoformat(),
        "tenant_id": TENANT,
        "principal": principal,
        "entity_key": f"{det}|{principal}",
        "evidence": "{}",
        "outcome": "alert",
        "first_seen": ts("2024-05-03 02:00"),
        "last_seen": ts("2024-05-03 02:00"),
        "hit_count": hits,
        "status": status,
        "ingest_batch_id": BATCH,
    }


FINDINGS = [
    _finding(1, "new_mail_client_app", "high", "2024-05-02 03:00", ALICE, "new", 1),
    _finding(2, "bulk_mailbox_access", "medium", "2024-05-02 03:30", BOB, "seen", 3),
    _finding(3, "session_many_locations", "low", "2024-05-01 12:00", ALICE, "resolved-by-user", 2),
    _finding(4, "token_lifetime_anomaly", "informational", "2024-05-01 08:00", BOB, "new", 1),
]


def _indicator(kind: str, value: str, start: str | None, end: str | None, reason: str) -> dict:
    return {
        "indicator_type": kind,
        "value": value,
        "event_date": "2024-04-01",
        "campaign": "Storm-0558",
        "valid_from": ts(start) if start else None,
        "valid_until": ts(end) if end else None,
        "reason": reason,
        "source": "test list",
        "ingest_batch_id": BATCH,
    }


INDICATORS = [
    _indicator("ip", BAD_IP, "2024-04-01 00:00", None, "actor infrastructure"),
    _indicator("ip", "203.0.113.10", "2023-01-01 00:00", "2023-12-31 00:00", "reassigned since"),
    _indicator("kid", "kid-consumer", None, None, "stolen MSA key"),
]


def _quarantine(n: int, when: str, table: str, file: str, record: int, reason: str) -> dict:
    t = ts(when)
    return {
        "quarantine_id": f"{n:064x}",
        "event_date": t.date().isoformat(),
        "quarantined_at": t,
        "target_table": table,
        "source_format": "graph_json",
        "source_file": file,
        "record_number": record,
        "reason": reason,
        "raw_record": "{}",
        "ingest_batch_id": BATCH,
    }


QUARANTINE = [
    _quarantine(1, "2024-05-03 00:10", "signins", "a.json", 4, "event_id 'x' is not a GUID"),
    _quarantine(2, "2024-05-03 00:20", "signins", "b.json", 9, "event_id 'x' is not a GUID"),
    _quarantine(3, "2024-05-03 00:15", "mail_events", "ual.csv", 2, "operation is required but missing"),
    _quarantine(4, "2024-05-03 00:05", "unknown", "junk.json", 1, "not JSON"),
]


def _run(batch: str, file: str, fmt: str, start: str, read: int, written: int, dups: int, quarantined: int, quality: str) -> dict:
    t = ts(start)
    return {
        "ingest_batch_id": batch,
        "event_date": t.date().isoformat(),
        "run_id": "run-1",
        "source_file": file,
        "source_sha256": "0" * 64,
        "source_format": fmt,
        "started_at": t,
        "committed_at": t,
        "records_read": read,
        "rows_written": written,
        "duplicates": dups,
        "quarantined": quarantined,
        "counts": "{}",
        "quality_status": quality,
    }


INGEST_RUNS = [
    _run("20240503T001000-000000000010", "a.json", "graph_json", "2024-05-03 00:10", 10, 9, 0, 1, "passed"),
    _run("20240503T002000-000000000020", "ual.csv", "purview_csv", "2024-05-03 00:20", 7, 6, 0, 1, "degraded"),
    _run("20240502T002000-000000000030", "gw.jsonl", "gateway_jsonl", "2024-05-02 00:20", 5, 5, 2, 0, "passed"),
]

TABLES = {
    "signins": SIGNINS,
    "mail_events": MAIL,
    "tokens": TOKENS,
    "token_events": TOKEN_EVENTS,
    "signing_keys": SIGNING_KEYS,
    "findings": FINDINGS,
    "indicators": INDICATORS,
    "quarantine": QUARANTINE,
    "ingest_runs": INGEST_RUNS,
}


def build(root: Path) -> Lake:
    """Write every table above as one committed batch (rows checked against schemas/ first)."""
    lake = Lake(root)
    batch = lake.begin(BATCH)
    for table, rows in TABLES.items():
        spec = schemas.table(table)
        for row in rows:
            problems = spec.violations(row)
            assert not problems, f"{table} fixture row {row}: {problems}"
        batch.add(table, rows, dedup=False)
    batch.commit({"source_file": "tests/hunt_lake.py"})
    return lake
