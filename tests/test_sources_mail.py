"""Purview / UAL / OfficeActivity sources: field mapping, wrapper sniffing, real-export conformance."""

from __future__ import annotations

import csv
import functools
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline import schemas
from pipeline.normalize import BadValue, parse_time, unique_token_id_from_request_id
from pipeline.sources import office_activity, purview
from pipeline.sources.base import Context, Emitted, sniff_container

OUR_FORMATS = {f.name: f for f in purview.FORMATS + office_activity.FORMATS}
UTC = timezone.utc

ORG = "df233d94-fed3-4436-bf9a-a799fb85a159"
SESSION_AAD = "aaaaaaaa-1111-2222-3333-444444444444"
SESSION_EXO = "eeeeeeee-5555-6666-7777-888888888888"
CLIENT_APP = "5a95e683-08ad-424e-a441-1d1aec52c02c"
MSA_TID = "9188040d-6c67-4c5b-b112-36a304b66dad"


def mail_items_accessed() -> dict[str, Any]:
    """A MailItemsAccessed AuditRecord (Bind) with every field the mapping reads."""
    return {
        "CreationTime": "2023-09-20T04:05:03",
        "Id": "6B1F3D2A-1111-4C5B-8D9E-0123456789AB",
        "Operation": "MailItemsAccessed",
        "OrganizationId": ORG.upper(),
        "RecordType": 50,
        "ResultStatus": "Succeeded",
        "UserKey": "10032000C757D25F",
        "UserType": 5,
        "Version": 1,
        "Workload": "Exchange",
        "ClientIP": "203.0.113.7:51234",
        "ClientIPAddress": "203.0.113.7",
        "UserId": "Victim@Contoso.com",
        "AppId": "00000003-0000-0000-C000-000000000000",
        "ClientAppId": "",
        "AppAccessContext": {
            "AADSessionId": SESSION_AAD,
            "APIId": "00000003-0000-0000-c000-000000000000",
            "ClientAppId": CLIENT_APP,
            "ClientAppName": "Totally Legit",
            "CorrelationId": "cccccccc-0000-0000-0000-000000000000",
            "IssuedAtTime": "2023-09-20T04:00:00",
            "UniqueTokenId": "3kVZRE8tFkinHtPA7_EFAA",
        },
        "ClientInfoString": "Client=REST;Client=RESTSystem;;",
        "ExternalAccess": False,
        "InternalLogonType": 0,
        "LogonType": 0,
        "LogonUserSid": "S-1-5-21-1",
        "MailboxGuid": "D0C5F8AE-9ED7-4E46-BFDF-EA1460F5A31B",
        "MailboxOwnerSid": "S-1-5-21-1",
        "MailboxOwnerUPN": "Victim@Contoso.com",
        "OperationProperties": [{"Name": "MailAccessType", "Value": "Bind"}, {"Name": "IsThrottled", "Value": "True"}],
        "OrganizationName": "contoso.onmicrosoft.com",
        "OriginatingServer": "AB1CD23EF4567 (15.20.4200.000)\r\n",
        "SessionId": SESSION_EXO,
        "TokenTenantId": MSA_TID,
        "TokenObjectId": "00000000-0000-0000-0001-000000000001",
        "TokenType": "AccessToken",
        "OperationCount": 3,
        "Folders": [
            {"Id": "LgAA", "Path": "\\Inbox", "FolderItems": [
                {"Id": "a", "InternetMessageId": "<1@x>", "SizeInBytes": 100},
                {"Id": "b", "InternetMessageId": "<2@x>"},
            ]},
            {"Id": "LgAB", "Path": "\\Sent Items", "FolderItems": [{"Id": "c"}]},
            {"Id": "LgAC", "Path": "\\Inbox", "FolderItems": []},
        ],
    }


def user_logged_in() -> dict[str, Any]:
    return {
        "CreationTime": "2023-09-26T01:51:34",
        "Id": "bc91a9cb-cf2b-4058-866a-fb9751200500",
        "Operation": "UserLoggedIn",
        "OrganizationId": ORG,
        "RecordType": 15,
        "ResultStatus": "Success",
        "UserKey": "f757cb79-dd91-4555-a45e-520c2525d932",
        "UserType": 0,
        "Workload": "AzureActiveDirectory",
        "ClientIP": "",
        "ActorIpAddress": "185.73.124.135",
        "ObjectId": "00000003-0000-0000-c000-000000000000",
        "UserId": "DebraB@M365B132131.OnMicrosoft.com",
        "ExtendedProperties": [
            {"Name": "UserAgent", "Value": "Mozilla/5.0 Firefox/114.0"},
            {"Name": "RequestType", "Value": "Login:login"},
        ],
        "ActorContextId": ORG,
        "ApplicationId": "ee272b19-4411-433f-8f28-5c13cb6fd407",
        "DeviceProperties": [{"Name": "OS", "Value": "MacOs"}, {"Name": "SessionId", "Value": SESSION_AAD}],
        "ErrorNumber": "50140",
        "IntraSystemId": "bc91a9cb-cf2b-4058-866a-fb9751200500",
    }


def ctx(fmt: str = "ual_json") -> Context:
    return Context(path=Path("test"), source_format=fmt, batch_id="batch-1")


def rows(emitted: list[Emitted], table: str) -> list[dict[str, Any]]:
    return [e.row for e in emitted if e.table == table]


def assert_valid(emitted: list[Emitted]) -> None:
    for e in emitted:
        assert schemas.table(e.table).violations(e.row) == [], (e.table, e.row)


def one_mail_row(record: dict[str, Any]) -> dict[str, Any]:
    out = purview.ual_record_rows(record, ctx())
    assert_valid(out)
    (row,) = rows(out, "mail_events")
    return row


