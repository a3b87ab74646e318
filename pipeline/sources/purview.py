"""Purview unified audit log (UAL) exports -> ``mail_events`` (+ ``signins`` for STS logons).

Formats (all share one mapping, :func:`ual_record_rows`; the wrappers only unwrap):

``purview_csv``
    Purview portal "Export" CSV: ``RecordId,CreationDate,RecordType,Operation,UserId,AuditData,...``.
``ual_csv``
    ``Search-UnifiedAuditLog | Export-Csv`` and Extractor-Suite ``Get-UAL`` CSV: an ``AuditData``
    column without ``RecordId`` (``CreationDate,UserIds,Operations,AuditData,ResultIndex,...``).
``ual_json``
    JSON array / NDJSON / ``{"value": [...]}`` of either wrapped records (``AuditData`` as a JSON
    string or an object: Search-UnifiedAuditLog ``ConvertTo-Json``, Extractor-Suite ``Get-UAL``) or
    raw ``AuditRecord`` objects (Office 365 Management Activity API content blobs, ``-AuditDataOnly``).

Rules (formats.md sections 0, 4-7):

* The event time is always ``AuditData.CreationTime`` (naive means UTC). The wrapper's
  ``CreationDate`` is in the exporting host's locale (and may be D/M/Y or local time), so it is
  never read; a record without ``CreationTime`` is rejected.
* Routing, decided per record:
  - ``Workload == "Exchange"`` (any operation: mailbox audit, MailItemsAccessed, admin cmdlets such
    as New-InboxRule / Set-Mailbox, MipLabel on mail) -> one ``mail_events`` row. When a record has
    no ``Workload``, the Exchange record types (1, 2, 3, 19, 50) decide.
  - Entra STS logons (RecordType 15 ``AzureActiveDirectoryStsLogon``: UserLoggedIn, UserLoginFailed)
    -> one ``signins`` row AND one ``mail_events`` row (the UAL view of the logon: workload
    AzureActiveDirectory, ``aad_session_id`` from DeviceProperties SessionId), so UAL-only timelines
    and the ``aad_session_id`` join work without the sign-in table. Filter ``workload = 'Exchange'``
    for mailbox-only questions.
  - Everything else (SharePoint/OneDrive, Entra directory audit, Teams, ...) is out of scope:
    ``normalize`` returns ``[]`` and the ingest counts the record as skipped.
* STS logon -> ``signins``: ``Id`` is the Entra request id, so ``unique_token_id`` is derived from it
  (``unique_token_id_derived = True``). ``sign_in_type`` is ``interactive`` unless
  ExtendedProperties ``RequestType`` is ``OAuth2:Token`` (token-endpoint redemption with no user
  present -> ``non_interactive``) or ``UserType`` is Application/ServicePrincipal
  (``service_principal``).
* Nested values that arrive as JSON strings (OfficeActivity, OTRF) are parsed, so ``extra`` holds the
  same JSON shape whatever the export; ``AppAccessContext``, ``OperationProperties``, ``Folders``,
  ``Messages``, ``DeviceProperties`` ... stay whole in ``extra`` even when columns were taken from them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterable

from pipeline.normalize import (
    BadValue,
    extra_json,
    first,
    guid,
    lower,
    maybe_json,
    name_value_list,
    normalize_ip,
    parse_time,
    to_bool,
    to_int,
    to_text,
    unique_token_id_from_request_id,
)
from pipeline.sources.base import Context, Emitted, FileSample, SourceFormat, iter_csv, iter_json_records
from pipeline.tokens import scrub_text

# ---------------------------------------------------------------------------------------- enum maps
# AuditLogRecordType (office-365-management-activity-api-schema.md, plus 5/7 from the Graph enum).
RECORD_TYPES: dict[int, str] = {
    1: "ExchangeAdmin", 2: "ExchangeItem", 3: "ExchangeItemGroup", 4: "SharePoint", 5: "SyntheticProbe",
    6: "SharePointFileOperation", 7: "OneDrive", 8: "AzureActiveDirectory", 9: "AzureActiveDirectoryAccountLogon",
    10: "DataCenterSecurityCmdlet", 11: "ComplianceDLPSharePoint", 12: "Sway", 13: "ComplianceDLPExchange",
    14: "SharePointSharingOperation", 15: "AzureActiveDirectoryStsLogon", 16: "SkypeForBusinessPSTNUsage",
    17: "SkypeForBusinessUsersBlocked", 18: "SecurityComplianceCenterEOPCmdlet", 19: "ExchangeAggregatedOperation",
    20: "PowerBIAudit", 21: "CRM", 22: "Yammer", 23: "SkypeForBusinessCmdlets", 24: "Discovery", 25: "MicrosoftTeams",
    28: "ThreatIntelligence", 29: "MailSubmission", 30: "MicrosoftFlow", 31: "AeD", 32: "MicrosoftStream",
    33: "ComplianceDLPSharePointClassification", 34: "ThreatFinder", 35: "Project", 36: "SharePointListOperation",
    37: "SharePointCommentOperation", 38: "DataGovernance", 39: "Kaizala", 40: "SecurityComplianceAlerts",
    41: "ThreatIntelligenceUrl", 42: "SecurityComplianceInsights", 43: "MIPLabel", 44: "WorkplaceAnalytics",
    45: "PowerAppsApp", 46: "PowerAppsPlan", 47: "ThreatIntelligenceAtpContent", 48: "LabelContentExplorer",
    49: "TeamsHealthcare", 50: "ExchangeItemAggregated", 51: "HygieneEvent", 52: "DataInsightsRestApiAudit",
    53: "InformationBarrierPolicyApplication", 54: "SharePointListItemOperation", 55: "SharePointContentTypeOperation",
    56: "SharePointFieldOperation", 57: "MicrosoftTeamsAdmin", 58: "HRSignal", 59: "MicrosoftTeamsDevice",
    60: "MicrosoftTeamsAnalytics", 61: "InformationWorkerProtection", 62: "Campaign", 63: "DLPEndpoint",
    64: "AirInvestigation", 65: "Quarantine", 66: "MicrosoftForms", 67: "ApplicationAudit",
    68: "ComplianceSupervisionExchange", 69: "CustomerKeyServiceEncryption", 70: "OfficeNative",
    71: "MipAutoLabelSharePointItem", 72: "MipAutoLabelSharePointPolicyLocation", 73: "MicrosoftTeamsShifts",
    75: "MipAutoLabelExchangeItem", 76: "CortanaBriefing", 77: "Search", 78: "WDATPAlerts", 81: "MDATPAudit",
    82: "SensitivityLabelPolicyMatch", 83: "SensitivityLabelAction", 84: "SensitivityLabeledFileAction",
    85: "AttackSim", 86: "AirManualInvestigation", 87: "SecurityComplianceRBAC", 88: "UserTraining",
    89: "AirAdminActionInvestigation", 90: "MSTIC", 91: "PhysicalBadgingSignal", 93: "AipDiscover",
    94: "AipSensitivityLabelAction", 95: "AipProtectionAction", 96: "AipFileDeleted", 97: "AipHeartBeat",
    98: "MCASAlerts", 99: "OnPremisesFileShareScannerDlp", 100: "OnPremisesSharePointScannerDlp",
    101: "ExchangeSearch", 102: "SharePointSearch", 103: "PrivacyInsights", 105: "MyAnalyticsSettings",
    106: "SecurityComplianceUserChange", 107: "ComplianceDLPExchangeClassification", 109: "MipExactDataMatch",
    131: "OfficeScriptsRunAction",
}
# UserType (schema doc 0-8; 9 and 10 as formats.md section 4 lists them).
USER_TYPES: dict[int, str] = {
    0: "Regular", 1: "Reserved", 2: "Admin", 3: "DcAdmin", 4: "System", 5: "Application", 6: "ServicePrincipal",
    7: "CustomPolicy", 8: "SystemPolicy", 9: "PartnerTechnician", 10: "Guest",
}
# Exchange mailbox LogonType.
LOGON_TYPES: dict[int, str] = {
    0: "Owner", 1: "Admin", 2: "Delegated", 3: "Transport", 4: "SystemService", 5: "BestAccess", 6: "DelegatedAdmin",
}
MAIL_ACCESS_TYPES = ("Bind", "Sync")

STS_LOGON_RECORD_TYPE = 15
STS_LOGON_OPERATIONS = frozenset({"UserLoggedIn", "UserLoginFailed"})
# Used only when a record has no Workload: Exchange admin, item, item group, aggregated operation, MailItemsAccessed.
EXCHANGE_RECORD_TYPES = frozenset({1, 2, 3, 19, 50})
NON_INTERACTIVE_REQUEST_TYPES = frozenset({"oauth2:token"})

# Wrapper columns that repeat AuditData (or are paging noise) and so never reach `extra`.
WRAPPER_REDUNDANT = frozenset({
    "RecordId", "CreationDate", "RecordType", "Operation", "Operations", "UserId", "UserIds", "AuditData",
    "ResultIndex", "ResultCount", "RunspaceId", "Identity", "IsValid", "ObjectState",
    "PSComputerName", "PSShowComputerName",
})
# Field -> wrapper columns that may stand in for it when AuditData lacks it (never CreationTime).
WRAPPER_FALLBACKS = {
    "Id": ("RecordId", "Identity"),
    "RecordType": ("RecordType",),
    "Operation": ("Operation", "Operations"),
    "UserId": ("UserId", "UserIds"),
}
IP_FIELDS = ("ClientIPAddress", "ClientIP", "Client_IPAddress", "ActorIpAddress")


def _by_name(table: dict[int, str]) -> dict[str, int]:
    return {name.lower(): value for value, name in table.items()}


_RECORD_TYPE_BY_NAME = _by_name(RECORD_TYPES)
_USER_TYPE_BY_NAME = _by_name(USER_TYPES)
_LOGON_TYPE_BY_NAME = _by_name(LOGON_TYPES)


def enum_pair(value: Any, table: dict[int, str], by_name: dict[str, int]) -> tuple[int | None, str | None]:
    """(int, name) for an enum given as an int, a string int ("50") or a name (any case).

    An unknown name keeps the name with no int; an unknown int keeps the int with no name.
    """
    if value is None or value == "":
        return None, None
    if isinstance(value, bool):
        raise BadValue(f"enum value {value!r} is a boolean")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        number = to_int(value)
        return number, table.get(number)  # type: ignore[arg-type]
    name = str(value).strip()
    number = by_name.get(name.lower())
    return number, (table[number] if number is not None else name)


def record_type_pair(value: Any) -> tuple[int | None, str | None]:
    return enum_pair(value, RECORD_TYPES, _RECORD_TYPE_BY_NAME)


def user_type_pair(value: Any) -> tuple[int | None, str | None]:
    return enum_pair(value, USER_TYPES, _USER_TYPE_BY_NAME)


def logon_type_pair(value: Any) -> tuple[int | None, str | None]:
    return enum_pair(value, LOGON_TYPES, _LOGON_TYPE_BY_NAME)


# ---------------------------------------------------------------------------------------- helpers
def _guid_or_text(value: Any) -> str | None:
    """Canonical lower-case GUID when the value is one, else the text as given (AppId, MailboxGuid)."""
    text = to_text(value)
    if text is None:
        return None
    try:
        return guid(text)
    except BadValue:
        return text


def _guid_or_none(value: Any) -> str | None:
    try:
        return guid(value)
    except BadValue:
        return None


def _parsed(record: dict[str, Any]) -> dict[str, Any]:
    """The record with JSON-string values parsed (OfficeActivity/OTRF nesting) and text trimmed."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if type(value) is str:  # maybe_json, then strip, inline: ~40 values a record
            text = value.strip()  # OTRF OriginatingServer ends in "\r\n"
            if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    value = text
            else:
                value = text
        else:
            value = maybe_json(value)
            if isinstance(value, str):
                value = value.strip()
        out[str(key)] = value
    return out


