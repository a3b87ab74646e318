"""Sign-in source formats: graph_json, diagnostic_json, log_analytics_json/csv, entra_portal_csv.

Unit tests write small inline exports to tmp files and drive each format directly
(sniff -> records -> normalize), then check every row against schemas/signins.toml.
Conformance tests read the real Extractor-Suite Graph exports in shared/realdata.
"""

from __future__ import annotations

import codecs
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline import schemas
from pipeline.normalize import BadValue, unique_token_id_from_request_id
from pipeline.sources import entra_portal, graph, log_analytics
from pipeline.sources.base import Context, SourceFormat, sniff_container

SIGNIN_FORMATS: list[SourceFormat] = graph.FORMATS + log_analytics.FORMATS + entra_portal.FORMATS
BY_NAME = {f.name: f for f in SIGNIN_FORMATS}
TABLE = schemas.table("signins")

REQ_ID = "0c532507-b101-4090-b2f1-4d768e2f3500"
REQ_TOKEN = "ByVTDAGxkECy8U12ji81AA"  # formats.md section 1: b64url(bytes_le(REQ_ID))
TENANT = "4bbb79f7-1111-4222-8333-444455556666"
HOME_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
EXO = "00000002-0000-0ff1-ce00-000000000000"


# ---------------------------------------------------------------------- helpers
def sniffed(path: Path) -> list[str]:
    """Names of the sign-in formats that claim ``path`` (exactly one is expected, or none)."""
    sample = sniff_container(path)
    return [f.name for f in SIGNIN_FORMATS if f.sniff(sample)]