# ---------------------------------------------------------------------------------------- mapping
def test_mail_items_accessed_every_column() -> None:
    row = one_mail_row(mail_items_accessed())
    assert row["event_id"] == "6b1f3d2a-1111-4c5b-8d9e-0123456789ab"
    assert row["event_time"] == datetime(2023, 9, 20, 4, 5, 3, tzinfo=UTC)
    assert row["event_date"] == "2023-09-20"
    assert row["operation"] == "MailItemsAccessed"
    assert (row["record_type"], row["record_type_name"]) == (50, "ExchangeItemAggregated")
    assert row["workload"] == "Exchange"
    assert row["organization_id"] == ORG
    assert row["user_id"] == "victim@contoso.com"
    assert row["user_key"] == "10032000C757D25F"
    assert (row["user_type"], row["user_type_name"]) == (5, "Application")
    assert row["result_status"] == "Succeeded"
    assert row["mailbox_owner_upn"] == "victim@contoso.com"
    assert row["mailbox_guid"] == "d0c5f8ae-9ed7-4e46-bfdf-ea1460f5a31b"
    assert row["logon_type"] == 0
    assert row["app_id"] == "00000003-0000-0000-c000-000000000000"
    assert row["client_app_id"] == CLIENT_APP  # top-level ClientAppId empty -> AppAccessContext.ClientAppId
    assert row["client_ip"] == "203.0.113.7"
    assert row["client_info_string"] == "Client=REST;Client=RESTSystem;;"
    assert row["mail_access_type"] == "Bind"
    assert row["is_throttled"] is True
    assert row["operation_count"] == 3
    assert row["folder_paths"] == ["\\Inbox", "\\Sent Items"]
    assert row["item_count"] == 3
    assert row["unique_token_id"] == "3kVZRE8tFkinHtPA7_EFAA"
    assert row["aad_session_id"] == SESSION_AAD
    assert row["token_issued_at"] == datetime(2023, 9, 20, 4, 0, 0, tzinfo=UTC)
    assert row["token_tenant_id"] == MSA_TID
    assert row["token_object_id"] == "00000000-0000-0000-0001-000000000001"
    assert row["token_type"] == "AccessToken"
    assert row["exchange_session_id"] == SESSION_EXO
    assert row["source_format"] == "ual_json" and row["ingest_batch_id"] == "batch-1"


def test_exchange_session_is_not_the_entra_session() -> None:
    row = one_mail_row(mail_items_accessed())
    assert row["exchange_session_id"] == SESSION_EXO
    assert row["aad_session_id"] == SESSION_AAD
    rec = mail_items_accessed()
    del rec["AppAccessContext"]["AADSessionId"]
    assert one_mail_row(rec)["aad_session_id"] is None  # never falls back to the Exchange SessionId


def test_extra_keeps_unmapped_and_nested_fields() -> None:
    row = one_mail_row(mail_items_accessed())
    extra = json.loads(row["extra"])
    assert extra["OperationProperties"] == [{"Name": "MailAccessType", "Value": "Bind"}, {"Name": "IsThrottled", "Value": "True"}]
    assert extra["AppAccessContext"]["APIId"] == "00000003-0000-0000-c000-000000000000"
    assert extra["Folders"][0]["FolderItems"][0]["InternetMessageId"] == "<1@x>"
    assert extra["OriginatingServer"] == "AB1CD23EF4567 (15.20.4200.000)"  # trailing \r\n trimmed
    assert extra["MailboxOwnerSid"] == "S-1-5-21-1" and extra["InternalLogonType"] == 0
    assert extra["ExternalAccess"] is False
    # mapped scalars are not repeated; ClientIP agreed with ClientIPAddress so it is mapped too
    for name in ("Id", "CreationTime", "MailboxOwnerUPN", "SessionId", "TokenTenantId", "ClientIP", "ClientIPAddress"):
        assert name not in extra


def test_sync_messages_and_flat_token_fields() -> None:
    rec = mail_items_accessed()
    del rec["Folders"]
    rec["Messages"] = [{"Path": "\\Archive", "MessageItems": [{"Id": "x", "SizeInBytes": 1156492.00}]}]
    rec["OperationProperties"] = [{"Name": "MailAccessType", "Value": "sync"}, {"Name": "IsThrottled", "Value": "False"}]
    rec["AppAccessContext"] = {}
    rec["UniqueTokenId"] = "flatTokenId0123456789A"
    rec["IssuedAtTime"] = "2026-06-15T12:35:51.0000000Z"
    rec["ClientAppId"] = CLIENT_APP.upper()
    row = one_mail_row(rec)
    assert row["folder_paths"] == ["\\Archive"] and row["item_count"] == 1
    assert row["mail_access_type"] == "Sync" and row["is_throttled"] is False
    assert row["unique_token_id"] == "flatTokenId0123456789A"
    assert row["token_issued_at"] == datetime(2026, 6, 15, 12, 35, 51, tzinfo=UTC)
    assert row["client_app_id"] == CLIENT_APP


