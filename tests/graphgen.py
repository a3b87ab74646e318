"""Tiny Graph /beta signIn record builder for ingest tests (not a fixture file: tests vary it)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.normalize import unique_token_id_from_request_id

TENANT = "3f1e2b8a-6a43-4d6e-9f0c-1a2b3c4d5e6f"
BASE = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)


def request_id(i: int) -> str:
    return str(uuid.UUID(int=(0x5EED << 96) + i))


def record(i: int, **over) -> dict:
    rid = request_id(i)
    rec = {
        "id": rid,
        "createdDateTime": (BASE + timedelta(minutes=7 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userPrincipalName": f"User{i % 25}@Contoso.com",
        "userId": str(uuid.UUID(int=i % 25 + 1)),
        "appId": "d3590ed6-52b3-4102-aeff-aad2292ab01c",
        "appDisplayName": "Microsoft Office",
        "resourceId": "00000002-0000-0ff1-ce00-000000000000",
        "resourceDisplayName": "Office 365 Exchange Online",
        "resourceTenantId": TENANT,
        "homeTenantId": TENANT,
        "ipAddress": f"203.0.113.{i % 250 + 1}",
        "clientAppUsed": "Browser",
        "isInteractive": True,
        "signInEventTypes": ["interactiveUser"],
        "status": {"errorCode": 0, "failureReason": None},
        "uniqueTokenIdentifier": unique_token_id_from_request_id(rid),
        "sessionId": str(uuid.UUID(int=(0xC0FFEE << 64) + i // 3)),
        "correlationId": str(uuid.UUID(int=(0xC0 << 100) + i)),
        "tokenIssuerType": "AzureAD",
        "incomingTokenType": "none",
        "location": {"city": "Seattle", "countryOrRegion": "US"},
        "deviceDetail": {"browser": "Edge 120", "operatingSystem": "Windows10"},
        "padding": "x" * 900,  # real records are ~1.5 KB
    }
    rec.update(over)
    return rec


def write_array(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_ndjson(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps(record(i)) + "\n")
    return path