def rows(path: Path, fmt: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Sniff (or use ``fmt``), stream and normalize ``path``; every row must satisfy the schema."""
    names = sniffed(path)
    if fmt is None:
        assert len(names) == 1, f"{path.name} sniffed as {names}"
        fmt = names[0]
    f = BY_NAME[fmt]
    ctx = Context(path=path, source_format=f.name, batch_id="batch-1", options=options)
    out = []
    for raw in f.records(path):
        assert raw.error is None, raw.error
        for emitted in f.normalize(raw.data, ctx):
            assert emitted.table == "signins"
            assert TABLE.violations(emitted.row) == [], emitted.row
            out.append(emitted.row)
    return out


def normalize_one(fmt: str, record: dict[str, Any], path: Path = Path("x.json"), **options: Any) -> dict[str, Any]:
    ctx = Context(path=path, source_format=fmt, batch_id="batch-1", options=options)
    (emitted,) = BY_NAME[fmt].normalize(record, ctx)
    return emitted.row


def write_json(path: Path, value: Any, *, bom: bool = False, indent: int | None = None) -> Path:
    text = json.dumps(value, indent=indent)
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
    return path


def write_lines(path: Path, values: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(v) for v in values) + "\n", encoding="utf-8")
    return path


def graph_record(**over: Any) -> dict[str, Any]:
    """A Graph /beta interactive user sign-in, with the quirks the normalizers must fix."""
    rec: dict[str, Any] = {
        "id": REQ_ID.upper(),
        "createdDateTime": "2026-06-15T12:40:24Z",
        "userDisplayName": "Adele Vance",
        "userPrincipalName": "AdeleV@Contoso.COM",
        "userId": "11111111-2222-3333-4444-555555555555",
        "userType": "member",
        "appId": "d3590ed6-52b3-4102-aeff-aad2292ab01c",
        "appDisplayName": "Microsoft Office",
        "resourceId": EXO,
        "resourceDisplayName": "Office 365 Exchange Online",
        "resourceTenantId": TENANT.upper(),
        "homeTenantId": "{" + HOME_TENANT + "}",
        "ipAddress": "[2001:db8::1]:443",
        "userAgent": "Mozilla/5.0",
        "clientAppUsed": "Browser",
        "correlationId": "23b6797f-1083-4d70-86ed-29a27d73847b",
        "isInteractive": True,
        "signInEventTypes": ["interactiveUser"],
        "status": {"errorCode": 50126, "failureReason": "Invalid username or password.", "additionalDetails": None},
        "uniqueTokenIdentifier": "READ-FROM-RECORD",
        "sessionId": "004ca149-c18f-a151-12cf-ebb662153620",
        "tokenIssuerType": "AzureAD",
        "tokenIssuerName": "",
        "incomingTokenType": "primaryRefreshToken",
        "authenticationProtocol": "oAuth2",
        "crossTenantAccessType": "b2bCollaboration",
        "clientCredentialType": "none",
        "servicePrincipalId": "",
        "location": {"city": "Redmond", "state": "Washington", "countryOrRegion": "US",
                     "geoCoordinates": {"latitude": 47.6, "longitude": -122.1}},
        "deviceDetail": {"deviceId": "", "browser": "Edge 120", "operatingSystem": "Windows10"},
        "riskLevelDuringSignIn": "none",
    }
    rec.update(over)
    return rec


# ---------------------------------------------------------------------- graph_json
def test_graph_array_with_bom_and_powershell_indent(tmp_path: Path) -> None:
    path = write_json(tmp_path / "signins.json", [graph_record()], bom=True, indent=4)
    assert sniffed(path) == ["graph_json"]
    (row,) = rows(path)
    assert row["event_id"] == REQ_ID  # upper-case GUID made canonical
    assert row["event_time"] == datetime(2026, 6, 15, 12, 40, 24, tzinfo=timezone.utc)
    assert row["event_date"] == "2026-06-15"
    assert row["source_format"] == "graph_json"
    assert row["sign_in_type"] == "interactive"
    assert row["is_interactive"] is True
    assert row["user_principal_name"] == "adelev@contoso.com"
    assert row["tenant_id"] == TENANT and row["home_tenant_id"] == HOME_TENANT
    assert row["resource_id"] == EXO
    assert row["ip_address"] == "2001:db8::1"
    assert row["result_code"] == 50126 and row["result_reason"] == "Invalid username or password."
    assert row["unique_token_id"] == "READ-FROM-RECORD" and row["unique_token_id_derived"] is False
    assert row["token_issuer_type"] == "AzureAD"
    assert row["token_issuer_name"] is None  # empty string -> null
    assert row["service_principal_id"] is None
    assert row["incoming_token_type"] == "primaryRefreshToken"
    assert (row["country"], row["city"]) == ("US", "Redmond")
    assert row["ingest_batch_id"] == "batch-1"


def test_graph_row_has_every_schema_column_and_extra_keeps_unmapped(tmp_path: Path) -> None:
    row = normalize_one("graph_json", graph_record())
    assert set(row) == set(TABLE.column_names)
    extra = json.loads(row["extra"])
    assert extra["deviceDetail"]["browser"] == "Edge 120"
    assert extra["userDisplayName"] == "Adele Vance"
    assert extra["location"]["geoCoordinates"]["latitude"] == 47.6  # nested parents stay whole
    assert "id" not in extra and "userPrincipalName" not in extra and "ipAddress" not in extra


def test_graph_v1_record_derives_token_id_and_type_from_is_interactive() -> None:
    rec = {"id": REQ_ID, "createdDateTime": "2026-06-15T12:40:24Z", "appId": "a", "isInteractive": False}
    row = normalize_one("graph_json", rec)
    assert row["unique_token_id"] == REQ_TOKEN == unique_token_id_from_request_id(REQ_ID)
    assert row["unique_token_id_derived"] is True
    assert row["sign_in_type"] == "non_interactive"
    # columns the record lacks are null, not errors
    for col in ("tenant_id", "home_tenant_id", "user_principal_name", "ip_address", "result_code", "session_id",
                "token_issuer_type", "country", "city", "extra"):
        assert row[col] is None, col


def test_graph_value_page(tmp_path: Path) -> None:
    page = {
        "@odata.context": "https://graph.microsoft.com/beta/$metadata#auditLogs/signIns",
        "value": [graph_record(), graph_record(id="290faffa-477b-4b28-ae92-579daae7b000")],
        "@odata.nextLink": "https://graph.microsoft.com/beta/auditLogs/signIns?$skiptoken=abc",
    }
    path = write_json(tmp_path / "page.json", page, indent=2)
    got = rows(path)
    assert [r["event_id"] for r in got] == [REQ_ID, "290faffa-477b-4b28-ae92-579daae7b000"]


def test_graph_array_of_pages_and_pages_per_line(tmp_path: Path) -> None:
    ids = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(4)]
    pages = [{"value": [graph_record(id=ids[0]), graph_record(id=ids[1])]}, {"value": [graph_record(id=ids[2])]},
             {"value": [graph_record(id=ids[3])]}]
    as_array = write_json(tmp_path / "pages.json", pages, indent=4)
    per_line = write_lines(tmp_path / "pages.ndjson", pages)
    back_to_back = tmp_path / "curl.json"  # `curl ... >> file`: pages with no separator
    back_to_back.write_text("".join(json.dumps(p, indent=1) for p in pages), encoding="utf-8")
    for path in (as_array, per_line, back_to_back):
        assert [r["event_id"] for r in rows(path)] == ids, path.name


def test_graph_ndjson_records(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "signins.ndjson", [graph_record(), graph_record(id=HOME_TENANT)])
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert [r["event_id"] for r in rows(path)] == [REQ_ID, HOME_TENANT]


def test_graph_single_pretty_object_with_value_keys_inside(tmp_path: Path) -> None:
    # sniff_container sees a '"value"' key (authenticationProcessingDetails) and calls it a wrapper
    rec = graph_record(authenticationProcessingDetails=[{"key": "Is CAE Token", "value": "False"}])
    path = write_json(tmp_path / "one.json", rec, indent=2)
    assert [r["event_id"] for r in rows(path)] == [REQ_ID]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.5:25493", "203.0.113.5"),
        ("[203.0.113.5]:443", "203.0.113.5"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("", None),
    ],
)
def test_ip_normalization(raw: str, expected: str | None) -> None:
    assert normalize_one("graph_json", graph_record(ipAddress=raw))["ip_address"] == expected


@pytest.mark.parametrize(
    ("raw", "expected", "date"),
    [
        ("2022-01-24T05:10:14.1875602+00:00", datetime(2022, 1, 24, 5, 10, 14, 187560, tzinfo=timezone.utc), "2022-01-24"),
        ("2026-06-15T01:30:00+02:00", datetime(2026, 6, 14, 23, 30, tzinfo=timezone.utc), "2026-06-14"),
        ("2023-09-20T04:05:03", datetime(2023, 9, 20, 4, 5, 3, tzinfo=timezone.utc), "2023-09-20"),
    ],
)
def test_graph_times_are_utc(raw: str, expected: datetime, date: str) -> None:
    row = normalize_one("graph_json", graph_record(createdDateTime=raw))
    assert row["event_time"] == expected and row["event_time"].utcoffset().total_seconds() == 0
    assert row["event_date"] == date


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"id": ""}, "no request id"),
        ({"id": "Directory_010dc0af_P6CTY"}, "not a GUID"),
        ({"createdDateTime": None}, "no event time"),
        ({"createdDateTime": "yesterday"}, "no known format"),
        ({"ipAddress": "not-an-ip"}, "not an IP address"),
        ({"resourceTenantId": "contoso"}, "tenant_id"),
        ({"signInEventTypes": [], "isInteractive": None}, "sign-in type"),
    ],
)
def test_graph_bad_records_raise_bad_value(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadValue, match=reason):
        normalize_one("graph_json", graph_record(**over))


def test_sign_in_type_option_is_last_resort() -> None:
    rec = graph_record(signInEventTypes=None, isInteractive=None)
    assert normalize_one("graph_json", rec, sign_in_type="non_interactive")["sign_in_type"] == "non_interactive"
    # a type the record states wins over the option
    assert normalize_one("graph_json", graph_record(), sign_in_type="non_interactive")["sign_in_type"] == "interactive"


def test_portal_json_download_type_from_file_name(tmp_path: Path) -> None:
    rec = graph_record(signInEventTypes=None, isInteractive=False)
    path = write_json(tmp_path / "ApplicationSignIns_2026-06-01_2026-06-15.json", [rec])
    assert [r["sign_in_type"] for r in rows(path)] == ["service_principal"]


# ---------------------------------------------------------------------- diagnostic_json
def diag_record(category: str = "NonInteractiveUserSignInLogs", **props: Any) -> dict[str, Any]:
    inner = graph_record(signInEventTypes=["nonInteractiveUser"], isInteractive=False,
                         createdDateTime="2022-01-24T05:10:14.1875602+00:00",
                         authenticationProcessingDetails=[{"key": "Is CAE Token", "value": "False"}])
    inner.update(props)
    return {
        "time": "2022-01-24T05:10:14.1875602Z",
        "resourceId": f"/tenants/{TENANT}/providers/Microsoft.aadiam",
        "operationName": "Sign-in activity",
        "category": category,
        "tenantId": TENANT,
        "resultType": "0",
        "callerIpAddress": "1.128.3.4",
        "Level": 4,
        "location": "IN",
        "properties": inner,
    }


def test_diagnostic_records_wrapper(tmp_path: Path) -> None:
    recs = [diag_record(), diag_record("ServicePrincipalSignInLogs", id=HOME_TENANT),
            diag_record("ManagedIdentitySignInLogs", id=TENANT), diag_record("SignInLogs", id=EXO)]
    path = write_json(tmp_path / "PT1H.json", {"records": recs}, indent=2)
    assert sniffed(path) == ["diagnostic_json"]
    got = rows(path)
    assert [r["sign_in_type"] for r in got] == ["non_interactive", "service_principal", "managed_identity", "interactive"]
    first = got[0]
    assert first["source_format"] == "diagnostic_json"
    assert first["event_time"] == datetime(2022, 1, 24, 5, 10, 14, 187560, tzinfo=timezone.utc)
    assert first["resource_id"] == EXO  # properties.resourceId, never the envelope's Azure path
    extra = json.loads(first["extra"])
    assert extra["envelope"]["resourceId"].startswith("/tenants/")
    assert extra["envelope"]["operationName"] == "Sign-in activity"


def test_diagnostic_one_record_per_line_and_envelope_fallbacks(tmp_path: Path) -> None:
    bare = diag_record()
    for key in ("createdDateTime", "ipAddress", "resourceTenantId", "correlationId"):
        del bare["properties"][key]
    bare["properties"]["status"] = {}
    path = write_lines(tmp_path / "eventhub.log", [bare, diag_record(id=HOME_TENANT)])
    assert sniffed(path) == ["diagnostic_json"]
    row = rows(path)[0]
    assert row["event_time"] == datetime(2022, 1, 24, 5, 10, 14, 187560, tzinfo=timezone.utc)  # envelope time
    assert row["ip_address"] == "1.128.3.4"  # callerIpAddress
    assert row["tenant_id"] == TENANT  # envelope tenantId
    assert row["result_code"] == 0  # envelope resultType "0"


def test_diagnostic_other_category_is_rejected() -> None:
    with pytest.raises(BadValue, match="not a sign-in category"):
        normalize_one("diagnostic_json", diag_record("AuditLogs"))


# ---------------------------------------------------------------------- log_analytics_json
def la_record(table: str = "SigninLogs", **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "TenantId": "00000000-0000-0000-0000-000000000000",  # the workspace id: must not become tenant_id
        "TimeGenerated": "2021-08-02T13:32:07Z",
        "CreatedDateTime": "2021-08-02T13:29:25.983Z",
        "Id": REQ_ID,
        "OperationName": "Sign-in activity",
        "Category": "SignInLogs",
        "ResultType": "50126",
        "ResultDescription": "Invalid username or password.",
        "UserPrincipalName": "PGustavo@SimulandLabs.com",
        "AppId": "d3590ed6-52b3-4102-aeff-aad2292ab01c",
        "ResourceId": f"/tenants/{TENANT}/providers/Microsoft.aadiam",
        "ResourceIdentity": EXO,
        "ResourceTenantId": TENANT,
        "HomeTenantId": TENANT,
        "IPAddress": "::ffff:192.0.2.7",
        "IsInteractive": "true",
        "Location": "US",
        "LocationDetails": json.dumps({"city": "Redmond", "state": "Washington", "countryOrRegion": "US"}),
        "Status": json.dumps({"errorCode": 50126, "failureReason": "Invalid username or password."}),
        "DeviceDetail": json.dumps({"browser": "Edge 120"}),
        "TokenIssuerType": "AzureAD",
        "Type": table,
    }
    rec.update(over)
    return rec


def test_log_analytics_json_ndjson(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "query.json", [la_record()])
    assert sniffed(path) == ["log_analytics_json"]
    (row,) = rows(path)
    assert row["event_time"] == datetime(2021, 8, 2, 13, 29, 25, 983000, tzinfo=timezone.utc)  # CreatedDateTime
    assert row["resource_id"] == EXO  # ResourceIdentity, not the ResourceId path
    assert row["tenant_id"] == TENANT
    assert row["ip_address"] == "192.0.2.7"
    assert row["user_principal_name"] == "pgustavo@simulandlabs.com"
    assert row["result_code"] == 50126
    assert row["is_interactive"] is True and row["sign_in_type"] == "interactive"
    assert (row["country"], row["city"]) == ("US", "Redmond")
    assert row["unique_token_id"] == REQ_TOKEN and row["unique_token_id_derived"] is True
    extra = json.loads(row["extra"])
    assert extra["DeviceDetail"] == {"browser": "Edge 120"}  # dynamic column parsed, still reachable
    assert extra["TimeGenerated"] == "2021-08-02T13:32:07Z"  # differing alternate time kept
    assert extra["ResourceId"].startswith("/tenants/")


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("SigninLogs", "interactive"),
        ("AADNonInteractiveUserSignInLogs", "non_interactive"),
        ("AADServicePrincipalSignInLogs", "service_principal"),
        ("AADManagedIdentitySignInLogs", "managed_identity"),
    ],
)
def test_log_analytics_type_column(table: str, expected: str) -> None:
    assert normalize_one("log_analytics_json", la_record(table, IsInteractive="true"))["sign_in_type"] == expected


def test_log_analytics_service_principal_table_shape(tmp_path: Path) -> None:
    # AADServicePrincipalSignInLogs: no CreatedDateTime, no IsInteractive, no tenant columns
    rec = {"TimeGenerated": "2025-05-02T00:32:36Z", "Id": REQ_ID, "AppId": "0930ea9f-98e8-46f5-9123-b16358290e70",
           "ResourceIdentity": "00000003-0000-0000-c000-000000000000", "ServicePrincipalId": "45d0cf74-062d-46a3-b00e-7841f50f10eb",
           "ResultType": "0", "UniqueTokenIdentifier": REQ_TOKEN, "IPAddress": "3.140.144.215",
           "Category": "ServicePrincipalSignInLogs", "TenantId": "00000000-0000-0000-0000-000000000000"}
    path = write_json(tmp_path / "sp.json", [rec])
    assert sniffed(path) == ["log_analytics_json"]
    (row,) = rows(path)
    assert row["sign_in_type"] == "service_principal"  # from Category, no Type column
    assert row["event_time"] == datetime(2025, 5, 2, 0, 32, 36, tzinfo=timezone.utc)
    assert row["is_interactive"] is False and row["result_code"] == 0
    assert row["unique_token_id_derived"] is False
    assert row["tenant_id"] is None and row["user_principal_name"] is None


def test_log_analytics_sign_in_event_types_and_file_name() -> None:
    rec = la_record(Type=None, Category=None, IsInteractive=None, SignInEventTypes='["nonInteractiveUser"]')
    assert normalize_one("log_analytics_json", rec)["sign_in_type"] == "non_interactive"
    rec = la_record(Type=None, Category=None, IsInteractive="true")
    path = Path("AADManagedIdentitySignInLogs_2026-06.json")
    assert normalize_one("log_analytics_json", rec, path)["sign_in_type"] == "managed_identity"


def test_log_analytics_non_signin_table_rejected() -> None:
    with pytest.raises(BadValue, match="not a sign-in table"):
        normalize_one("log_analytics_json", la_record("AuditLogs"))


# ---------------------------------------------------------------------- log_analytics_csv
LA_CSV = (
    'TenantId,"TimeGenerated [UTC]","CreatedDateTime [UTC]",Id,UserPrincipalName,AppId,ResourceIdentity,'
    "ResourceId,IPAddress,IsInteractive,ResultType,Status,UniqueTokenIdentifier,Type\r\n"
    '00000000-0000-0000-0000-000000000000,"6/15/2026, 12:40:30.500 PM","6/15/2026, 12:40:24.178 PM",'
    f"{REQ_ID},AdeleV@contoso.com,d3590ed6-52b3-4102-aeff-aad2292ab01c,{EXO},"
    f'/tenants/{TENANT}/providers/Microsoft.aadiam,203.0.113.9:51000,TRUE,0,"{{\r\n  ""errorCode"": 0,\r\n'
    f'  ""additionalDetails"": ""MFA requirement satisfied""\r\n}}",{REQ_TOKEN},SigninLogs\r\n'
    ',"6/15/2026, 1:05:00.000 AM",,290faffa-477b-4b28-ae92-579daae7b000,,app,,,,false,"70044",,,'
    "AADNonInteractiveUserSignInLogs\r\n"
)


def test_log_analytics_portal_csv(tmp_path: Path) -> None:
    path = tmp_path / "query_data.csv"
    path.write_bytes(codecs.BOM_UTF8 + LA_CSV.encode("utf-8"))
    assert sniffed(path) == ["log_analytics_csv"]
    first, second = rows(path)
    assert first["source_format"] == "log_analytics_csv"
    assert first["event_time"] == datetime(2026, 6, 15, 12, 40, 24, 178000, tzinfo=timezone.utc)
    assert first["event_date"] == "2026-06-15"
    assert first["is_interactive"] is True and first["sign_in_type"] == "interactive"
    assert first["resource_id"] == EXO and first["ip_address"] == "203.0.113.9"
    assert first["result_code"] == 0
    assert json.loads(first["extra"])["Status"]["additionalDetails"] == "MFA requirement satisfied"  # multi-line cell
    # second row: CreatedDateTime empty -> TimeGenerated; missing cells null
    assert second["event_time"] == datetime(2026, 6, 15, 1, 5, tzinfo=timezone.utc)
    assert second["sign_in_type"] == "non_interactive" and second["is_interactive"] is False
    assert second["result_code"] == 70044
    assert second["user_principal_name"] is None and second["ip_address"] is None and second["resource_id"] is None
    assert second["unique_token_id"] == unique_token_id_from_request_id("290faffa-477b-4b28-ae92-579daae7b000")


def test_log_analytics_local_time_csv_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "local.csv"
    path.write_text(
        f"TimeGenerated [Local Time],Id,AppId,IsInteractive\n\"6/15/2026, 2:40:24.178 PM\",{REQ_ID},a,true\n",
        encoding="utf-8",
    )
    assert sniffed(path) == []  # no UTC time column: not claimed
    with pytest.raises(BadValue, match="not UTC"):
        rows(path, "log_analytics_csv")


# ---------------------------------------------------------------------- entra_portal_csv
PORTAL_HEADER = (
    "Date (UTC),Request ID,User agent,Correlation ID,User ID,User,Username,User type,Cross tenant access type,"
    "Incoming token type,Authentication Protocol,Unique token identifier,Client credential type,Application,"
    "Application ID ,Resource,Resource ID ,Resource tenant ID,Home tenant ID,IP address,Location,Status,"
    "Sign-in error code,Failure reason,Client app,Session ID,Token issuer type,Incoming token type,"
    "Token issuer name,Managed Identity type,Service principal ID"
)


def portal_row(**over: str) -> str:
    cells = {
        "Date (UTC)": "2025-12-04T08:19:41Z", "Request ID": REQ_ID, "User agent": "Mozilla/5.0",
        "Correlation ID": "23b6797f-1083-4d70-86ed-29a27d73847b", "User ID": "11111111-2222-3333-4444-555555555555",
        "User": "Adele Vance", "Username": "AdeleV@contoso.com", "User type": "Member",
        "Cross tenant access type": "none", "Incoming token type": "", "Authentication Protocol": "none",
        "Unique token identifier": "", "Client credential type": "none", "Application": "Microsoft Office",
        "Application ID": "d3590ed6-52b3-4102-aeff-aad2292ab01c", "Resource": "Office 365 Exchange Online",
        "Resource ID": EXO, "Resource tenant ID": TENANT, "Home tenant ID": TENANT,
        "IP address": "198.51.100.4", "Location": "Redmond, Washington, US", "Status": "Success",
        "Sign-in error code": "0", "Failure reason": "", "Client app": "Browser",
        "Session ID": "004ca149-c18f-a151-12cf-ebb662153620", "Token issuer type": "AzureAD",
        "Incoming token type.1": "primaryRefreshToken", "Token issuer name": "", "Managed Identity type": "",
        "Service principal ID": "",
    }
    cells.update(over)
    names = [h.strip() for h in PORTAL_HEADER.split(",")]
    names[names.index("Incoming token type", names.index("Token issuer type"))] = "Incoming token type.1"
    return ",".join(f'"{cells[n]}"' for n in names)


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("InteractiveSignIns_2025-12-01_2025-12-05.csv", "interactive"),
        ("NonInteractiveSignIns_2025-12-01_2025-12-05.csv", "non_interactive"),
        ("ApplicationSignIns_2025-12-01_2025-12-05.csv", "service_principal"),
        ("MSISignIns_2025-12-01_2025-12-05.csv", "managed_identity"),
    ],
)
def test_entra_portal_csv(tmp_path: Path, file_name: str, expected: str) -> None:
    path = tmp_path / file_name
    path.write_text(PORTAL_HEADER + "\r\n" + portal_row() + "\r\n", encoding="utf-8-sig")
    assert sniffed(path) == ["entra_portal_csv"]
    (row,) = rows(path)
    assert row["sign_in_type"] == expected
    assert row["is_interactive"] is (expected == "interactive")
    assert row["source_format"] == "entra_portal_csv"
    assert row["event_time"] == datetime(2025, 12, 4, 8, 19, 41, tzinfo=timezone.utc)
    assert row["app_id"] == "d3590ed6-52b3-4102-aeff-aad2292ab01c"  # "Application ID " header
    assert row["resource_id"] == EXO
    assert row["user_principal_name"] == "adelev@contoso.com"
    assert (row["city"], row["country"]) == ("Redmond", "US")
    assert row["incoming_token_type"] == "primaryRefreshToken"  # from the duplicated column
    assert row["result_code"] == 0 and row["result_reason"] is None
    assert row["unique_token_id"] == REQ_TOKEN and row["unique_token_id_derived"] is True
    assert json.loads(row["extra"])["Location"]["state"] == "Washington"


def test_entra_portal_type_from_columns_and_unknown(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    body = [portal_row(**{"Request ID": EXO, "Username": "", "User ID": "", "Service principal ID": "45d0cf74-062d-46a3-b00e-7841f50f10eb"}),
            portal_row(**{"Request ID": TENANT, "Managed Identity type": "systemAssigned"}),
            portal_row()]
    path.write_text(PORTAL_HEADER + "\n" + "\n".join(body) + "\n", encoding="utf-8")
    f = BY_NAME["entra_portal_csv"]
    ctx = Context(path=path, source_format=f.name, batch_id="b")
    recs = [r.data for r in f.records(path)]
    assert f.normalize(recs[0], ctx)[0].row["sign_in_type"] == "service_principal"
    assert f.normalize(recs[1], ctx)[0].row["sign_in_type"] == "managed_identity"
    with pytest.raises(BadValue, match="sign-in type"):  # a user row in a renamed file: cannot tell
        f.normalize(recs[2], ctx)
    ctx.options["sign_in_type"] = "interactive"
    assert f.normalize(recs[2], ctx)[0].row["sign_in_type"] == "interactive"


@pytest.mark.parametrize(
    ("value", "city", "country"),
    [("Columbus, Ohio, US", "Columbus", "US"), (", , NL", None, "NL"), ("US", None, "US"), ("", None, None)],
)
def test_entra_portal_location(value: str, city: str | None, country: str | None) -> None:
    record = dict(zip([h.strip() for h in PORTAL_HEADER.split(",")], [""] * 40))
    record.update({"Date (UTC)": "2025-12-04T08:19:41Z", "Request ID": REQ_ID, "Location": value})
    row = normalize_one("entra_portal_csv", record, Path("InteractiveSignIns_x.csv"))
    assert (row["city"], row["country"]) == (city, country)


# ---------------------------------------------------------------------- sniffing others' files
FOREIGN = {
    "purview.csv": "RecordId,CreationDate,RecordType,Operation,UserId,AuditData\r\n"
                   '1,9/20/2023 4:05:03 AM,15,UserLoggedIn,a@b.c,"{""Id"":""x""}"\r\n',
    "office_activity.csv": "TenantId,TimeGenerated [UTC],OfficeWorkload,Operation,UserId,ClientIP,Id\r\n"
                           "t,\"6/15/2026, 12:40:24.178 PM\",Exchange,MailItemsAccessed,a@b.c,1.2.3.4,x\r\n",
    "ual.json": json.dumps([{"CreationTime": "2023-09-20T04:05:03", "Id": REQ_ID, "Operation": "UserLoggedIn",
                             "RecordType": 15, "UserId": "a@b.c", "ClientIP": "1.2.3.4"}]),
    "la_auditlogs.json": json.dumps({"TimeGenerated": "2021-08-02T13:29:25.983Z", "Id": "Directory_x", "ResultType": "",
                                     "CorrelationId": REQ_ID, "Type": "AuditLogs", "OperationName": "Add user"}) + "\n",
    "graph_auditlogs.json": json.dumps({"value": [{"id": "Directory_x", "activityDateTime": "2025-05-02T09:19:09Z",
                                                   "category": "UserManagement", "correlationId": REQ_ID}]}),
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_files_are_not_claimed(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(FOREIGN[name], encoding="utf-8")
    assert sniffed(path) == []


# ---------------------------------------------------------------------- real exports
def _realdata() -> Path:
    repo = Path(__file__).resolve().parents[1]
    shared = repo.parent / "shared" / "realdata"
    if not (shared / "extractor_suite_graph").is_dir():
        pytest.skip(f"real exports not found at {shared} (shared/ must sit beside the repo)")
    return shared


@pytest.fixture(scope="module")
def real_rows() -> dict[str, list[dict[str, Any]]]:
    base = _realdata() / "extractor_suite_graph"
    return {kind: rows(base / f"{kind}-SignInLogs.json") for kind in ("servicePrincipal", "managedIdentity")}


def test_real_counts_and_types(real_rows: dict[str, list[dict[str, Any]]]) -> None:
    sp, mi = real_rows["servicePrincipal"], real_rows["managedIdentity"]
    assert len(sp) == 494 and len(mi) == 28
    assert {r["sign_in_type"] for r in sp} == {"service_principal"}
    assert {r["sign_in_type"] for r in mi} == {"managed_identity"}
    assert len({r["event_id"] for r in sp + mi}) == 522
    assert all(r["source_format"] == "graph_json" and r["is_interactive"] is False for r in sp + mi)
    assert {r["token_issuer_type"] for r in sp + mi} == {"UnknownFutureValue"}  # kept as exported
    assert {r["result_code"] for r in sp + mi} == {0}
    assert min(r["event_time"] for r in sp) == datetime(2025, 5, 2, 0, 0, 36, tzinfo=timezone.utc)
    assert max(r["event_time"] for r in mi) == datetime(2025, 5, 2, 10, 38, 7, tzinfo=timezone.utc)


def test_real_token_ids_are_the_derived_value_on_all_522(real_rows: dict[str, list[dict[str, Any]]]) -> None:
    everything = real_rows["servicePrincipal"] + real_rows["managedIdentity"]
    assert len(everything) == 522
    assert all(r["unique_token_id_derived"] is False for r in everything)
    mismatched = [r["event_id"] for r in everything if r["unique_token_id"] != unique_token_id_from_request_id(r["event_id"])]
    assert mismatched == []


@pytest.mark.parametrize(
    ("kind", "event_id", "time", "token", "app", "ip", "country", "credential"),
    [
        ("servicePrincipal", "0c532507-b101-4090-b2f1-4d768e2f3500", "2025-05-02T00:32:36", "ByVTDAGxkECy8U12ji81AA",
         "Petra Forwarder", "3.140.144.215", "US", "clientAssertion"),
        ("servicePrincipal", "3004391b-6b17-4841-8e79-0703ad013400", "2025-05-02T00:29:34", "GzkEMBdrQUiOeQcDrQE0AA",
         "Splunk Connector", "20.86.11.194", "NL", "clientSecret"),
        ("servicePrincipal", "9a9fe8ad-1ff3-4a01-b623-ca3577333100", "2025-05-02T00:01:31", "reifmvMfAUq2I8o1dzMxAA",
         "Teamflect", "20.31.124.126", "NL", "clientSecret"),
        ("servicePrincipal", "53d9dbb6-16f4-4c43-a0ba-faa425c80400", "2025-05-02T00:31:37", "ttvZU_QWQ0yguvqkJcgEAA",
         "Petra Forwarder", "3.140.144.215", None, "clientAssertion"),
        ("managedIdentity", "da1ddc45-4554-42e1-818a-7ee252f37c00", "2025-05-02T10:38:07", "Rdwd2lRF4UKBin7iUvN8AA",
         "tokens-1", None, None, "managedIdentity"),
        ("managedIdentity", "04651d7b-b299-4ebd-a995-a3622e9a5e00", "2025-05-02T00:45:02", "ex1lBJmyvU6plaNiLppeAA",
         "tokens-1", None, None, "managedIdentity"),
    ],
)
def test_real_named_records(real_rows: dict[str, list[dict[str, Any]]], kind: str, event_id: str, time: str,
                            token: str, app: str, ip: str | None, country: str | None, credential: str) -> None:
    (row,) = [r for r in real_rows[kind] if r["event_id"] == event_id]
    assert row["event_time"] == datetime.fromisoformat(time).replace(tzinfo=timezone.utc)
    assert row["event_date"] == "2025-05-02"
    assert row["unique_token_id"] == token
    assert row["app_display_name"] == app
    assert row["ip_address"] == ip
    assert row["country"] == country
    assert row["client_credential_type"] == credential
    assert row["user_principal_name"] is None and row["tenant_id"] is None and row["home_tenant_id"] is None


def test_real_first_record_details(real_rows: dict[str, list[dict[str, Any]]]) -> None:
    row = real_rows["servicePrincipal"][0]
    assert row["event_id"] == "0c532507-b101-4090-b2f1-4d768e2f3500"
    assert row["resource_id"] == "00000003-0000-0000-c000-000000000000"
    assert row["resource_display_name"] == "Microsoft Graph"
    assert row["service_principal_id"] == "45d0cf74-062d-46a3-b00e-7841f50f10eb"
    assert row["session_id"] == "004ca149-c18f-a151-12cf-ebb662153620"
    assert row["city"] == "Columbus"
    assert json.loads(row["extra"])["servicePrincipalCredentialThumbprint"] == "4212E8B018D3C545A42A2124516460E124C4C206"


def test_real_non_signin_files_are_not_claimed() -> None:
    base = _realdata()
    assert sniffed(base / "extractor_suite_graph" / "AuditLogs.json") == []
    for other in (base / "otrf_goldensaml" / "AADAuditEvents.json", base / "otrf_goldensaml" / "OfficeActivityEvents.json",
                  base / "huntress_ctf2023_purview" / "purview.csv"):
        if other.exists():
            assert sniffed(other) == [], other.name


def test_registry_sniff_picks_each_signin_format(tmp_path: Path) -> None:
    """Through pipeline.sources.sniff (all modules, in registry order), not just this family."""
    from pipeline.sources import sniff

    files = {
        "graph.json": (json.dumps([graph_record()], indent=4), "graph_json"),
        "page.json": (json.dumps({"value": [graph_record()]}), "graph_json"),
        "diag.json": (json.dumps({"records": [diag_record()]}), "diagnostic_json"),
        "diag.log": (json.dumps(diag_record()) + "\n" + json.dumps(diag_record()) + "\n", "diagnostic_json"),
        "la.json": (json.dumps(la_record()) + "\n", "log_analytics_json"),
        "la.csv": (LA_CSV, "log_analytics_csv"),
        "InteractiveSignIns_x.csv": (PORTAL_HEADER + "\n" + portal_row() + "\n", "entra_portal_csv"),
    }
    for name, (text, expected) in files.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        fmt = sniff(sniff_container(path))
        assert fmt is not None and fmt.name == expected, name