def test_admin_cmdlet_without_folders_has_null_mail_columns() -> None:
    rec = {
        "CreationTime": "2023-09-26T01:56:15", "Id": "85d29e27-be28-4f2c-96c8-08dbbe33c473", "Operation": "New-InboxRule",
        "OrganizationId": ORG, "RecordType": 1, "ResultStatus": "True", "UserKey": "10032002F222981B", "UserType": 2,
        "Workload": "Exchange", "ClientIP": "185.73.124.135:19823", "UserId": "DebraB@x.com",
        "AppAccessContext": {"UniqueTokenId": ""}, "Parameters": [{"Name": "From", "Value": "flag@ctf.com"}],
    }
    row = one_mail_row(rec)
    assert (row["record_type"], row["record_type_name"], row["user_type_name"]) == (1, "ExchangeAdmin", "Admin")
    assert row["client_ip"] == "185.73.124.135"
    assert row["unique_token_id"] is None  # empty string is absent
    assert row["folder_paths"] is None and row["item_count"] is None and row["mail_access_type"] is None
    assert json.loads(row["extra"])["Parameters"] == [{"Name": "From", "Value": "flag@ctf.com"}]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ClientIP": ""}, None),
        ({"ClientIP": "1.2.3.4"}, "1.2.3.4"),
        ({"ClientIP": "1.2.3.4:25493"}, "1.2.3.4"),
        ({"ClientIP": "[203.0.113.5]:443"}, "203.0.113.5"),
        ({"ClientIP": "[2001:db8::1]:443"}, "2001:db8::1"),
        ({"ClientIP": "2001:0db8:123:abc::45"}, "2001:db8:123:abc::45"),
        ({"ClientIP": "::ffff:10.0.0.1"}, "10.0.0.1"),
        ({"ClientIPAddress": "5.6.7.8", "ClientIP": "1.2.3.4"}, "5.6.7.8"),
        ({"Client_IPAddress": "9.9.9.9"}, "9.9.9.9"),
        ({"ActorIpAddress": "8.8.4.4"}, "8.8.4.4"),
    ],
)
def test_client_ip_sources_and_normalization(fields: dict[str, str], expected: str | None) -> None:
    rec = mail_items_accessed()
    del rec["ClientIP"], rec["ClientIPAddress"]
    rec.update(fields)
    assert one_mail_row(rec)["client_ip"] == expected


def test_disagreeing_ip_fields_keep_the_other_in_extra() -> None:
    rec = mail_items_accessed()
    rec["ClientIP"] = "1.2.3.4"
    row = one_mail_row(rec)
    assert row["client_ip"] == "203.0.113.7"
    assert json.loads(row["extra"])["ClientIP"] == "1.2.3.4"


# ---------------------------------------------------------------------------------------- enums
FORMATS_MD_RECORD_TYPES = {
    1: "ExchangeAdmin", 2: "ExchangeItem", 3: "ExchangeItemGroup", 4: "SharePoint", 6: "SharePointFileOperation",
    8: "AzureActiveDirectory", 9: "AzureActiveDirectoryAccountLogon", 14: "SharePointSharingOperation",
    15: "AzureActiveDirectoryStsLogon", 18: "SecurityComplianceCenterEOPCmdlet", 19: "ExchangeAggregatedOperation",
    20: "PowerBIAudit", 25: "MicrosoftTeams", 50: "ExchangeItemAggregated",
}


@pytest.mark.parametrize(("number", "name"), sorted(FORMATS_MD_RECORD_TYPES.items()))
def test_record_type_map(number: int, name: str) -> None:
    assert purview.RECORD_TYPES[number] == name
    assert purview.record_type_pair(number) == (number, name)
    assert purview.record_type_pair(str(number)) == (number, name)
    assert purview.record_type_pair(name) == (number, name)
    assert purview.record_type_pair(name.upper()) == (number, name)


def test_enum_edge_values() -> None:
    assert purview.record_type_pair("SomethingNew") == (None, "SomethingNew")
    assert purview.record_type_pair(999) == (999, None)
    assert purview.record_type_pair("") == (None, None)
    user_types = {0: "Regular", 1: "Reserved", 2: "Admin", 3: "DcAdmin", 4: "System", 5: "Application",
                  6: "ServicePrincipal", 7: "CustomPolicy", 8: "SystemPolicy", 9: "PartnerTechnician", 10: "Guest"}
    for number, name in user_types.items():
        assert purview.user_type_pair(name) == (number, name)
        assert purview.user_type_pair(number) == (number, name)
    logon = ["Owner", "Admin", "Delegated", "Transport", "SystemService", "BestAccess", "DelegatedAdmin"]
    for number, name in enumerate(logon):
        assert purview.logon_type_pair(name) == (number, name)
        assert purview.logon_type_pair(str(number)) == (number, name)


def test_unknown_logon_type_name_stays_in_extra() -> None:
    rec = mail_items_accessed()
    rec["LogonType"] = "Wizard"
    row = one_mail_row(rec)
    assert row["logon_type"] is None and json.loads(row["extra"])["LogonType"] == "Wizard"


# ---------------------------------------------------------------------------------------- routing
def test_user_logged_in_goes_to_signins_and_mail_events() -> None:
    out = purview.ual_record_rows(user_logged_in(), ctx("purview_csv"))
    assert_valid(out)
    assert sorted(e.table for e in out) == ["mail_events", "signins"]
    (s,) = rows(out, "signins")
    assert s["event_id"] == "bc91a9cb-cf2b-4058-866a-fb9751200500"
    assert s["unique_token_id"] == unique_token_id_from_request_id(s["event_id"]) == "y6mRvCvPWECGavuXUSAFAA"
    assert s["unique_token_id_derived"] is True
    assert s["session_id"] == SESSION_AAD
    assert s["tenant_id"] == ORG and s["home_tenant_id"] == ORG
    assert s["user_principal_name"] == "debrab@m365b132131.onmicrosoft.com"
    assert s["user_id"] == "f757cb79-dd91-4555-a45e-520c2525d932"
    assert s["ip_address"] == "185.73.124.135"  # ClientIP empty -> ActorIpAddress
    assert s["app_id"] == "ee272b19-4411-433f-8f28-5c13cb6fd407"
    assert s["resource_id"] == "00000003-0000-0000-c000-000000000000"
    assert s["user_agent"] == "Mozilla/5.0 Firefox/114.0"
    assert s["result_code"] == 50140
    assert (s["sign_in_type"], s["is_interactive"]) == ("interactive", True)
    assert s["event_time"] == datetime(2023, 9, 26, 1, 51, 34, tzinfo=UTC)
    assert json.loads(s["extra"])["Operation"] == "UserLoggedIn"
    (m,) = rows(out, "mail_events")
    assert m["aad_session_id"] == SESSION_AAD and m["workload"] == "AzureActiveDirectory"
    assert m["client_app_id"] == "ee272b19-4411-433f-8f28-5c13cb6fd407" and m["unique_token_id"] is None