def _dict(value: Any) -> dict[str, Any]:
    value = maybe_json(value)
    return value if isinstance(value, dict) else {}


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    value = maybe_json(value)
    if isinstance(value, dict):
        value = [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _scrub(text: str | None) -> str | None:
    """Raw bearer tokens never reach the lake: ``extra`` goes through the shared scrubber."""
    return None if text is None else scrub_text(text)


def _extra(record: dict[str, Any], mapped: Iterable[str]) -> str | None:
    return _scrub(extra_json(record, mapped))


def _client_ip(rec: dict[str, Any], fields: tuple[str, ...], mapped: set[str]) -> str | None:
    """First IP field present, normalized; the other IP fields count as mapped only when they agree."""
    chosen: str | None = None
    for name in fields:
        raw = rec.get(name)
        if raw in (None, ""):
            continue
        if chosen is None:
            try:
                chosen = normalize_ip(raw)
            except BadValue as exc:
                raise BadValue(f"{name}: {exc}") from exc
            mapped.add(name)
        else:
            try:
                if normalize_ip(raw) == chosen:
                    mapped.add(name)
            except BadValue:
                pass
    return chosen


def _event_time(rec: dict[str, Any]) -> datetime:
    raw = rec.get("CreationTime")
    if raw in (None, ""):
        raise BadValue(
            "audit record has no CreationTime (wrapper CreationDate is locale-dependent and never used as event time)"
        )
    try:
        when = parse_time(raw)
    except BadValue as exc:
        raise BadValue(f"CreationTime: {exc}") from exc
    assert when is not None
    return when


def _mail_access_type(value: Any) -> str | None:
    text = to_text(value)
    if text is None:
        return None
    for allowed in MAIL_ACCESS_TYPES:
        if text.lower() == allowed.lower():
            return allowed
    raise BadValue(f"OperationProperties MailAccessType {text!r:.40} is neither Bind nor Sync")


def _folders(rec: dict[str, Any]) -> tuple[list[str] | None, int | None]:
    """Folder paths (Folders[].Path, Messages[].Path; unique, in order) and the items they list."""
    paths: list[str] = []
    items = 0
    seen_any = False
    for container, item_key in (("Folders", "FolderItems"), ("Messages", "MessageItems")):
        for entry in _list_of_dicts(rec.get(container)):
            seen_any = True
            path = to_text(entry.get("Path"))
            if path and path not in paths:
                paths.append(path)
            listed = maybe_json(entry.get(item_key))
            if isinstance(listed, list):
                items += len(listed)
    if not seen_any:
        return None, None
    return (paths or None), items


def route(rec: dict[str, Any]) -> str:
    """``signin`` (STS logon: mail_events + signins), ``mail`` (mail_events) or ``skip``."""
    record_type, _ = record_type_pair(rec.get("RecordType"))
    workload = (to_text(rec.get("Workload")) or "").lower()
    operation = to_text(rec.get("Operation")) or ""
    if record_type == STS_LOGON_RECORD_TYPE or (operation in STS_LOGON_OPERATIONS and workload == "azureactivedirectory"):
        return "signin"
    if workload == "exchange" or (not workload and record_type in EXCHANGE_RECORD_TYPES):
        return "mail"
    return "skip"


# ---------------------------------------------------------------------------------------- the mapping
def ual_record_rows(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    """One UAL ``AuditRecord`` (already unwrapped, canonical UAL field names) -> rows.

    The single mapping every UAL-bearing format uses (Purview CSV, Search-UnifiedAuditLog CSV/JSON,
    Management Activity API blobs, Sentinel OfficeActivity after renaming). Returns ``[]`` for records
    outside the lake's scope; raises ``BadValue`` naming the field for records that cannot be mapped.
    """
    if not isinstance(record, dict):
        raise BadValue(f"audit record is a {type(record).__name__}, not an object")
    rec = _parsed(record)
    if not to_text(rec.get("Operation")):
        raise BadValue("audit record has no Operation")
    kind = route(rec)
    if kind == "skip":
        return []
    event_time = _event_time(rec)
    rows = [Emitted("mail_events", _mail_row(rec, ctx, event_time))]
    if kind == "signin":
        rows.append(Emitted("signins", _signin_row(rec, ctx, event_time)))
    return rows


def _base(ctx: Context, event_time: datetime) -> dict[str, Any]:
    return {
        "event_time": event_time,
        "event_date": event_time.strftime("%Y-%m-%d"),
        "source_format": ctx.source_format,
        "ingest_batch_id": ctx.batch_id,
    }


def _mail_row(rec: dict[str, Any], ctx: Context, event_time: datetime) -> dict[str, Any]:
    mapped: set[str] = {"CreationTime", "Operation"}
    event_id = _guid_or_text(rec.get("Id"))
    if event_id is None:
        raise BadValue("audit record has no Id")
    mapped.add("Id")

    record_type, record_type_name = record_type_pair(rec.get("RecordType"))
    user_type, user_type_name = user_type_pair(rec.get("UserType"))
    logon_type, _ = logon_type_pair(rec.get("LogonType"))
    mapped.update({"RecordType", "UserType"})
    if logon_type is not None or rec.get("LogonType") in (None, ""):
        mapped.add("LogonType")  # an unknown LogonType name stays in extra

    ctx_app = _dict(rec.get("AppAccessContext"))
    props = name_value_list(rec.get("OperationProperties"))
    device = name_value_list(rec.get("DeviceProperties"))
    folder_paths, item_count = _folders(rec)

    client_app_id = _guid_or_text(rec.get("ClientAppId"))
    if client_app_id is None:
        client_app_id = _guid_or_text(ctx_app.get("ClientAppId"))
    if client_app_id is None and rec.get("ApplicationId") not in (None, ""):
        client_app_id = _guid_or_text(rec.get("ApplicationId"))  # STS logon: the client application
        mapped.add("ApplicationId")
    unique_token_id = to_text(first(ctx_app, "UniqueTokenId")) or to_text(rec.get("UniqueTokenId"))
    issued = first(ctx_app, "IssuedAtTime", "TokenIssuedAtTime") or rec.get("IssuedAtTime")
    try:
        token_issued_at = parse_time(issued)
    except BadValue as exc:
        raise BadValue(f"IssuedAtTime: {exc}") from exc
    try:
        organization_id = guid(rec.get("OrganizationId"))
        token_tenant_id = guid(rec.get("TokenTenantId"))
    except BadValue as exc:
        raise BadValue(f"OrganizationId/TokenTenantId: {exc}") from exc
    try:
        is_throttled = to_bool(props.get("IsThrottled"))
        operation_count = to_int(rec.get("OperationCount"))
    except BadValue as exc:
        raise BadValue(f"IsThrottled/OperationCount: {exc}") from exc

    row = _base(ctx, event_time)
    row.update(
        {
            "event_id": event_id,
            "operation": to_text(rec.get("Operation")),
            "record_type": record_type,
            "record_type_name": record_type_name,
            "workload": to_text(rec.get("Workload")),
            "organization_id": organization_id,
            "user_id": lower(rec.get("UserId")),
            "user_key": to_text(rec.get("UserKey")),
            "user_type": user_type,
            "user_type_name": user_type_name,
            "result_status": to_text(rec.get("ResultStatus")),
            "mailbox_owner_upn": lower(rec.get("MailboxOwnerUPN")),
            "mailbox_guid": _guid_or_text(rec.get("MailboxGuid")),
            "logon_type": logon_type,
            "app_id": _guid_or_text(rec.get("AppId")),
            "client_app_id": client_app_id,
            "client_ip": _client_ip(rec, IP_FIELDS, mapped),
            "client_info_string": to_text(rec.get("ClientInfoString")),
            "mail_access_type": _mail_access_type(props.get("MailAccessType")),
            "is_throttled": is_throttled,
            "operation_count": operation_count,
            "folder_paths": folder_paths,
            "item_count": item_count,
            "unique_token_id": unique_token_id,
            "aad_session_id": to_text(ctx_app.get("AADSessionId")) or to_text(device.get("SessionId")),
            "token_issued_at": token_issued_at,
            "token_tenant_id": token_tenant_id,
            "token_object_id": _guid_or_text(rec.get("TokenObjectId")),
            "token_type": to_text(rec.get("TokenType")),
            "exchange_session_id": to_text(rec.get("SessionId")),  # Exchange session, NOT the Entra one
        }
    )
    mapped.update({
        "Workload", "OrganizationId", "UserId", "UserKey", "ResultStatus", "MailboxOwnerUPN", "MailboxGuid",
        "AppId", "ClientAppId", "ClientInfoString", "OperationCount", "UniqueTokenId", "IssuedAtTime",
        "TokenTenantId", "TokenObjectId", "TokenType", "SessionId",
    })
    row["extra"] = _extra(rec, mapped)
    return row


def _sign_in_type(rec: dict[str, Any], extended: dict[str, Any]) -> str:
    user_type, _ = user_type_pair(rec.get("UserType"))
    if user_type in (5, 6):  # Application, ServicePrincipal
        return "service_principal"
    request_type = (to_text(extended.get("RequestType")) or "").lower()
    if request_type in NON_INTERACTIVE_REQUEST_TYPES:
        return "non_interactive"
    return "interactive"


def _signin_row(rec: dict[str, Any], ctx: Context, event_time: datetime) -> dict[str, Any]:
    """A UAL STS logon as a ``signins`` row; its Id is the Entra request id (formats.md 0.2)."""
    mapped: set[str] = {"Id", "CreationTime"}
    try:
        request_id = guid(rec.get("Id"))
    except BadValue as exc:
        raise BadValue(f"UserLoggedIn Id is not the Entra request GUID: {exc}") from exc
    if request_id is None:
        raise BadValue("UserLoggedIn record has no Id")
    extended = name_value_list(rec.get("ExtendedProperties"))
    device = name_value_list(rec.get("DeviceProperties"))
    sign_in_type = _sign_in_type(rec, extended)
    try:
        tenant_id = guid(rec.get("OrganizationId"))
    except BadValue as exc:
        raise BadValue(f"OrganizationId: {exc}") from exc
    try:
        result_code = to_int(first(rec, "ErrorNumber", "ErrorCode"))
    except BadValue as exc:
        raise BadValue(f"ErrorNumber: {exc}") from exc
    user_id = _guid_or_none(rec.get("UserKey"))
    resource_id = _guid_or_none(rec.get("ObjectId"))
    home_tenant_id = _guid_or_none(rec.get("ActorContextId"))

    row = _base(ctx, event_time)
    row.update(
        {
            "event_id": request_id,
            "sign_in_type": sign_in_type,
            "tenant_id": tenant_id,
            "home_tenant_id": home_tenant_id,
            "user_principal_name": lower(rec.get("UserId")),
            "user_id": user_id,
            "app_id": _guid_or_text(rec.get("ApplicationId")),
            "resource_id": resource_id,
            "ip_address": _client_ip(rec, ("ClientIP", "ActorIpAddress", "ClientIPAddress", "Client_IPAddress"), mapped),
            "user_agent": to_text(extended.get("UserAgent")),
            "is_interactive": sign_in_type == "interactive",
            "result_code": result_code,
            "result_reason": to_text(rec.get("LogonError")),
            "unique_token_id": unique_token_id_from_request_id(request_id),
            "unique_token_id_derived": True,
            "session_id": to_text(device.get("SessionId")),
        }
    )
    mapped.update({"OrganizationId", "UserId", "ApplicationId", "ErrorNumber", "ErrorCode", "LogonError"})
    if user_id:
        mapped.add("UserKey")
    if resource_id:
        mapped.add("ObjectId")
    if home_tenant_id:
        mapped.add("ActorContextId")
    row["extra"] = _extra(rec, mapped)
    return row


# ---------------------------------------------------------------------------------------- wrappers
def unwrap(record: dict[str, Any]) -> dict[str, Any]:
    """The AuditRecord inside a wrapper row (CSV or JSON), or the record itself when it is raw.

    ``AuditData`` may be a JSON string (CSV, Search-UnifiedAuditLog) or an object (Extractor-Suite
    JSON). Wrapper columns that repeat AuditData are dropped; the others (AssociatedAdminUnits, ...)
    are kept so they reach ``extra``. ``CreationDate`` is never used.
    """
    if "AuditData" not in record:
        return record
    audit = record["AuditData"]
    if isinstance(audit, str):
        text = audit.strip()
        if not text:
            raise BadValue("AuditData is empty")
        try:
            audit = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadValue(f"AuditData is not valid JSON: {exc.msg.removesuffix(' at')} at char {exc.pos}") from exc
        except RecursionError:
            raise BadValue("AuditData is JSON nested too deeply") from None
    if not isinstance(audit, dict):
        raise BadValue(f"AuditData is a {type(audit).__name__}, not a JSON object")
    out = dict(audit)
    for field, wrapper_names in WRAPPER_FALLBACKS.items():
        if out.get(field) in (None, ""):
            value = first(record, *wrapper_names)
            if value is not None:
                out[field] = value
    for key, value in record.items():
        if key not in WRAPPER_REDUNDANT and key not in out and value not in (None, "", [], {}):
            out[key] = value
    return out


def normalize_ual(record: dict[str, Any], ctx: Context) -> list[Emitted]:
    return ual_record_rows(unwrap(record), ctx)


def _is_office_activity(rec: dict[str, Any]) -> bool:
    return rec.get("Type") == "OfficeActivity" or any(k in rec for k in ("OfficeWorkload", "OfficeId", "TimeGenerated"))


def is_raw_audit_record(rec: dict[str, Any] | None) -> bool:
    """A Management Activity API / AuditData-only record: CreationTime, Operation, RecordType at top level."""
    return (
        isinstance(rec, dict)
        and all(k in rec for k in ("CreationTime", "Operation", "RecordType"))
        and not _is_office_activity(rec)
    )


def _has_audit_data(rec: dict[str, Any] | None) -> bool:
    return isinstance(rec, dict) and isinstance(rec.get("AuditData"), (str, dict)) and not _is_office_activity(rec)


def sniff_purview_csv(sample: FileSample) -> bool:
    return sample.container == "csv" and "AuditData" in sample.header and "RecordId" in sample.header


def sniff_ual_csv(sample: FileSample) -> bool:
    header = set(sample.header)
    return (
        sample.container == "csv"
        and "AuditData" in header
        and "RecordId" not in header
        and bool(header & {"CreationDate", "Operations", "UserIds", "RecordType"})
    )


def sniff_ual_json(sample: FileSample) -> bool:
    if sample.container not in ("json_array", "json_wrapped", "ndjson"):
        return False
    return _has_audit_data(sample.first) or is_raw_audit_record(sample.first)


FORMATS: list[SourceFormat] = [
    SourceFormat(
        name="purview_csv",
        tables=("mail_events", "signins"),
        description="Purview portal audit export CSV (RecordId,CreationDate,RecordType,Operation,UserId,AuditData,...).",
        sniff=sniff_purview_csv,
        records=iter_csv,
        normalize=normalize_ual,
    ),
    SourceFormat(
        name="ual_csv",
        tables=("mail_events", "signins"),
        description="Search-UnifiedAuditLog / Extractor-Suite Get-UAL CSV (CreationDate,UserIds,Operations,AuditData,...).",
        sniff=sniff_ual_csv,
        records=iter_csv,
        normalize=normalize_ual,
    ),
    SourceFormat(
        name="ual_json",
        tables=("mail_events", "signins"),
        description=(
            "UAL JSON: Search-UnifiedAuditLog / Get-UAL JSON (AuditData string or object) and Office 365 "
            "Management Activity API content blobs (arrays of raw AuditRecords); array, wrapper or NDJSON."
        ),
        sniff=sniff_ual_json,
        records=iter_json_records,
        normalize=normalize_ual,
    ),
]