def test_sign_in_type_rule() -> None:
    rec = user_logged_in()
    rec["ExtendedProperties"][1]["Value"] = "OAuth2:Token"
    (s,) = rows(purview.ual_record_rows(rec, ctx()), "signins")
    assert (s["sign_in_type"], s["is_interactive"]) == ("non_interactive", False)
    rec = user_logged_in()
    rec["UserType"] = "ServicePrincipal"
    (s,) = rows(purview.ual_record_rows(rec, ctx()), "signins")
    assert s["sign_in_type"] == "service_principal"


def test_user_login_failed_reason_and_code() -> None:
    rec = user_logged_in()
    rec.update(Operation="UserLoginFailed", ErrorNumber="50126", LogonError="InvalidUserNameOrPassword")
    rec["DeviceProperties"] = [{"Name": "OS", "Value": "MacOs"}]
    (s,) = rows(purview.ual_record_rows(rec, ctx()), "signins")
    assert s["result_code"] == 50126 and s["result_reason"] == "InvalidUserNameOrPassword" and s["session_id"] is None


@pytest.mark.parametrize(
    "record",
    [
        {"CreationTime": "2023-09-20T04:05:03", "Id": "x", "Operation": "FileAccessed", "RecordType": 6, "Workload": "OneDrive"},
        {"CreationTime": "2023-09-20T04:05:03", "Id": "x", "Operation": "Reset user password.", "RecordType": 8,
         "Workload": "AzureActiveDirectory"},
        {"CreationTime": "2023-09-20T04:05:03", "Id": "x", "Operation": "MessageSent", "RecordType": "MicrosoftTeams",
         "Workload": "MicrosoftTeams"},
        # out of scope is decided before the record is checked further: no CreationTime needed to skip it
        {"Id": "x", "Operation": "FileAccessed", "RecordType": 6, "Workload": "SharePoint"},
    ],
)
def test_out_of_scope_records_are_skipped_not_errors(record: dict[str, Any]) -> None:
    assert purview.ual_record_rows(record, ctx()) == []


def test_workload_missing_falls_back_to_exchange_record_types() -> None:
    rec = mail_items_accessed()
    del rec["Workload"]
    assert one_mail_row(rec)["workload"] is None
    rec["RecordType"] = 4
    assert purview.ual_record_rows(rec, ctx()) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.pop("CreationTime"), "CreationTime"),
        (lambda r: r.update(CreationTime="yesterday"), "CreationTime"),
        (lambda r: r.pop("Id"), "no Id"),
        (lambda r: r.update(Operation=""), "Operation"),
        (lambda r: r.update(OperationProperties=[{"Name": "MailAccessType", "Value": "Peek"}]), "MailAccessType"),
        (lambda r: r.update(ClientIPAddress="not-an-ip"), "ClientIPAddress"),
        (lambda r: r.update(TokenTenantId="contoso"), "TokenTenantId"),
        (lambda r: r.update(OperationCount="lots"), "OperationCount"),
    ],
)
def test_bad_records_raise_bad_value(change, reason: str) -> None:
    rec = mail_items_accessed()
    change(rec)
    with pytest.raises(BadValue, match=reason):
        purview.ual_record_rows(rec, ctx())


def test_sign_in_with_non_guid_id_is_rejected() -> None:
    rec = user_logged_in()
    rec["Id"] = "not-a-guid"
    with pytest.raises(BadValue, match="request GUID"):
        purview.ual_record_rows(rec, ctx())


# ---------------------------------------------------------------------------------------- wrappers
def write_csv(path: Path, header: list[str], rows_: list[list[Any]]) -> Path:
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows_)
    return path


def office_activity_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The UAL record as Sentinel stores it: renamed columns, names for enums, JSON-string nesting."""
    out = {
        "TenantId": "00000000-0000-0000-0000-000000000000",
        "TimeGenerated": rec["CreationTime"] + "Z",
        "OfficeId": rec["Id"],
        "SourceRecordId": rec["Id"],
        "OfficeWorkload": rec["Workload"],
        "RecordType": purview.RECORD_TYPES[rec["RecordType"]],
        "UserType": purview.USER_TYPES[rec["UserType"]],
        "Logon_Type": purview.LOGON_TYPES[rec["LogonType"]],
        "Client_IPAddress": rec["ClientIPAddress"],
        "ClientIP": rec["ClientIP"],
        "Type": "OfficeActivity",
        "UniqueTokenId": rec["AppAccessContext"]["UniqueTokenId"],
        "IssuedAtTime": rec["AppAccessContext"]["IssuedAtTime"] + ".0000000Z",
    }
    skip = {"CreationTime", "Id", "Workload", "RecordType", "UserType", "LogonType", "ClientIPAddress", "ClientIP"}
    for key, value in rec.items():
        if key in skip:
            continue
        out[key] = json.dumps(value) if isinstance(value, (dict, list)) else ("" if value is None else str(value) if not isinstance(value, str) else value)
    ctx_app = dict(rec["AppAccessContext"])
    del ctx_app["UniqueTokenId"], ctx_app["IssuedAtTime"]  # only the flat columns carry them
    out["AppAccessContext"] = json.dumps(ctx_app)
    return out


@pytest.fixture
def wrapper_files(tmp_path: Path) -> dict[str, Path]:
    """The same MailItemsAccessed + UserLoggedIn + FileAccessed records in every wrapper."""
    mia, uli = mail_items_accessed(), user_logged_in()
    spo = {"CreationTime": "2023-09-20T05:00:00", "Id": "11111111-0000-0000-0000-000000000001", "Operation": "FileAccessed",
           "RecordType": 6, "Workload": "OneDrive", "UserId": "a@b.c"}
    records = [mia, uli, spo]
    files: dict[str, Path] = {}
    files["purview_csv"] = write_csv(
        tmp_path / "purview.csv",
        ["RecordId", "CreationDate", "RecordType", "Operation", "UserId", "AuditData", "AssociatedAdminUnits",
         "AssociatedAdminUnitsNames"],
        # CreationDate deliberately wrong: the time must come from AuditData.CreationTime
        [[r["Id"], "1/1/2001 1:01:01 AM", r["RecordType"], r["Operation"], r.get("UserId", ""), json.dumps(r), "", ""]
         for r in records],
    )
    files["ual_csv"] = write_csv(
        tmp_path / "search-ual.csv",
        ["RunspaceId", "RecordType", "CreationDate", "UserIds", "Operations", "AuditData", "ResultIndex", "ResultCount",
         "Identity", "IsValid", "ObjectState"],
        # en-AU CreationDate (D/M/Y) that a US parser would misread: never used
        [["rs", purview.RECORD_TYPES[r["RecordType"]], "20/9/2023 4:05:03 AM", r.get("UserId", ""), r["Operation"],
          json.dumps(r), i + 1, 3, r["Id"], "True", "Unchanged"] for i, r in enumerate(records)],
    )
    files["ual_json_string"] = tmp_path / "search-ual.json"
    files["ual_json_string"].write_text(json.dumps(
        [{"RecordType": r["RecordType"], "CreationDate": "/Date(978310861000)/", "UserIds": r.get("UserId"),
          "Operations": r["Operation"], "AuditData": json.dumps(r), "ResultIndex": 1, "ResultCount": 3} for r in records]
    ), encoding="utf-8")
    files["ual_json_object"] = tmp_path / "get-ual.json"  # Extractor-Suite: BOM, indented, AuditData object
    files["ual_json_object"].write_bytes(b"\xef\xbb\xbf" + json.dumps(
        [{"RecordType": purview.RECORD_TYPES[r["RecordType"]], "CreationDate": "2001-01-01T01:01:01",
          "UserIds": r.get("UserId"), "Operations": r["Operation"], "AuditData": r} for r in records], indent=2
    ).replace("\n", "\r\n").encode())
    files["ual_json_blob"] = tmp_path / "mgmt-api-blob.json"
    files["ual_json_blob"].write_text(json.dumps(records), encoding="utf-8")
    files["ual_json_ndjson"] = tmp_path / "audit.jsonl"
    files["ual_json_ndjson"].write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")

    oa_mia = office_activity_row(mia)
    oa_uli = {
        "TimeGenerated": uli["CreationTime"] + ".000Z", "OfficeId": uli["Id"], "OfficeWorkload": uli["Workload"],
        "RecordType": "15", "UserType": "Regular", "Operation": uli["Operation"], "OrganizationId": ORG,
        "UserId": uli["UserId"], "UserKey": uli["UserKey"], "ClientIP": uli["ActorIpAddress"], "ObjectId": uli["ObjectId"],
        "ExtendedProperties": json.dumps(uli["ExtendedProperties"]), "ApplicationId": uli["ApplicationId"],
        "DeviceProperties": json.dumps(uli["DeviceProperties"]), "ErrorNumber": uli["ErrorNumber"], "Type": "OfficeActivity",
        "ActorContextId": uli["ActorContextId"],
    }
    oa_spo = {"TimeGenerated": "2023-09-20T05:00:00Z", "OfficeId": spo["Id"], "OfficeWorkload": "OneDrive",
              "RecordType": "SharePointFileOperation", "Operation": "FileAccessed", "Type": "OfficeActivity"}
    oa = [oa_mia, oa_uli, oa_spo]
    files["office_activity_json"] = tmp_path / "officeactivity.json"
    files["office_activity_json"].write_text("\n".join(json.dumps(r) for r in oa) + "\n", encoding="utf-8")
    header = sorted({k for r in oa for k in r})
    csv_rows = []
    for r in oa:
        cells = []
        for k in header:
            value = r.get(k, "")
            if k == "TimeGenerated":  # portal CSV: US locale, [UTC] in the header
                value = parse_time(value).strftime("%-m/%-d/%Y, %-I:%M:%S.000 %p")
            if k == "Folders" and value:
                value = json.dumps(json.loads(value), indent=2)  # multi-line quoted cell
            cells.append(value)
        csv_rows.append(cells)
    files["office_activity_csv"] = write_csv(
        tmp_path / "officeactivity.csv", [h + " [UTC]" if h == "TimeGenerated" else h for h in header], csv_rows
    )
    return files


FORMAT_OF_FILE = {
    "purview_csv": "purview_csv",
    "ual_csv": "ual_csv",
    "ual_json_string": "ual_json",
    "ual_json_object": "ual_json",
    "ual_json_blob": "ual_json",
    "ual_json_ndjson": "ual_json",
    "office_activity_json": "office_activity_json",
    "office_activity_csv": "office_activity_csv",
}


def run(path: Path, fmt_name: str) -> list[list[Emitted]]:
    fmt = OUR_FORMATS[fmt_name]
    out = []
    for raw in fmt.records(path):
        assert raw.error is None, raw.error
        out.append(fmt.normalize(raw.data, ctx(fmt_name)))
    return out


@pytest.mark.parametrize("key", sorted(FORMAT_OF_FILE))
def test_each_wrapper_is_sniffed_by_exactly_its_format(wrapper_files: dict[str, Path], key: str) -> None:
    sample = sniff_container(wrapper_files[key])
    claimed = [name for name, fmt in OUR_FORMATS.items() if fmt.sniff(sample)]
    assert claimed == [FORMAT_OF_FILE[key]]
    from pipeline import sources

    assert sources.sniff(sample).name == FORMAT_OF_FILE[key]  # no other module claims it first


@pytest.mark.parametrize("key", sorted(FORMAT_OF_FILE))
def test_every_wrapper_gives_the_same_rows(wrapper_files: dict[str, Path], key: str) -> None:
    per_record = run(wrapper_files[key], FORMAT_OF_FILE[key])
    assert len(per_record) == 3
    mia_out, uli_out, spo_out = per_record
    assert spo_out == []  # skipped, not an error
    for out in per_record:
        assert_valid(out)
    reference_mail = one_mail_row(mail_items_accessed())
    (mail,) = rows(mia_out, "mail_events")
    for column, value in reference_mail.items():
        if column in ("source_format", "extra"):
            continue
        assert mail[column] == value, (key, column)
    assert mail["source_format"] == FORMAT_OF_FILE[key]
    assert mail["event_time"] == datetime(2023, 9, 20, 4, 5, 3, tzinfo=UTC)  # never the CreationDate wrapper
    reference_signin = rows(purview.ual_record_rows(user_logged_in(), ctx()), "signins")[0]
    (signin,) = rows(uli_out, "signins")
    for column, value in reference_signin.items():
        if column in ("source_format", "extra"):
            continue
        assert signin[column] == value, (key, column)
    extra = json.loads(mail["extra"])
    assert extra["OperationProperties"][0] == {"Name": "MailAccessType", "Value": "Bind"}
    assert "CreationDate" not in extra and "ResultIndex" not in extra and "RecordId" not in extra


def test_purview_wrapper_fields_fill_gaps_and_reach_extra(tmp_path: Path) -> None:
    rec = mail_items_accessed()
    del rec["Id"]
    path = write_csv(
        tmp_path / "p.csv",
        ["RecordId", "CreationDate", "RecordType", "Operation", "UserId", "AuditData", "AssociatedAdminUnits",
         "AssociatedAdminUnitsNames"],
        [["0f0f0f0f-0000-0000-0000-000000000000", "9/20/2023 4:05:03 AM", 50, "MailItemsAccessed", "v@c.com",
          json.dumps(rec), "au-1", "Finance"]],
    )
    ((out,),) = [run(path, "purview_csv")]
    (mail,) = rows(out, "mail_events")
    assert mail["event_id"] == "0f0f0f0f-0000-0000-0000-000000000000"
    extra = json.loads(mail["extra"])
    assert extra["AssociatedAdminUnits"] == "au-1" and extra["AssociatedAdminUnitsNames"] == "Finance"


@pytest.mark.parametrize(
    ("audit_data", "reason"),
    [("{not json", "AuditData is not valid JSON"), ("[1, 2]", "not a JSON object"), ("", "AuditData is empty")],
)
def test_bad_audit_data_is_a_record_error(tmp_path: Path, audit_data: str, reason: str) -> None:
    path = write_csv(tmp_path / "p.csv", ["RecordId", "CreationDate", "AuditData"], [["x", "9/20/2023 4:05:03 AM", audit_data]])
    fmt = OUR_FORMATS["purview_csv"]
    (raw,) = list(fmt.records(path))
    with pytest.raises(BadValue, match=reason):
        fmt.normalize(raw.data, ctx("purview_csv"))


def test_creation_date_is_never_a_fallback_time(tmp_path: Path) -> None:
    rec = mail_items_accessed()
    del rec["CreationTime"]
    with pytest.raises(BadValue, match="CreationTime"):
        purview.normalize_ual({"CreationDate": "9/20/2023 4:05:03 AM", "AuditData": json.dumps(rec)}, ctx())


def test_office_activity_renames_and_local_time_refused() -> None:
    canonical = office_activity.to_ual({
        "OfficeId": "A", "SourceRecordId": "B", "OfficeWorkload": "Exchange", "Client_IPAddress": "1.1.1.1",
        "Logon_Type": "Delegated", "UserId": "u@x", "UserId_": "u@x", "TimeGenerated [UTC]": "2023-01-01T00:00:00Z",
    })
    assert canonical["Id"] == "A" and canonical["SourceRecordId"] == "B"  # disagreeing copy kept for extra
    assert canonical["Workload"] == "Exchange" and canonical["ClientIPAddress"] == "1.1.1.1"
    assert canonical["LogonType"] == "Delegated" and "UserId_" not in canonical
    assert canonical["CreationTime"] == "2023-01-01T00:00:00Z"
    with pytest.raises(BadValue, match="not in UTC"):
        office_activity.to_ual({"TimeGenerated [Local Time]": "1/1/2023, 1:00:00.000 AM"})


def test_office_activity_delegated_ipv6_record() -> None:
    rec = office_activity_row(mail_items_accessed())
    rec.update(Logon_Type="Delegated", Client_IPAddress="[2001:0db8:123:abc::45]:443", RecordType="50", ClientIP="")
    (out,) = [office_activity.normalize_office_activity(rec, ctx("office_activity_json"))]
    assert_valid(out)
    (mail,) = rows(out, "mail_events")
    assert mail["logon_type"] == 2 and mail["client_ip"] == "2001:db8:123:abc::45" and mail["record_type"] == 50
    extra = json.loads(mail["extra"])
    assert extra["Type"] == "OfficeActivity" and extra["TenantId"] == "00000000-0000-0000-0000-000000000000"


# ---------------------------------------------------------------------------------------- other owners' files
NOT_OURS = {
    "graph_signins.json": json.dumps({"value": [{"id": "bc91a9cb-cf2b-4058-866a-fb9751200500",
                                                 "createdDateTime": "2025-05-02T00:32:36Z", "appId": "x", "status": {}}]}),
    "la_signinlogs.json": json.dumps([{"TimeGenerated": "2021-08-02T13:29:25.983Z", "OperationName": "Sign-in activity",
                                       "Category": "SignInLogs", "Type": "SigninLogs", "Id": "x", "ResultType": "0"}]),
    "la_aadnoninteractive.jsonl": json.dumps({"TimeGenerated": "2021-08-02T13:29:25Z", "Type": "AADNonInteractiveUserSignInLogs",
                                              "OperationName": "Sign-in activity"}) + "\n" + "{}\n",
    "entra_portal.csv": "Date (UTC),Request ID,User agent,Correlation ID,User ID,User,Username,Application,Application ID \r\n"
                        "2025-05-02T00:32:36Z,x,y,z,u,v,w,a,b\r\n",
    "la_signin_portal.csv": "TimeGenerated [UTC],OperationName,Category,ResultType,UserPrincipalName\r\n"
                            "\"6/15/2026, 12:40:24.178 PM\",Sign-in activity,SignInLogs,0,a@b.c\r\n",
    "gateway.jsonl": json.dumps({"ts": "2024-01-01T00:00:00Z", "method": "GET", "path": "/api",
                                 "authorization": "Bearer <redacted>", "status": 200}) + "\n" + "{}\n",
    "mgmt_api_listing.json": json.dumps([{"contentType": "Audit.Exchange", "contentId": "x", "contentUri": "https://x",
                                          "contentCreated": "2020-01-01T00:00:00.000Z", "contentExpiration": "2020-01-08T00:00:00.000Z"}]),
}


@pytest.mark.parametrize("name", sorted(NOT_OURS))
def test_other_formats_are_not_claimed(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(NOT_OURS[name], encoding="utf-8")
    sample = sniff_container(path)
    assert [n for n, fmt in OUR_FORMATS.items() if fmt.sniff(sample)] == []


# ---------------------------------------------------------------------------------------- real exports
# Per-operation outcome of all 219 records of the Huntress Purview export, counted from the file.
HUNTRESS_MAIL = {
    "Add-MailboxPermission": 1, "Enable-AddressListPaging": 1, "Install-AdminAuditLogConfig": 1,
    "Install-DataClassificationConfig": 1, "Install-DefaultSharingPolicy": 1, "Install-ResourceConfig": 1,
    "MipLabel": 6, "New-ExchangeAssistanceConfig": 1, "New-InboxRule": 38, "Set-AdminAuditLogConfig": 1,
    "Set-ExchangeAssistanceConfig": 1, "Set-Mailbox": 8, "Set-MailboxPlan": 27, "Set-OwaMailboxPolicy": 1,
    "Set-RecipientEnforcementProvisioningPolicy": 2, "Set-TenantObjectVersion": 1, "Set-TransportConfig": 3,
    "UserLoggedIn": 20, "UserLoginFailed": 1,
}
HUNTRESS_SIGNINS = {"UserLoggedIn": 20, "UserLoginFailed": 1}
HUNTRESS_SKIPPED = {
    "Add service principal.": 3, "AddedToGroup": 2, "AnonymousLinkCreated": 1, "AnonymousLinkUsed": 1,
    "FileAccessed": 6, "FileModified": 1, "FileRenamed": 1, "FileUploaded": 1, "FolderCreated": 1, "FolderModified": 1,
    "GroupAdded": 3, "ListColumnCreated": 3, "ListUpdated": 1, "PageViewed": 1, "PermissionLevelAdded": 2,
    "Reset user password.": 34, "SharingInheritanceBroken": 2, "SharingSet": 3,
    "Update StsRefreshTokenValidFrom Timestamp.": 34, "WACTokenShared": 2,
}


@functools.cache
def _load_huntress(path: Path) -> dict[str, Any]:
    fmt = OUR_FORMATS["purview_csv"]
    raws = list(fmt.records(path))
    outs = [fmt.normalize(r.data, ctx("purview_csv")) for r in raws]
    return {"path": path, "raws": raws, "outs": outs}


@pytest.fixture
def huntress(realdata: Path) -> dict[str, Any]:
    """The Huntress CTF Purview export, read and normalized once per test session."""
    path = realdata / "huntress_ctf2023_purview" / "purview.csv"
    assert path.is_file(), f"real export missing: {path}"
    return _load_huntress(path)


def test_huntress_sniffed_as_purview_csv(huntress) -> None:
    from pipeline import sources

    assert sources.sniff(sniff_container(huntress["path"])).name == "purview_csv"


def test_huntress_exact_outcome_per_operation(huntress) -> None:
    raws, outs = huntress["raws"], huntress["outs"]
    assert len(raws) == 219 and all(r.error is None for r in raws)
    mail, signins, skipped = Counter(), Counter(), Counter()
    for raw, out in zip(raws, outs):
        if not out:
            skipped[raw.data["Operation"]] += 1
        for e in out:
            (mail if e.table == "mail_events" else signins)[e.row.get("operation") or raw.data["Operation"]] += 1
    assert dict(mail) == HUNTRESS_MAIL
    assert dict(signins) == HUNTRESS_SIGNINS
    assert dict(skipped) == HUNTRESS_SKIPPED
    assert sum(mail.values()) == 116 and sum(skipped.values()) == 103 and 116 + 103 == len(raws)


def test_huntress_rows_pass_the_schema(huntress) -> None:
    for out in huntress["outs"]:
        assert_valid(out)


def test_huntress_event_time_from_audit_data(huntress) -> None:
    for raw, out in zip(huntress["raws"], huntress["outs"]):
        audit = json.loads(raw.data["AuditData"])
        for e in out:
            assert e.row["event_time"] == parse_time(audit["CreationTime"])
            assert e.row["event_time"] == parse_time(raw.data["CreationDate"])  # equal in this sample (README)
            assert e.row["event_id"] == raw.data["RecordId"] == audit["Id"]


def test_huntress_sign_ins_have_derived_token_ids(huntress) -> None:
    signins = [e.row for out in huntress["outs"] for e in out if e.table == "signins"]
    logged_in = [s for s in signins if json.loads(s["extra"])["Operation"] == "UserLoggedIn"]
    assert len(logged_in) == 20
    for s in signins:
        assert s["unique_token_id"] == unique_token_id_from_request_id(s["event_id"])
        assert s["unique_token_id_derived"] is True
        assert s["tenant_id"] == ORG
    assert all(s["session_id"] for s in logged_in)
    assert {s["user_agent"] is not None for s in signins} == {True}


def test_huntress_unique_token_ids_and_join(huntress) -> None:
    audits = [purview.unwrap(r.data) for r in huntress["raws"]]
    raw_ids = [a["AppAccessContext"]["UniqueTokenId"] for a in audits
               if isinstance(a.get("AppAccessContext"), dict) and a["AppAccessContext"].get("UniqueTokenId")]
    assert len(raw_ids) == 60  # 38 Exchange (New-InboxRule) + 22 OneDrive (skipped)
    mail = [e.row for out in huntress["outs"] for e in out if e.table == "mail_events"]
    with_token = [m for m in mail if m["unique_token_id"]]
    assert len(with_token) == 38 and {m["operation"] for m in with_token} == {"New-InboxRule"}
    derived = {e.row["unique_token_id"] for out in huntress["outs"] for e in out if e.table == "signins"}
    assert derived & {m["unique_token_id"] for m in with_token} == {"3kVZRE8tFkinHtPA7_EFAA"}
    assert all(m["token_issued_at"] == datetime(2023, 9, 26, 1, 47, 34, tzinfo=UTC) for m in with_token)


def test_huntress_client_ip_normalized(huntress) -> None:
    shapes = Counter()
    for raw, out in zip(huntress["raws"], huntress["outs"]):
        audit = json.loads(raw.data["AuditData"])
        ip = audit.get("ClientIP")
        for e in out:
            got = e.row.get("client_ip", e.row.get("ip_address"))
            if not ip:
                shapes["empty"] += 1
                assert got is None
            elif ":" in ip:
                shapes["port"] += 1
                assert got == ip.split(":")[0]
            else:
                shapes["v4"] += 1
                assert got == ip
    assert shapes["port"] == 38 and shapes["v4"] > 0 and shapes["empty"] > 0


def test_otrf_office_activity_mail_items_accessed(realdata: Path) -> None:
    path = realdata / "otrf_goldensaml" / "OfficeActivityEvents.json"
    assert path.is_file(), f"real export missing: {path}"
    from pipeline import sources

    assert sources.sniff(sniff_container(path)).name == "office_activity_json"
    (out,) = run(path, "office_activity_json")
    assert_valid(out)
    (mail,) = rows(out, "mail_events")
    assert [e.table for e in out] == ["mail_events"]
    assert mail["event_id"] == "699e0b10-1c53-403e-976f-ce0847a92b44"
    assert mail["event_time"] == datetime(2021, 8, 2, 13, 32, 7, tzinfo=UTC)
    assert mail["operation"] == "MailItemsAccessed" and mail["record_type"] == 50
    assert mail["record_type_name"] == "ExchangeItemAggregated"
    assert mail["app_id"] == "00000003-0000-0000-c000-000000000000"
    assert mail["client_app_id"] == CLIENT_APP
    assert mail["mail_access_type"] == "Bind" and mail["is_throttled"] is False
    assert mail["folder_paths"] == ["\\Inbox"] and mail["item_count"] == 7
    assert mail["logon_type"] == 0 and mail["user_type_name"] == "Regular"
    assert mail["client_ip"] == "1.2.3.4" and mail["mailbox_owner_upn"] == "pgustavo@simulandlabs.com"
    extra = json.loads(mail["extra"])
    assert extra["OriginatingServer"] == "AB1CD23EF4567 (15.20.4200.000)"  # "\r\n" in the export
    assert len(extra["Folders"][0]["FolderItems"]) == 7  # JSON string parsed into structure
    assert extra["OperationProperties"][0] == {"Name": "MailAccessType", "Value": "Bind"}


def test_otrf_audit_logs_not_claimed(realdata: Path) -> None:
    path = realdata / "otrf_goldensaml" / "AADAuditEvents.json"
    assert path.is_file(), f"real export missing: {path}"
    sample = sniff_container(path)
    assert [n for n, fmt in OUR_FORMATS.items() if fmt.sniff(sample)] == []


def test_extractor_suite_exports_not_claimed(realdata: Path) -> None:
    folder = realdata / "extractor_suite_graph"
    files = sorted(folder.glob("*.json"))
    assert files, f"real exports missing: {folder}"
    for path in files:
        sample = sniff_container(path)
        assert [n for n, fmt in OUR_FORMATS.items() if fmt.sniff(sample)] == [], path.name
